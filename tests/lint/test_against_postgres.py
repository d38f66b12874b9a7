"""The lint's claims about PostgreSQL, checked on the real server.

Where the lint says a migration fails on a populated table (order inside a file, NOT NULL in
effect, ``CONCURRENTLY`` in the runner's transaction), PostgreSQL must refuse it; where it
accepts a case of issue 19's classes, PostgreSQL must apply it.  Each case runs against the
case BASE schema with rows in its tables, inside a transaction that is rolled back (the
runner's wrapped file), or in autocommit for a file with the no-transaction header.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.lint.cases import BASE, CASES, NT, Case

_BY_ID = {c.id: c for c in CASES}

#: The lint reports these as failing on a populated table (or in a transaction block).
MUST_FAIL = [
    "nn-later-set-default",
    "nn-later-drop-not-null",
    "order-nn-then-set-default",
    "order-nullable-default-then-not-null",
    "order-not-null-before-default",
    "order-partial-backfill",
    "order-null-backfill-fills-nothing",
    "order-backfill-from-nullable-column",
    "nn-check-is-not-null-validated",
    "nn-column-check-inline",
    "nn-domain-not-null",
    "nn-domain-check-value",
    "nn-type-change-to-not-null-domain",
    "identity-add-on-nullable-fails",
    "identity-add-on-column-with-default-fails",
    "pk-using-index-nullable-column",
    "unique-using-non-unique-index",
    "unique-using-partial-index",
    "unique-new-column-constant-default",
    "filled-insert-select-unique-index",
    "filled-values-rows",
    "filled-then-add-not-null",
    "txn-create-index-concurrently-wrapped",
    "txn-reindex-concurrently-wrapped",
    "txn-vacuum-wrapped",
    "txn-concurrently-in-do-block",
]

#: Accepted by the lint (compat-wise); PostgreSQL applies them on the populated schema.
MUST_APPLY = [
    "order-default-backfill-then-not-null-ok",
    "order-backfill-coalesce-ok",
    "order-backfill-from-not-null-column-ok",
    "order-add-with-default-then-not-null-ok",
    "order-default-in-same-add-ok",
    "order-empty-new-table-ok",
    "nn-domain-with-default-ok",
    "nn-check-with-default-ok",
    "using-cast-ok",
    "using-cast-function-form-ok",
    "using-column-ok",
    "identity-set-by-default-ok",
    "sequence-cache-ok",
    "sequence-new-restart-ok",
    "identity-add-by-default-ok",
    "identity-new-column-always-ok",
    "ine-alone-ok",
    "ine-then-nullable-add-ok",
    "unique-using-deployed-index-ok",
    "pk-using-index-not-null-column-ok",
    "unique-new-nullable-column-index-ok",
    "unique-new-nullable-column-constraint-ok",
    "unique-composite-with-new-column-ok",
    "unique-new-column-random-uuid-ok",
    "unique-new-column-then-uuid-default-ok",
    "unique-column-constraint",
    "filled-one-row-ok",
    "filled-with-no-data-ok",
    "filled-truncated-ok",
    "shim-rename-and-view",
    "shim-listed-columns",
    "shim-not-updatable-warns",
    "shim-set-schema",
    "txn-header-ok",
    "txn-header-after-blank-line-ok",
    "txn-analyze-ok",
]

_ROWS = """
INSERT INTO core.outbox (topic, payload) VALUES ('a', NULL), ('b', '{}'), ('c', NULL);
INSERT INTO core.workers (id, state) VALUES (gen_random_uuid(), 'up'), (gen_random_uuid(), 'up');
INSERT INTO core.jobs (n, m) VALUES (1, 1), (NULL, 2);
INSERT INTO core.tags (name, label) VALUES ('x', NULL), ('y', 'l');
"""


@pytest.fixture(scope="module")
def populated(pg_server: object) -> Iterator[str]:
    """A database with the case BASE schema and rows in every table."""
    from tests.fix_db import _clone, _drop

    name = _clone(pg_server, None)  # type: ignore[arg-type]
    url = pg_server.url_for(name)  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Core"; CREATE SCHEMA archive;')
        conn.execute(BASE)
        conn.execute(_ROWS)
    try:
        yield url
    finally:
        _drop(pg_server, name)  # type: ignore[arg-type]


def _applies(url: str, case: Case) -> tuple[bool, str]:
    """Run the case as the migration runner would; roll a wrapped file back."""
    wrapped = not case.sql.lstrip().startswith(NT.strip())
    with psycopg.connect(url, autocommit=not wrapped) as conn:
        try:
            conn.execute(case.sql)
        except psycopg.Error as exc:
            return False, str(exc).splitlines()[0]
        finally:
            if wrapped:
                conn.rollback()
        if not wrapped:  # undo what the autocommit file made
            conn.execute("DROP INDEX IF EXISTS core.i")
    return True, ""


def test_case_lists_name_real_cases() -> None:
    """Every id checked here is a case of the suite, and none is in both lists."""
    assert set(MUST_FAIL) <= set(_BY_ID) and set(MUST_APPLY) <= set(_BY_ID)
    assert not set(MUST_FAIL) & set(MUST_APPLY)
    for case_id in MUST_FAIL:
        assert any(e.startswith("error:") for e in _BY_ID[case_id].expect), case_id
    for case_id in MUST_APPLY:
        assert not any(e.startswith("error:") for e in _BY_ID[case_id].expect), case_id


@pytest.mark.parametrize("case_id", MUST_FAIL)
def test_postgres_refuses_what_the_lint_says_fails(populated: str, case_id: str) -> None:
    """A migration the lint rejects as failing on populated data does fail on PostgreSQL."""
    ok, _ = _applies(populated, _BY_ID[case_id])
    assert not ok, f"{case_id} applied on the populated schema"


@pytest.mark.parametrize("case_id", MUST_APPLY)
def test_postgres_applies_what_the_lint_accepts(populated: str, case_id: str) -> None:
    """A migration of issue 19's classes that the lint accepts applies on PostgreSQL."""
    ok, why = _applies(populated, _BY_ID[case_id])
    assert ok, f"{case_id}: {why}"
