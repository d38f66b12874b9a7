"""Types: ALTER COLUMN TYPE, enums, domains and composite types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from spectral_core.compat._node import Node, is_
from spectral_core.compat.checker import Checker, implies_not_null, is_null, member, names
from spectral_core.compat.registry import Gate, on, on_alter, rule
from spectral_core.compat.schema import Table, display
from spectral_core.compat.typecompat import is_compatible, needs_rewrite, type_ref

__all__ = ["alter_composite", "value_preserving"]

AT, CT, OT = AlterTableType, ConstrType, ObjectType
_C = Gate.COMPAT
_EXPAND = (
    "expand/contract: add the new shape alongside the old one, migrate, and remove the old "
    "shape in a later release once no deployed generation uses it"
)


@rule("alter-column-type", _C, blocking=True)
class AlterColumnType:
    """ALTER COLUMN TYPE outside the compatible allowlist, or with a USING that rewrites values.

    ``USING`` is value-preserving only as the column itself or a cast of it; any other
    expression changes what the prior generation reads, whatever the target type.

    Bad:
        ALTER TABLE core.outbox ALTER COLUMN attempts TYPE bigint USING attempts * 100;
    Good:
        ALTER TABLE core.outbox ALTER COLUMN attempts TYPE bigint USING attempts::bigint;
    """


@rule("enum-rename-value", _C, blocking=True)
class EnumRenameValue:
    """ALTER TYPE ... RENAME VALUE.

    Bad:
        ALTER TYPE core.mood RENAME VALUE 'sad' TO 'blue';
    Good:
        ALTER TYPE core.mood ADD VALUE 'blue';
    """


@rule("enum-add-value", _C, blocking=False)
class EnumAddValue:
    """ALTER TYPE ... ADD VALUE: the prior generation may read a label it does not know.

    Bad:
        ALTER TYPE core.mood ADD VALUE 'meh';
    Good:
        CREATE TYPE core.mood2 AS ENUM ('happy', 'sad', 'meh');
    """


def value_preserving(expr: Any, column: str) -> bool:
    """True when a USING expression is the column itself, or casts of it."""
    if is_(expr, "TypeCast"):
        return value_preserving(expr.arg, column)
    if is_(expr, "ColumnRef"):
        fields: Sequence[Any] = expr.fields or ()
        return bool(fields) and is_(fields[-1], "String") and fields[-1].sval == column
    return False


@on_alter(AT.AT_AlterColumnType)
def alter_column_type(cx: Checker, t: Table, cmd: Node, live: bool) -> None:
    cd = cmd.def_
    new = type_ref(cd.typeName)
    col = cx.col(t, cmd.name)
    where = display(t.name, cmd.name)
    using = cd.raw_default
    if live and col.deployed:
        old = col.type
        loc = cx.ident(cmd.name)
        if using is not None and not value_preserving(using, cmd.name):
            cx.emit(
                "alter-column-type",
                f"ALTER COLUMN {where} TYPE {new} USING an expression that changes the "
                "values (not the column or a cast of it): the prior generation reads values "
                f"it did not write; {_EXPAND}",
                loc,
            )
        elif not is_compatible(old, new):
            why = (
                f"{old} -> {new} is not on the compatible-change allowlist"
                if old is not None
                else f"-> {new}: the old type is unknown (no replayed migration defines the "
                "column), so the change cannot be shown compatible"
            )
            cx.emit(
                "alter-column-type",
                f"ALTER COLUMN {where} TYPE {why}; the prior "
                f"generation may not read or write it; {_EXPAND}",
                loc,
            )
        if needs_rewrite(old, new) or (using is not None and not value_preserving(using, cmd.name)):
            cx.emit(
                "lock-table-rewrite",
                f"ALTER COLUMN {where} TYPE {new} rewrites {display(t.name)} "
                "under ACCESS EXCLUSIVE",
                loc,
            )
    col.type = new
    dom = (
        cx.model.obj("type", cx.qn(new.name.split("."), "type"))
        if new and cx.model.domains
        else None
    )
    if dom is not None and dom.domain and dom.not_null and not col.not_null:
        from spectral_core.compat.rules.tables import fail_not_null

        if t.populated and col.rows_null and not cx.replay_only:
            fail_not_null(cx, t, col, f"TYPE {new} (a NOT NULL domain)", cx.ident(cmd.name))
        if live and col.deployed:
            cx.emit(
                "set-not-null",
                f"ALTER COLUMN {where} TYPE {new}: the domain is NOT NULL, so this is SET NOT "
                "NULL in effect; the prior generation may still write NULL",
                cx.ident(cmd.name),
            )
        elif live:
            cx.touch_new_column(t, cmd.name, cx.ident(cmd.name))
        col.not_null = True
        col.not_null_by = f"NOT NULL through domain {display(dom.name)}"


def alter_composite(cx: Checker, node: Node) -> None:
    """``ALTER TYPE`` of a composite type (ATTRIBUTE subcommands)."""
    qn = cx.rv(node.relation, "type")
    if cx.model.is_new("type", qn):
        return
    for cmd in node.cmds or ():
        subtype = member(AT, cmd.subtype)
        if subtype is AT.AT_DropColumn:
            cx.emit(
                "drop-column",
                f"DROP ATTRIBUTE {cmd.name} of type {display(qn)}: "
                f"the prior generation still uses it; {_EXPAND}",
            )
        elif subtype is AT.AT_AlterColumnType:
            cx.emit(
                "alter-column-type",
                f"ALTER ATTRIBUTE {cmd.name} of type "
                f"{display(qn)}: the old type is unknown to the lint, so the change "
                "is treated as incompatible",
            )


@on(ast.CreateEnumStmt)
def create_enum(cx: Checker, node: Node) -> None:
    cx.model.put("type", cx.qn(names(node.typeName), "type"), cx.replay_only)


@on(ast.CreateDomainStmt)
def create_domain(cx: Checker, node: Node) -> None:
    dom = cx.model.put("type", cx.qn(names(node.domainname), "type"), cx.replay_only)
    dom.domain = True
    cx.model.domains += 1
    for c in node.constraints or ():
        ct = member(CT, c.contype)
        if ct is CT.CONSTR_NOTNULL or (
            ct is CT.CONSTR_CHECK and implies_not_null(c.raw_expr, "value")
        ):
            dom.not_null = True
        elif ct is CT.CONSTR_DEFAULT:
            dom.has_default = not is_null(c.raw_expr)


@on(ast.CreateRangeStmt)
def create_range(cx: Checker, node: Node) -> None:
    cx.model.put("type", cx.qn(names(node.typeName), "type"), cx.replay_only)


@on(ast.CompositeTypeStmt)
def create_composite(cx: Checker, node: Node) -> None:
    cx.model.put("type", cx.rv(node.typevar, "type"), cx.replay_only)


@on(ast.DefineStmt)
def define(cx: Checker, node: Node) -> None:
    kind = member(OT, node.kind)
    if kind is OT.OBJECT_TYPE:
        cx.model.put("type", cx.qn(names(node.defnames), "type"), cx.replay_only)
    elif kind is OT.OBJECT_AGGREGATE:
        cx.model.put("function", cx.qn(names(node.defnames), "function"), cx.replay_only)


@on(ast.AlterEnumStmt)
def alter_enum(cx: Checker, node: Node) -> None:
    qn = cx.qn(names(node.typeName), "type")
    if cx.model.is_new("type", qn):
        return
    if node.oldVal:
        cx.emit(
            "enum-rename-value",
            f"RENAME VALUE {node.oldVal!r} TO {node.newVal!r} of "
            f"enum {display(qn)}: the prior generation still writes the old label",
        )
    elif node.newVal:
        cx.emit(
            "enum-add-value",
            f"ADD VALUE {node.newVal!r} to enum {display(qn)}: the "
            "prior generation may read a label it does not know",
        )


@on(ast.AlterDomainStmt)
def alter_domain(cx: Checker, node: Node) -> None:
    qn = cx.qn(names(node.typeName), "type")
    dom = cx.model.obj("type", qn)
    new = cx.model.is_new("type", qn)
    sub = node.subtype
    if sub == "C":
        c = node.def_
        if is_(c, "Constraint") and (
            member(CT, c.contype) is CT.CONSTR_NOTNULL
            or (member(CT, c.contype) is CT.CONSTR_CHECK and implies_not_null(c.raw_expr, "value"))
        ):
            if not new:
                cx.emit(
                    "set-not-null",
                    f"a NOT NULL check on domain {display(qn)} is SET NOT NULL in effect: "
                    "the prior generation may still write NULL",
                )
            if dom is not None:
                dom.not_null = True
        elif not new:
            cx.emit(
                "add-check",
                f"new constraint on domain {display(qn)}: writes by the prior"
                " generation may violate it",
            )
    elif sub == "O":
        if not new:
            cx.emit(
                "set-not-null",
                f"SET NOT NULL on domain {display(qn)}: the prior generation may still write NULL",
            )
        if dom is not None:
            dom.not_null = True
    elif sub == "N":
        if not new:
            cx.emit(
                "drop-not-null",
                f"DROP NOT NULL on domain {display(qn)}: the prior generation may read NULLs",
            )
        if dom is not None:
            dom.not_null = False
    elif sub == "T":
        dropping = node.def_ is None or is_null(node.def_)
        if dropping and not new:
            cx.emit(
                "drop-default",
                f"DROP DEFAULT on domain {display(qn)}: inserts by the "
                "prior generation relying on it change meaning",
            )
        if dom is not None:
            dom.has_default = not dropping
