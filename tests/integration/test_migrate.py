"""The forward-only migration runner on a real PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core.errors import ChecksumMismatch, MigrationError, MissingMigration
from spectral_core.migrate import (
    Migration,
    bundled_migrations,
    load_migrations,
    plan,
    run_migrations,
)


def write(tmp: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        (tmp / name).write_text(body)
    return tmp


def tables(conn: psycopg.Connection[Any]) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }


def test_bundled_migrations_apply_on_empty_db_and_are_idempotent(empty_db_url: str) -> None:
    """All shipped migrations apply in order on an empty database; a second run is a no-op."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        applied = run_migrations(conn)
        assert [m.number for m in applied] == list(range(1, len(bundled_migrations()) + 1))
        assert run_migrations(conn) == []
        assert plan(conn).at_head
        ledger = conn.execute(
            "SELECT name, checksum FROM core.schema_migrations ORDER BY number"
        ).fetchall()
        assert ledger == [(m.name, m.checksum) for m in bundled_migrations()]


def test_bundled_migration_files_are_properly_named() -> None:
    """Every shipped file is NNNN_lowercase.sql, numbered without gaps (load validates)."""
    migs = bundled_migrations()
    assert [m.number for m in migs] == list(range(1, len(migs) + 1))


def test_edited_applied_file_is_an_error_and_nothing_is_applied(
    empty_db_url: str, tmp_path: Path
) -> None:
    """Editing an applied migration raises ChecksumMismatch before any pending file runs."""
    d = write(tmp_path, {"0001_a.sql": "CREATE TABLE public.a (x int);"})
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        run_migrations(conn, load_migrations(d))
        write(
            d,
            {
                "0001_a.sql": "CREATE TABLE public.a (x bigint);",
                "0002_b.sql": "CREATE TABLE public.b (x int);",
            },
        )
        with pytest.raises(ChecksumMismatch, match="0001_a.sql"):
            run_migrations(conn, load_migrations(d))
        assert tables(conn) == {"a"}


A_SQL = "CREATE TABLE public.a (x int);"
B_SQL = "CREATE TABLE public.b (x int);"


@pytest.mark.parametrize(
    "later",
    [
        [Migration(2, "0002_b.sql", B_SQL)],  # 0001 missing
        [Migration(1, "0001_renamed.sql", A_SQL), Migration(2, "0002_b.sql", B_SQL)],  # renamed
        [Migration(1, "0001_b.sql", B_SQL), Migration(2, "0002_a.sql", A_SQL)],  # renumbered
    ],
    ids=["missing", "renamed", "renumbered"],
)
def test_missing_renamed_or_renumbered_applied_file_is_an_error(
    empty_db_url: str, later: list[Migration]
) -> None:
    """A missing, renamed or renumbered applied file is refused and nothing is applied."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        run_migrations(conn, [Migration(1, "0001_a.sql", A_SQL)])
        with pytest.raises(MigrationError):
            run_migrations(conn, later)
        assert tables(conn) == {"a"}


def test_missing_applied_file_raises_missing_migration(empty_db_url: str) -> None:
    """An applied file that no longer exists is MissingMigration."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        run_migrations(conn, [Migration(1, "0001_a.sql", "CREATE TABLE public.a (x int);")])
        with pytest.raises(MissingMigration):
            run_migrations(conn, [])


def test_bad_file_names_and_gaps_are_rejected(tmp_path: Path) -> None:
    """Badly named files and gaps in numbering are clear errors at load time."""
    with pytest.raises(MigrationError, match="badly named"):
        load_migrations(write(tmp_path, {"1_a.sql": "select 1"}))
    (tmp_path / "1_a.sql").unlink()
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(write(tmp_path, {"0001_a.sql": "select 1", "0003_c.sql": "select 1"}))


def test_failed_migration_rolls_back_with_its_ledger_row(empty_db_url: str) -> None:
    """A failing file leaves neither its partial effects nor a ledger row."""
    migs = [
        Migration(1, "0001_a.sql", "CREATE TABLE public.a (x int);"),
        Migration(2, "0002_b.sql", "CREATE TABLE public.b (x int); SELECT 1/0;"),
    ]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        with pytest.raises(Exception, match="division by zero"):
            run_migrations(conn, migs)
        assert tables(conn) == {"a"}
        assert [m.name for m in plan(conn, migs).pending] == ["0002_b.sql"]


def test_no_transaction_migration_runs_outside_a_transaction(empty_db_url: str) -> None:
    """A file marked no-transaction may CREATE INDEX CONCURRENTLY; it is recorded once."""
    migs = [
        Migration(1, "0001_a.sql", "CREATE TABLE public.a (x int);"),
        Migration(
            2,
            "0002_idx.sql",
            "-- spectral: no-transaction\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_x ON public.a (x);",
        ),
    ]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert [m.number for m in run_migrations(conn, migs)] == [1, 2]
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'a_x'"
        ).fetchone() == (1,)
        assert run_migrations(conn, migs) == []


def test_concurrent_runners_serialize_and_apply_each_file_once(empty_db_url: str) -> None:
    """Several runners at once: every file applied exactly once, no runner fails."""
    migs = [
        Migration(
            i, f"{i:04d}_t{i}.sql", f"CREATE TABLE public.t{i} (x int); SELECT pg_sleep(0.05);"
        )
        for i in range(1, 6)
    ]
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            with psycopg.connect(empty_db_url, autocommit=True) as conn:
                results.append([m.number for m in run_migrations(conn, migs)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(n for r in results for n in r) == [1, 2, 3, 4, 5]
