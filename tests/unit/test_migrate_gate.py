"""`spectral migrate` lints pending migrations before applying them (the deploy gate)."""

from __future__ import annotations

from pathlib import Path

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


def test_gate_accepts_an_expand_migration(tmp_path: Path) -> None:
    """A pending nullable ADD COLUMN passes (exit 0)."""
    assert lint_gate(_plan(tmp_path, "ALTER TABLE public.a ADD COLUMN z text;"), tmp_path) == 0


def test_gate_is_silent_at_head(tmp_path: Path) -> None:
    """Nothing pending: nothing to lint."""
    assert lint_gate(MigrationPlan((), ()), tmp_path) == 0
