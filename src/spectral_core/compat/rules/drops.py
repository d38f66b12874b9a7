"""Drops: DROP TABLE / COLUMN / INDEX / other objects, DROP OWNED, TRUNCATE and REVOKE."""

from __future__ import annotations

from pglast import ast
from pglast.enums import AlterTableType, DropBehavior, GrantTargetType, ObjectType

from spectral_core.compat._node import Node, is_
from spectral_core.compat.checker import Checker, member, names
from spectral_core.compat.registry import Gate, on, on_alter, rule
from spectral_core.compat.rules.renames import OBJ_KINDS, REL_KINDS
from spectral_core.compat.schema import QualName, Table, display

__all__: list[str] = []

AT, OT = AlterTableType, ObjectType
_C = Gate.COMPAT
_EXPAND = (
    "expand/contract: add the new shape alongside the old one, migrate, and remove the old "
    "shape in a later release once no deployed generation uses it"
)
_DROP_IGNORED = frozenset(
    {
        OT.OBJECT_TRIGGER,
        OT.OBJECT_EVENT_TRIGGER,
        OT.OBJECT_STATISTIC_EXT,
        OT.OBJECT_PUBLICATION,
        OT.OBJECT_SUBSCRIPTION,
        OT.OBJECT_RULE,
    }
)


@rule("drop-table", _C, blocking=True)
class DropTable:
    """DROP TABLE of a table the prior generation uses.

    Bad:
        DROP TABLE core.outbox;
    Good:
        CREATE TABLE core.scratch (a int);
        DROP TABLE core.scratch;
    """


@rule("drop-column", _C, blocking=True)
class DropColumn:
    """DROP COLUMN (or composite attribute) still in use.

    Bad:
        ALTER TABLE core.outbox DROP COLUMN note;
    Good:
        ALTER TABLE core.outbox ADD COLUMN scratch int;
        ALTER TABLE core.outbox DROP COLUMN scratch;
    """


@rule("drop-object", _C, blocking=True)
class DropObject:
    """DROP of a view, function, type, sequence, schema, policy or other object.

    Bad:
        DROP FUNCTION core.f();
    Good:
        CREATE FUNCTION core.g() RETURNS int LANGUAGE sql AS 'SELECT 1';
        DROP FUNCTION core.g();
    """


@rule("truncate", _C, blocking=True)
class Truncate:
    """TRUNCATE of a deployed table.

    Bad:
        TRUNCATE core.outbox;
    Good:
        CREATE TABLE core.scratch (a int);
        TRUNCATE core.scratch;
    """


@rule("revoke", _C, blocking=True)
class Revoke:
    """REVOKE of privileges or role membership.

    Bad:
        REVOKE SELECT ON core.outbox FROM app;
    Good:
        GRANT SELECT ON core.outbox TO app;
    """


@on_alter(AT.AT_DropColumn)
def drop_column(cx: Checker, t: Table, cmd: Node, live: bool) -> None:
    col = t.column(cmd.name)
    if col is None and cmd.missing_ok and t.columns_known:
        return
    if live and (col is None or col.deployed):
        cx.emit(
            "drop-column",
            f"DROP COLUMN {display(t.name, cmd.name)}: the prior "
            f"generation still reads or writes it; {_EXPAND}",
            cx.ident(cmd.name),
        )
    t.columns.pop(cmd.name, None)


def _drop_names(cx: Checker, node: Node, kind: str) -> list[QualName]:
    out = []
    for obj in node.objects or ():
        if is_(obj, "String"):
            parts = [obj.sval]
        elif is_(obj, "ObjectWithArgs"):
            parts = names(obj.objname)
        elif is_(obj, "TypeName"):
            parts = names(obj.names)
        else:
            parts = names(obj)
        out.append(cx.qn(parts, kind))
    return out


