"""Forward-only migration runner.

Files ``NNNN_name.sql`` are applied in order, one *migration set* after another: spectral's
own set (``migrations/`` of the repository, shipped inside the wheel as
``spectral_core/migrations``, set name ``spectral``) always first, then one set per app
directory, named by the directory's name, each numbered from 0001 on its own (ADR 0019).
The ledger records set, number, name and sha256 checksum of every applied file
(``core.migration_ledger``; the view ``core.schema_migrations`` shows spectral's own rows
under the name and columns the prior generation reads).  An edited, missing or
re-numbered applied file is an error and nothing is applied.

Concurrent runners serialize on a *transaction-scoped* advisory lock, so the runner works
through a transaction pooler.  Each file runs in its own transaction together with its
ledger row, with a short ``lock_timeout`` (:class:`~spectral_core.migrate_locks.LockPolicy`;
a file may set its own with ``-- spectral: lock-timeout 10s`` among its leading comment
lines): a file that times out is rolled back whole and retried after a backoff, a bounded
number of times (ADR 0019).  A file whose first line is ``-- spectral: no-transaction``
(for ``CREATE INDEX CONCURRENTLY``) must hold exactly one idempotent statement
(``IF NOT EXISTS``); it runs in autocommit, without a lock timeout (a timed-out
``CONCURRENTLY`` build would leave an invalid index behind, and its lock does not queue
writes), and its ledger row is written afterwards.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg
import psycopg.errors

from .db._wrap import wrap_errors
from .errors import ChecksumMismatch, MigrationError, MigrationLockTimeout, MissingMigration
from .migrate_locks import (
    Blocker,
    LockPolicy,
    LockRetry,
    LockWait,
    MigrationEvent,
    Observer,
    lock_timeout_header,
    pg_duration,
    watch_blockers,
)
from .sql import query

__all__ = [
    "CORE_SET",
    "NO_TRANSACTION",
    "AppliedMigration",
    "LedgerSet",
    "LockPolicy",
    "Migration",
    "MigrationEvent",
    "MigrationPlan",
    "MigrationSet",
    "bundled_migrations",
    "core_set",
    "head",
    "ledger_sets",
    "load_migrations",
    "load_set",
    "migration_sets",
    "plan",
    "plan_sets",
    "run_migrations",
    "run_sets",
]

_NAME = re.compile(r"^(?P<number>\d{4})_(?P<slug>[a-z0-9_]+)\.sql$")
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: the name of spectral's own migration set (the bundled files)
CORE_SET = "spectral"
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

    @property
    def lock_timeout_s(self) -> float | None:
        """The file's own ``-- spectral: lock-timeout`` header, if any."""
        return lock_timeout_header(self.name, self.sql)


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    number: int
    name: str
    checksum: str


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]
    migration_set: str = CORE_SET

    @property
    def at_head(self) -> bool:
        return not self.pending

    @property
    def deployed_through(self) -> int:
        """The newest applied number of this set (0: none)."""
        return max((m.number for m in self.applied), default=0)


@dataclass(frozen=True, slots=True)
class MigrationSet:
    """One numbering of migration files: spectral's own, or one app directory's."""

    name: str
    migrations: tuple[Migration, ...]
    #: the directory the files came from (what the compat lint reads)
    directory: Traversable | Path


