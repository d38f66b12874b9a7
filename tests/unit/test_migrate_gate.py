"""`spectral migrate` lints pending migrations before applying them (the deploy gate).

The gate runs the compat rules and the locking rules (issue 23 item 8): a file that
touches a deployed table must not hold a lock for as long as the table is large.  The
runner sets its own lock_timeout on every transactional file (ADR 0019), so the rule that
asks for one is satisfied there and never reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spectral_cli.migrate import lint_gate
from spectral_core.migrate import AppliedMigration, MigrationPlan, load_migrations


def _plan(tmp_path: Path, second: str) -> MigrationPlan:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE public.a (x int, y int);")
    (tmp_path / "0002_b.sql").write_text(second)
    migs = load_migrations(tmp_path)
    return MigrationPlan((AppliedMigration(1, "0001_a.sql", migs[0].checksum),), (migs[1],))


def test_gate_refuses_a_pending_migration_that_breaks_the_running_generation(
    tmp_path: Path,
) -> None:
    """A pending DROP COLUMN on a deployed table is refused (exit 1)."""
    assert lint_gate(_plan(tmp_path, "ALTER TABLE public.a DROP COLUMN y;"), tmp_path) == 1


def test_gate_accepts_an_expand_migration_without_a_lock_timeout_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pending nullable ADD COLUMN passes (exit 0), and the runner's own lock_timeout
    satisfies the rule asking for one: no lock-timeout finding is printed."""
    assert lint_gate(_plan(tmp_path, "ALTER TABLE public.a ADD COLUMN z text;"), tmp_path) == 0
    assert "lock-timeout" not in capsys.readouterr().out


def test_gate_refuses_a_plain_create_index_on_a_deployed_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The locking rules run: CREATE INDEX without CONCURRENTLY on a deployed table blocks
    its writes for the whole build and is refused (it used to pass the gate and be
    applied)."""
    assert lint_gate(_plan(tmp_path, "CREATE INDEX a_x ON public.a (x);"), tmp_path) == 1
    assert "lock-create-index" in capsys.readouterr().out


def test_gate_accepts_create_index_concurrently_in_a_no_transaction_file(tmp_path: Path) -> None:
    """The lock-safe form passes: CONCURRENTLY in a file with the no-transaction header."""
    sql = (
        "-- spectral: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_x ON public.a (x);"
    )
    assert lint_gate(_plan(tmp_path, sql), tmp_path) == 0


def test_gate_refuses_create_index_concurrently_inside_the_runners_transaction(
    tmp_path: Path,
) -> None:
    """CONCURRENTLY in a wrapped file always fails when applied: refused before that."""
    sql = "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_x ON public.a (x);"
    assert lint_gate(_plan(tmp_path, sql), tmp_path) == 1


def test_gate_leaves_tables_of_pending_files_alone(tmp_path: Path) -> None:
    """The locking rules are about existing tables: a plain index on a table created by a
    pending file of the same run passes."""
    sql = "CREATE TABLE public.n (x int); CREATE INDEX n_x ON public.n (x);"
    assert lint_gate(_plan(tmp_path, sql), tmp_path) == 0


def test_gate_is_silent_at_head(tmp_path: Path) -> None:
    """Nothing pending: nothing to lint."""
    assert lint_gate(MigrationPlan((), ()), tmp_path) == 0
