"""Table-driven tests of the compat lint rules over the SQL cases in :mod:`tests.lint.cases`."""

from __future__ import annotations

import pytest

from spectral_core.compat import lint_sql
from tests.lint.cases import BASE, CASES, Case


def _got(case: Case) -> list[str]:
    findings = lint_sql(
        case.sql, "case.sql", locking=case.locking, deployed_sql=BASE if case.base else None
    )
    return sorted(f"{f.severity.value}:{f.rule}" for f in findings)


def test_case_table_is_large_and_unique() -> None:
    """The case table keeps at least 100 distinct SQL cases with unique ids."""
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case) -> None:
    """Each SQL case yields exactly its expected findings (severity and rule), no more."""
    assert _got(case) == list(case.expect)


def test_every_compat_and_locking_rule_is_exercised() -> None:
    """Every SQL rule in the registry is expected by at least one case."""
    from spectral_core.compat import RULES

    sql_rules = {r for r in RULES if not r.startswith("manifest-")} - {
        "edited-migration",
        "deleted-migration",
        "out-of-order",
        "replay-failed",
    }
    covered = {e.split(":", 1)[1] for c in CASES for e in c.expect}
    assert sql_rules - covered == set()


def test_runner_header_is_the_migration_runners() -> None:
    """The lint's no-transaction header is the one the migration runner reads."""
    from spectral_core.compat.checker import NO_TRANSACTION
    from spectral_core.migrate import NO_TRANSACTION as RUNNER

    assert NO_TRANSACTION == RUNNER


def test_using_index_message_names_the_index() -> None:
    """ADD ... USING INDEX of an index the lint does not know names the index (it printed an
    empty key list `()` before)."""
    (f,) = lint_sql("ALTER TABLE core.outbox ADD CONSTRAINT u UNIQUE USING INDEX i;")
    assert f.rule == "add-unique" and "USING INDEX i" in f.message and "()" not in f.message


def test_view_shim_warning_names_what_is_not_covered() -> None:
    """A rename behind a view is a warning that names what the view does not cover."""
    (f,) = lint_sql(
        "ALTER TABLE core.workers RENAME TO agents;\n"
        "CREATE VIEW core.workers AS SELECT DISTINCT id, state FROM core.agents;",
        deployed_sql=BASE,
    )
    assert f.rule == "rename-behind-view" and f.severity.value == "warning"
    assert "writes fail" in f.message and "TRUNCATE" in f.message
