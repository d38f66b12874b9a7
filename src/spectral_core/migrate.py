"""Forward-only migration runner.

Files ``NNNN_name.sql`` (``migrations/`` of the repository, shipped inside the wheel as
``spectral_core/migrations``) are applied in order.  The ledger
``core.schema_migrations`` records number, name and sha256 checksum of every applied file.
An edited, missing or re-numbered applied file is an error and nothing is applied.

Concurrent runners serialize on a *transaction-scoped* advisory lock, so the runner works
through a transaction pooler.  Each file runs in its own transaction together with its
ledger row, unless its first line is ``-- spectral: no-transaction`` (for
``CREATE INDEX CONCURRENTLY``): such a file must hold exactly one idempotent statement
(``IF NOT EXISTS``); it runs in autocommit and its ledger row is written afterwards.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg

from .db._wrap import wrap_errors
from .errors import ChecksumMismatch, MigrationError, MissingMigration
from .sql import query

__all__ = [
    "AppliedMigration",
    "Migration",
    "MigrationPlan",
    "bundled_migrations",
    "head",
    "load_migrations",
    "plan",
    "run_migrations",
]

_NAME = re.compile(r"^(?P<number>\d{4})_(?P<slug>[a-z0-9_]+)\.sql$")
NO_TRANSACTION = "-- spectral: no-transaction"


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION)


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    number: int
    name: str
    checksum: str


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]

    @property
    def at_head(self) -> bool:
        return not self.pending


def load_migrations(source: Traversable | Path | Iterable[Traversable | Path]) -> list[Migration]:
    """Read and validate migration files (a directory, or an iterable of files).

    Raises:
        MigrationError: a badly named file, a duplicate or a gap in the numbering.
    """
    entries = list(source.iterdir()) if isinstance(source, Traversable | Path) else list(source)
    found: list[Migration] = []
    for entry in entries:
        if not entry.name.endswith(".sql"):
            continue
        m = _NAME.match(entry.name)
        if not m:
            raise MigrationError(
                f"badly named migration file {entry.name!r} (expected NNNN_lowercase_name.sql)",
                file=entry.name,
            )
        found.append(Migration(int(m["number"]), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.number)
    for expected, mig in enumerate(found, start=1):
        if mig.number != expected:
            raise MigrationError(
                f"migration numbering must be 0001, 0002, ... without gaps or "
                f"duplicates: found {mig.name!r} at position {expected}",
                file=mig.name,
            )
        if not mig.transactional and _statement_count(mig.sql) != 1:
            raise MigrationError(
                f"{mig.name}: a no-transaction migration holds exactly one statement", file=mig.name
            )
    return found


def _statement_count(sql: str) -> int:
    body = "\n".join(ln for ln in sql.splitlines() if not ln.strip().startswith("--"))
    return len([s for s in body.split(";") if s.strip()])


def bundled_migrations() -> list[Migration]:
    """The migrations shipped with this version of spectral."""
    return load_migrations(files("spectral_core") / "migrations")


def head() -> int:
    """The number of the newest bundled migration."""
    return bundled_migrations()[-1].number


def _check(applied: list[AppliedMigration], migrations: list[Migration]) -> tuple[Migration, ...]:
    by_number = {m.number: m for m in migrations}
    for row in applied:
        mig = by_number.get(row.number)
        if mig is None or mig.name != row.name:
            raise MissingMigration(
                f"applied migration {row.name} (number {row.number}) is missing or was "
                "renumbered; migrations are forward-only: add a new file instead",
                file=row.name,
            )
        if mig.checksum != row.checksum:
            raise ChecksumMismatch(
                f"applied migration {row.name} was edited (checksum differs); migrations are "
                "forward-only: add a new file instead",
                file=row.name,
            )
    done = {row.number for row in applied}
    return tuple(m for m in migrations if m.number not in done)


def _read_ledger(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    rows = conn.execute(query("select_applied_migrations")).fetchall()
    return [AppliedMigration(*row) for row in rows]


def _bootstrap(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(query("lock_migrations"))
        conn.execute(query("create_schema_core"))
        conn.execute(query("create_migrations_ledger"))


def plan(conn: psycopg.Connection[Any], migrations: list[Migration] | None = None) -> MigrationPlan:
    """What is applied and what is pending (no changes are made, the ledger excepted).

    Raises:
        ChecksumMismatch: an applied file was edited.
        MissingMigration: an applied file is missing or was renumbered.
    """
    migrations = bundled_migrations() if migrations is None else migrations
    with wrap_errors():
        exists = conn.execute(query("migrations_ledger_exists")).fetchone()
        applied = _read_ledger(conn) if exists and exists[0] else []
    return MigrationPlan(tuple(applied), _check(applied, migrations))


def run_migrations(
    conn: psycopg.Connection[Any], migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply every pending migration in order; return the ones this call applied.

    ``conn`` must be in autocommit mode.  Safe to call concurrently from several
    processes: the runners serialize and each file is applied once.

    Raises:
        ChecksumMismatch: an applied file was edited (nothing is applied).
        MissingMigration: an applied file is missing or was renumbered (nothing is applied).
        DatabaseError: a migration failed (its transaction is rolled back).
    """
    migrations = bundled_migrations() if migrations is None else migrations
    if not conn.autocommit:
        raise MigrationError("run_migrations needs an autocommit connection")
    applied_now: list[Migration] = []
    with wrap_errors():
        _bootstrap(conn)
        # Validate the whole ledger before touching anything.
        with conn.transaction():
            conn.execute(query("lock_migrations"))
            pending = _check(_read_ledger(conn), migrations)
        for mig in pending:
            if _apply_one(conn, mig, migrations):
                applied_now.append(mig)
    return applied_now


def _apply_one(conn: psycopg.Connection[Any], mig: Migration, all_: list[Migration]) -> bool:
    started = time.perf_counter()
    if mig.transactional:
        with conn.transaction():
            conn.execute(query("lock_migrations"))
            # Another runner may have applied it while we waited for the lock.
            if mig not in _check(_read_ledger(conn), all_):
                return False
            conn.execute(cast(LiteralString, mig.sql))
            _record(conn, mig, started)
        return True
    conn.execute(cast(LiteralString, mig.sql))
    with conn.transaction():
        conn.execute(query("lock_migrations"))
        if mig not in _check(_read_ledger(conn), all_):
            return False
        _record(conn, mig, started)
    return True


def _record(conn: psycopg.Connection[Any], mig: Migration, started: float) -> None:
    conn.execute(
        query("insert_applied_migration"),
        {
            "number": mig.number,
            "name": mig.name,
            "checksum": mig.checksum,
            "duration_ms": int((time.perf_counter() - started) * 1000),
        },
    )