@on(ast.DropStmt)
def drop(cx: Checker, node: Node) -> None:
    rt = member(OT, node.removeType)
    if node.concurrent:
        from spectral_core.compat.rules.indexes import forbid_in_transaction

        forbid_in_transaction(cx, "DROP INDEX CONCURRENTLY")
    if rt in _DROP_IGNORED:
        return
    if rt is OT.OBJECT_POLICY:
        for obj in node.objects or ():
            parts = names(obj)
            tqn = cx.qn(parts[:-1], "table")
            if not cx.model.is_new("table", tqn):
                cx.emit(
                    "drop-object",
                    f"DROP POLICY {parts[-1]} on {display(tqn)}: with "
                    "row-level security on, the prior generation loses access",
                )
        return
    kind = REL_KINDS.get(rt) or OBJ_KINDS.get(rt) or rt.name.removeprefix("OBJECT_").lower()
    cascade = " CASCADE" if member(DropBehavior, node.behavior) is DropBehavior.DROP_CASCADE else ""
    for qn in _drop_names(cx, node, kind):
        if kind == "index":
            _drop_index(cx, qn, node)
            continue
        if kind == "table":
            if not cx.model.is_new("table", qn):
                cx.emit(
                    "drop-table",
                    f"DROP TABLE {display(qn)}{cascade}: the prior "
                    f"generation still reads or writes it; {_EXPAND}",
                )
                cx.lock_stmt("DROP TABLE")
        elif not cx.model.is_new(kind, qn):
            cx.emit(
                "drop-object",
                f"DROP {kind.upper()} {display(qn)}{cascade}: the "
                f"prior generation may still use it; {_EXPAND}",
            )
        cx.model.drop(kind, qn)


def _drop_index(cx: Checker, qn: QualName, node: Node) -> None:
    idx = cx.model.obj("index", qn)
    if idx is not None and (not idx.deployed or not idx.unique):
        pass
    elif idx is not None:
        cx.emit(
            "drop-unique",
            f"DROP INDEX {display(qn)} removes a unique index the "
            "prior generation may rely on (ON CONFLICT)",
        )
    elif not node.missing_ok:
        cx.emit(
            "drop-unique",
            f"DROP INDEX {display(qn)}: the lint cannot tell whether "
            "it is unique; the prior generation may rely on it (ON CONFLICT)",
        )
    table = cx.model.tables.get(idx.table) if idx is not None and idx.table else None
    if table is not None and table.deployed and not node.concurrent:
        cx.lock_stmt("DROP INDEX")
    cx.model.drop("index", qn)


@on(ast.DropOwnedStmt)
def drop_owned(cx: Checker, node: Node) -> None:
    cx.emit(
        "drop-object",
        "DROP OWNED drops every object of the role, including ones the prior generation uses",
    )


@on(ast.TruncateStmt)
def truncate(cx: Checker, node: Node) -> None:
    for rv in node.relations or ():
        qn = cx.rv(rv)
        if not cx.model.is_new("table", qn):
            cx.emit(
                "truncate",
                f"TRUNCATE {display(qn)}: deletes data the prior generation is serving",
                cx.loc(rv),
            )
            cx.lock_stmt("TRUNCATE")
        else:
            cx.model.tables[qn].filled = False


@on(ast.GrantStmt)
def grant(cx: Checker, node: Node) -> None:
    if node.is_grant:
        return
    objs = node.objects or ()
    if (
        member(GrantTargetType, node.targtype) is GrantTargetType.ACL_TARGET_OBJECT
        and member(OT, node.objtype) is OT.OBJECT_TABLE
        and objs
        and all(is_(o, "RangeVar") and cx.model.is_new("table", cx.rv(o)) for o in objs)
    ):
        return
    cx.emit("revoke", "REVOKE: the prior generation may lose a privilege it uses")


@on(ast.GrantRoleStmt)
def grant_role(cx: Checker, node: Node) -> None:
    if not node.is_grant:
        cx.emit(
            "revoke",
            "REVOKE of role membership: the prior generation may lose privileges it uses",
        )
