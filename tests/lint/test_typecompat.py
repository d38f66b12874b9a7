"""The compatible-type-change allowlist and the table-rewrite predicate."""

from __future__ import annotations

import pytest

from spectral_core.compat._node import parse
from spectral_core.compat.typecompat import TypeRef, is_compatible, needs_rewrite, type_ref


def _t(sql_type: str) -> TypeRef | None:
    stmts, _ = parse(f"CREATE TABLE t (c {sql_type})")
    return type_ref(stmts[0][0].tableElts[0].typeName)


@pytest.mark.parametrize(
    ("spelling", "normal"),
    [
        ("integer", "int4"),
        ("int", "int4"),
        ("bigint", "int8"),
        ("character varying(5)", "varchar(5)"),
        ("double precision", "float8"),
        ("float(10)", "float4"),
        ("decimal(8,2)", "numeric(8,2)"),
        ("timestamp with time zone", "timestamptz"),
        ("text[]", "text[]"),
        ("core.mood", "core.mood"),
        ("bool", "bool"),
    ],
)
def test_type_spellings_normalize(spelling: str, normal: str) -> None:
    """Aliases of one type normalize to the same name, so replayed and new types compare."""
    assert str(_t(spelling)) == normal


def test_unknown_old_type_is_incompatible() -> None:
    """An unknown old type is never compatible (the lint rejects what it cannot prove)."""
    assert not is_compatible(None, _t("text"))


@pytest.mark.parametrize(
    ("old", "new", "rewrite"),
    [
        ("varchar(5)", "varchar(9)", False),
        ("varchar(5)", "text", False),
        ("int", "bigint", True),
        ("numeric(5,2)", "numeric(7,2)", False),
        ("numeric(5,2)", "numeric(8,3)", True),
    ],
)
def test_compatible_changes_and_rewrites(old: str, new: str, rewrite: bool) -> None:
    """Allowlisted changes are compatible; only binary-coercible ones avoid a rewrite."""
    assert is_compatible(_t(old), _t(new))
    assert needs_rewrite(_t(old), _t(new)) is rewrite
