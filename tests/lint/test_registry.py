"""The rule registry: explicit registration, real pglast enums, documented rules, and the
reference table in docs/reference/lint.md generated from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pglast.enums import AlterTableType

from spectral_core.compat import lint_sql
from spectral_core.compat.registry import ALTERS, RULES, STATEMENTS, all_rules, on, on_alter
from spectral_core.compat.ruledoc import replace_section
from tests.lint.cases import BASE

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "src" / "spectral_core" / "compat" / "rules"
SQL_META = {"syntax-error", "marker-invalid", "marker-unused"}


def _sql_rules() -> list[str]:
    return [r.id for r in all_rules().values() if r.family != "meta" or r.id in SQL_META]


def test_reference_table_is_generated_from_the_registry() -> None:
    """docs/reference/lint.md holds exactly the generated rule reference (no drift)."""
    doc = (REPO / "docs" / "reference" / "lint.md").read_text(encoding="utf-8")
    assert replace_section(doc) == doc, "run: python -m lint rules --write"


def test_every_rule_has_summary_and_examples() -> None:
    """Each rule declares an id, a one-line summary, a family, and Bad / Good examples."""
    for r in all_rules().values():
        assert r.summary and "\n" not in r.summary, r.id
        assert r.bad and r.good and r.family, r.id


@pytest.mark.parametrize("rule_id", _sql_rules())
def test_bad_example_fires_and_good_example_does_not(rule_id: str) -> None:
    """A rule's Bad example (linted against the case BASE, --locking) yields that rule, its
    Good example does not: the documentation cannot describe a rule the code does not apply."""
    r = RULES[rule_id]

    def fired(sql: str) -> bool:
        found = lint_sql(sql, "example.sql", locking=True, deployed_sql=BASE)
        return any(f.rule == rule_id for f in found)

    assert fired(r.bad), f"{rule_id}: Bad example does not fire:\n{r.bad}"
    assert not fired(r.good), f"{rule_id}: Good example fires:\n{r.good}"


def test_handlers_are_registered_by_real_pglast_names() -> None:
    """Statement handlers are keyed by pglast node classes and ALTER TABLE handlers by real
    AlterTableType members: a misspelt one is an import error, never a silent no-op."""
    import pglast.ast

    all_rules()
    assert STATEMENTS and ALTERS
    for name in STATEMENTS:
        assert isinstance(getattr(pglast.ast, name), type), name
    for name in ALTERS:
        assert AlterTableType[name].name == name
    with pytest.raises(AttributeError):
        on_alter(AlterTableType.AT_AddColum)  # type: ignore[attr-defined]  # the typo raises
    with pytest.raises(ValueError, match="two handlers"):
        on(pglast.ast.DropStmt)(lambda cx, node: None)
    with pytest.raises(ValueError, match="two handlers"):
        on_alter(AlterTableType.AT_DropColumn)(lambda cx, t, cmd, live: None)


def _emitted_ids() -> set[tuple[str, str]]:
    out = set()
    for path in RULES_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("emit", "emit_at")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                out.add((path.name, node.args[0].value))
    return out


def test_every_emitted_rule_id_is_registered() -> None:
    """Every rule id the rule modules emit is declared (a typo would be a KeyError at run time,
    which the engine turns into exit 2; this finds it before)."""
    ids = _emitted_ids()
    assert len(ids) > 20
    assert {i for _, i in ids} - set(all_rules()) == set()


def test_unregistered_rule_id_fails_closed() -> None:
    """Emitting an id that is not registered raises instead of reporting nothing."""
    from spectral_core.compat.checker import Checker

    cx = Checker()
    cx.begin_file("SELECT 1;", deployed=False)
    with pytest.raises(KeyError):
        cx.emit_at("no-such-rule", "x", 0)


def test_no_name_magic_left() -> None:
    """No ``dir()`` dispatch and no ``__getattr__`` turning unknown enum names into strings."""
    for path in (REPO / "src" / "spectral_core" / "compat").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "dir(self)" not in text, path
        if path.name not in ("__init__.py", "_node.py"):
            assert "def __getattr__" not in text, path


def test_enum_values_are_compared_through_pglast_enums() -> None:
    """Rule code compares parse-tree enum values through pglast's enums (``member``), never
    against a spelled-out name like ``"IS_NOT_NULL"`` that a typo would silently never match."""
    import re

    spelled = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'][A-Z][A-Z0-9]*_[A-Z0-9_]+["']""")
    compat = REPO / "src" / "spectral_core" / "compat"
    for path in [compat / "checker.py", *RULES_DIR.glob("*.py")]:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not spelled.search(line), f"{path.name}:{lineno}: {line.strip()}"