@dataclass(frozen=True, slots=True)
class LedgerSet:
    """What the ledger holds for one set."""

    name: str
    applied: int
    head: int


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
        if mig.lock_timeout_s is not None and not mig.transactional:
            raise MigrationError(
                f"{mig.name}: a no-transaction migration runs without a lock timeout; "
                "remove its lock-timeout header",
                file=mig.name,
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


def core_set() -> MigrationSet:
    """spectral's own migration set (the bundled files)."""
    directory = files("spectral_core") / "migrations"
    return MigrationSet(CORE_SET, tuple(load_migrations(directory)), directory)


def load_set(directory: str | Path) -> MigrationSet:
    """An app's migration set: the files of ``directory``, named by the directory's name.

    Raises:
        MigrationError: not a directory, a name that cannot be a set name (or is spectral's
            own), or a badly named or numbered file.
    """
    path = Path(directory)
    if not path.is_dir():
        raise MigrationError(f"migration directory {str(path)!r} does not exist", file=str(path))
    name = path.resolve().name
    if not _SET_NAME.match(name):
        raise MigrationError(
            f"migration directory {str(path)!r}: its name {name!r} names the set and must be "
            "letters, digits, '_', '.' or '-'",
            file=str(path),
        )
    if name == CORE_SET:
        raise MigrationError(
            f"migration directory {str(path)!r}: the set name {CORE_SET!r} is spectral's own; "
            "rename the directory",
            file=str(path),
        )
    try:
        migrations = load_migrations(path)
    except MigrationError as exc:
        raise MigrationError(f"set {name}: {exc.message}", file=str(path)) from None
    return MigrationSet(name, tuple(migrations), path)


def migration_sets(directories: Iterable[str | Path] = ()) -> list[MigrationSet]:
    """spectral's own set first, then one set per app directory, in the order given.

    Raises:
        MigrationError: a directory is unusable, or two directories share a name.
    """
    sets = [core_set()]
    seen: dict[str, Path] = {}
    for directory in directories:
        app = load_set(directory)
        path = Path(directory).resolve()
        if app.name in seen:
            if seen[app.name] == path:
                continue  # the same directory twice (setting and --dir): one set
            raise MigrationError(
                f"two migration directories are both named {app.name!r} ({seen[app.name]} and "
                f"{path}); the directory name names the set, so rename one",
                file=str(directory),
            )
        seen[app.name] = path
        sets.append(app)
    return sets


def _check(
    applied: list[AppliedMigration], migrations: Sequence[Migration], set_name: str = CORE_SET
) -> tuple[Migration, ...]:
    by_number = {m.number: m for m in migrations}
    where = "" if set_name == CORE_SET else f" of set {set_name}"
    for row in applied:
        mig = by_number.get(row.number)
        if mig is None or mig.name != row.name:
            raise MissingMigration(
                f"applied migration {row.name}{where} (number {row.number}) is missing or was "
                "renumbered; migrations are forward-only: add a new file instead",
                file=row.name,
                migration_set=set_name,
            )
        if mig.checksum != row.checksum:
            raise ChecksumMismatch(
                f"applied migration {row.name}{where} was edited (checksum differs); "
                "migrations are forward-only: add a new file instead",
                file=row.name,
                migration_set=set_name,
            )
    done = {row.number for row in applied}
    return tuple(m for m in migrations if m.number not in done)


def _has_sets(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(query("migration_sets_ledger_exists")).fetchone()
    return bool(row and row[0])


def _read_ledger(conn: psycopg.Connection[Any], set_name: str = CORE_SET) -> list[AppliedMigration]:
    if set_name == CORE_SET:
        # by the old name: the table before 0007, the view of spectral's rows after it
        rows = conn.execute(query("select_applied_migrations")).fetchall()
    elif _has_sets(conn):
        rows = conn.execute(query("select_set_migrations"), {"migration_set": set_name}).fetchall()
    else:
        rows = []  # the ledger has no sets yet: nothing of an app set can be applied
    return [AppliedMigration(*row) for row in rows]


def ledger_sets(conn: psycopg.Connection[Any]) -> list[LedgerSet]:
    """Every set the ledger holds rows of, with its row count and newest number."""
    with wrap_errors():
        exists = conn.execute(query("migrations_ledger_exists")).fetchone()
        if not (exists and exists[0]):
            return []
        if not _has_sets(conn):
            row = conn.execute(query("select_migration_summary")).fetchone()
            return [LedgerSet(CORE_SET, *row)] if row and row[0] else []
        rows = conn.execute(query("select_ledger_sets")).fetchall()
    return [LedgerSet(*row) for row in rows]


def _bootstrap(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(query("lock_migrations"))
        conn.execute(query("create_schema_core"))
        conn.execute(query("create_migrations_ledger"))


def plan(
    conn: psycopg.Connection[Any],
    migrations: Sequence[Migration] | None = None,
    *,
    migration_set: str = CORE_SET,
) -> MigrationPlan:
    """What is applied and what is pending in one set (nothing is changed).

    Raises:
        ChecksumMismatch: an applied file was edited.
        MissingMigration: an applied file is missing or was renumbered.
    """
    migrations = bundled_migrations() if migrations is None else migrations
    with wrap_errors():
        exists = conn.execute(query("migrations_ledger_exists")).fetchone()
        applied = _read_ledger(conn, migration_set) if exists and exists[0] else []
    return MigrationPlan(tuple(applied), _check(applied, migrations, migration_set), migration_set)


def plan_sets(conn: psycopg.Connection[Any], sets: Sequence[MigrationSet]) -> list[MigrationPlan]:
    """:func:`plan` of every set, in order.

    Raises:
        ChecksumMismatch, MissingMigration: as :func:`plan`, for the first set that disagrees.
    """
    return [plan(conn, s.migrations, migration_set=s.name) for s in sets]


def run_migrations(
    conn: psycopg.Connection[Any],
    migrations: Sequence[Migration] | None = None,
    *,
    migration_set: str = CORE_SET,
    lock: LockPolicy | None = None,
    on_event: Callable[[MigrationEvent], None] | None = None,
    observer: Callable[[], psycopg.Connection[Any]] | None = None,
) -> list[Migration]:
    """Apply every pending migration of one set in order; return the ones this call applied.

    ``conn`` must be in autocommit mode.  Safe to call concurrently from several
    processes: the runners serialize and each file is applied once.  An app set needs
    spectral's own migrations applied first (the ledger's set column comes with them);
    :func:`run_sets` takes care of the order.

    Raises:
        ChecksumMismatch: an applied file was edited (nothing is applied).
        MissingMigration: an applied file is missing or was renumbered (nothing is applied).
        MigrationError: an app set before spectral's own migrations.
        MigrationLockTimeout: a file kept hitting its lock timeout (nothing of it applied).
        DatabaseError: a migration failed (its transaction is rolled back).
    """
    migrations = bundled_migrations() if migrations is None else migrations
    sets = [MigrationSet(migration_set, tuple(migrations), Path("."))]
    done = run_sets(conn, sets, lock=lock, on_event=on_event, observer=observer)
    return [m for _, applied in done for m in applied]


def run_sets(
    conn: psycopg.Connection[Any],
    sets: Sequence[MigrationSet],
    *,
    lock: LockPolicy | None = None,
    on_event: Callable[[MigrationEvent], None] | None = None,
    observer: Callable[[], psycopg.Connection[Any]] | None = None,
) -> list[tuple[MigrationSet, list[Migration]]]:
    """Apply the pending migrations of every set, set after set in the order given
    (:func:`migration_sets` puts spectral's own first); return what this call applied.

    Every set's ledger is checked against its files before anything is applied.  Each
    transactional file runs under ``lock`` (default :class:`LockPolicy`: 2 s lock timeout,
    10 retries); ``on_event`` hears of lock waits (with the blocking sessions, read through
    a connection from ``observer`` while a statement waits) and retries.

    Raises:
        as :func:`run_migrations`.
    """
    if not conn.autocommit:
        raise MigrationError("run_migrations needs an autocommit connection")
    done: list[tuple[MigrationSet, list[Migration]]] = []
    with wrap_errors():
        _bootstrap(conn)
        # Validate the whole ledger before touching anything.
        with conn.transaction():
            conn.execute(query("lock_migrations"))
            for s in sets:
                _check(_read_ledger(conn, s.name), s.migrations, s.name)
        watcher = Observer(observer) if observer is not None else None
        try:
            _run_all(conn, sets, done, lock or LockPolicy(), on_event, watcher)
        finally:
            if watcher is not None:
                watcher.close()
    return done


def _run_all(
    conn: psycopg.Connection[Any],
    sets: Sequence[MigrationSet],
    done: list[tuple[MigrationSet, list[Migration]]],
    lock: LockPolicy,
    on_event: Callable[[MigrationEvent], None] | None,
    observer: Observer | None,
) -> None:
    for s in sets:
        applied_now: list[Migration] = []
        with conn.transaction():
            conn.execute(query("lock_migrations"))
            pending = _check(_read_ledger(conn, s.name), s.migrations, s.name)
            if pending and s.name != CORE_SET and not _has_sets(conn):
                raise MigrationError(
                    f"set {s.name}: the migration ledger has no sets yet; apply "
                    "spectral's own migrations first (`spectral migrate`)",
                    migration_set=s.name,
                )
        for mig in pending:
            if _apply_one(conn, s, mig, lock, on_event, observer):
                applied_now.append(mig)
        done.append((s, applied_now))


def _apply_one(
    conn: psycopg.Connection[Any],
    s: MigrationSet,
    mig: Migration,
    lock: LockPolicy,
    on_event: Callable[[MigrationEvent], None] | None,
    observer: Observer | None,
) -> bool:
    if mig.transactional:
        return _apply_transactional(conn, s, mig, lock, on_event, observer)
    started = time.perf_counter()
    conn.execute(cast(LiteralString, mig.sql))
    with conn.transaction():
        conn.execute(query("lock_migrations"))
        if mig not in _check(_read_ledger(conn, s.name), s.migrations, s.name):
            return False
        _record(conn, s.name, mig, started)
    return True


def _apply_transactional(
    conn: psycopg.Connection[Any],
    s: MigrationSet,
    mig: Migration,
    lock: LockPolicy,
    on_event: Callable[[MigrationEvent], None] | None,
    observer: Observer | None,
) -> bool:
    timeout_s = mig.lock_timeout_s or lock.timeout_s
    attempts = lock.retries + 1
    last_blockers: tuple[Blocker, ...] = ()
    for attempt in range(1, attempts + 1):
        started = time.perf_counter()

        def report(blockers: tuple[Blocker, ...], attempt: int = attempt) -> None:
            nonlocal last_blockers
            last_blockers = blockers
            if on_event is not None:
                on_event(LockWait(s.name, mig.name, attempt, attempts, blockers))

        try:
            with conn.transaction():
                conn.execute(query("lock_migrations"))
                # Another runner may have applied it while we waited for the lock.
                if mig not in _check(_read_ledger(conn, s.name), s.migrations, s.name):
                    return False
                row = conn.execute(query("migration_backend_pid")).fetchone()
                # after the advisory lock: runners wait for each other without a timeout
                conn.execute(
                    query("set_migration_lock_timeout"),
                    {"lock_timeout": pg_duration(timeout_s)},
                )
                with watch_blockers(observer, int(row[0]) if row else 0, report):
                    conn.execute(cast(LiteralString, mig.sql))
                _record(conn, s.name, mig, started)
            return True
        except psycopg.errors.LockNotAvailable:
            if attempt == attempts:
                break
            delay = lock.backoff(attempt)
            if on_event is not None:
                on_event(LockRetry(s.name, mig.name, attempt, attempts, timeout_s, delay))
            time.sleep(delay)
    held = "; ".join(b.describe() for b in last_blockers) or "another session"
    raise MigrationLockTimeout(
        f"gave up on {s.name}/{mig.name} after {attempts} attempts (lock_timeout "
        f"{timeout_s:g}s each, blocked by {held}); nothing of {mig.name} was applied "
        "(files before it stay applied); run `spectral migrate` again once the lock holder "
        "is gone",
        migration_set=s.name,
        file=mig.name,
    )


def _record(conn: psycopg.Connection[Any], set_name: str, mig: Migration, started: float) -> None:
    params = {
        "migration_set": set_name,
        "number": mig.number,
        "name": mig.name,
        "checksum": mig.checksum,
        "duration_ms": int((time.perf_counter() - started) * 1000),
    }
    if set_name == CORE_SET:
        # by the old name: the table before 0007, the view of spectral's rows after it
        conn.execute(query("insert_applied_migration"), params)
    else:
        conn.execute(query("insert_set_migration"), params)
