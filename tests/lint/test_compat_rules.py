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
