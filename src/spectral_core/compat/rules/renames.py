"""Renames and SET SCHEMA, and the view shim that keeps an old table name readable.

Renaming a table and creating a view under the old name in the same transaction leaves no
moment without the old name: the prior generation keeps reading through the view.  That is
accepted with a warning naming what the view does not cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pglast import ast
from pglast.enums import ObjectType, SetOperation

from spectral_core.compat._node import Node, is_
from spectral_core.compat.checker import Checker, PendingRename, member, names
from spectral_core.compat.registry import Gate, on, rule
from spectral_core.compat.schema import QualName, display

__all__ = ["REL_KINDS", "OBJ_KINDS", "view_shim"]

OT = ObjectType
_C = Gate.COMPAT
_EXPAND = (
    "expand/contract: add the new shape alongside the old one, migrate, and remove the old "
    "shape in a later release once no deployed generation uses it"
)
REL_KINDS = {
    OT.OBJECT_TABLE: "table",
    OT.OBJECT_FOREIGN_TABLE: "table",
    OT.OBJECT_VIEW: "view",
    OT.OBJECT_MATVIEW: "matview",
    OT.OBJECT_SEQUENCE: "sequence",
    OT.OBJECT_INDEX: "index",
}
OBJ_KINDS = {
    OT.OBJECT_FUNCTION: "function",
    OT.OBJECT_PROCEDURE: "function",
    OT.OBJECT_ROUTINE: "function",
    OT.OBJECT_AGGREGATE: "function",
    OT.OBJECT_TYPE: "type",
    OT.OBJECT_DOMAIN: "type",
    OT.OBJECT_SCHEMA: "schema",
    OT.OBJECT_EXTENSION: "extension",
}
_RENAME_WARN = {
    OT.OBJECT_TABCONSTRAINT: "constraint",
    OT.OBJECT_DOMCONSTRAINT: "constraint",
    OT.OBJECT_INDEX: "index",
    OT.OBJECT_TRIGGER: "trigger",
    OT.OBJECT_POLICY: "policy",
    OT.OBJECT_RULE: "rule",
}


@rule("rename-table", _C, blocking=True)
class RenameTable:
    """RENAME of a table, view or sequence (without a view shim under the old name).

    Bad:
        ALTER TABLE core.workers RENAME TO agents;
    Good:
        ALTER TABLE core.workers RENAME TO agents;
        CREATE VIEW core.workers AS SELECT * FROM core.agents;
    """


@rule("rename-column", _C, blocking=True)
class RenameColumn:
    """RENAME COLUMN.

    Bad:
        ALTER TABLE core.outbox RENAME COLUMN topic TO subject;
    Good:
        ALTER TABLE core.outbox ADD COLUMN subject text;
    """


@rule("set-schema", _C, blocking=True)
class SetSchema:
    """ALTER ... SET SCHEMA.

    Bad:
        ALTER TABLE core.outbox SET SCHEMA archive;
    Good:
        CREATE TABLE archive.outbox (id bigint);
    """


@rule("rename-object", _C, blocking=True)
class RenameObject:
    """RENAME of a function, type, schema or attribute.

    Bad:
        ALTER FUNCTION core.f() RENAME TO g;
    Good:
        CREATE FUNCTION core.g() RETURNS int LANGUAGE sql AS 'SELECT 1';
    """


@rule("rename-constraint", _C, blocking=False)
class RenameConstraint:
    """RENAME of an index, constraint, trigger or policy.

    Bad:
        ALTER INDEX core.outbox_status_idx RENAME TO outbox_status_i;
    Good:
        CREATE INDEX CONCURRENTLY outbox_status_i ON core.outbox (status);
    """


@rule("rename-behind-view", _C, blocking=False)
class RenameBehindView:
    """A table renamed with a view under its old name in the same transaction.

    The prior generation reads through the view; the warning names what the view does not
    cover (writes to a view that is not updatable, columns it leaves out, DDL, COPY FROM,
    TRUNCATE and locks by the old name).

    Bad:
        ALTER TABLE core.workers RENAME TO agents;
        CREATE VIEW core.workers AS SELECT id, state, 1 AS n FROM core.agents GROUP BY id;
    Good:
        CREATE TABLE core.agents_log (id int);
    """


# -- RENAME ---------------------------------------------------------------------------------


@on(ast.RenameStmt)
def rename(cx: Checker, node: Node) -> None:
    rt = member(OT, node.renameType)
    new = node.newname
    if rt is OT.OBJECT_COLUMN:
        _rename_column(cx, node, new)
    elif rt in _RENAME_WARN:
        _rename_minor(cx, node, rt, new)
    elif rt in REL_KINDS:
        kind = REL_KINDS[rt]
        qn = cx.rv(node.relation, kind)
        target = (qn[0], new)
        if not cx.model.is_new(kind, qn):
            msg = (
                f"RENAME {kind.upper()} {display(qn)} TO {new}: the "
                f"prior generation still uses the old name; {_EXPAND}"
            )
            loc = cx.loc(node.relation)
            if kind == "table" and not cx.replay_only:
                at = cx.override if cx.override is not None else max(loc or 0, cx.offset)
                cx.file.renames[qn] = PendingRename("rename", qn, target, at, msg)
            else:
                cx.emit("rename-table", msg, loc)
            if kind == "table":
                cx.lock_stmt("RENAME TABLE")
        cx.model.move(kind, qn, target)
    else:
        _rename_object(cx, node, rt, new)


def _rename_column(cx: Checker, node: Node, new: str) -> None:
    kind = REL_KINDS.get(member(OT, node.relationType), "table")
    qn = cx.rv(node.relation, kind)
    if kind == "table":
        t = cx.model.table(qn)
        col = cx.col(t, node.subname)
        if t.deployed and col.deployed:
            cx.emit(
                "rename-column",
                f"RENAME COLUMN {display(qn, node.subname)} TO "
                f"{new}: the prior generation still uses the old name; {_EXPAND}",
                cx.loc(node.relation),
            )
            cx.lock_stmt("RENAME COLUMN")
        t.columns.pop(node.subname, None)
        col.name = new
        t.columns[new] = col
    elif not cx.model.is_new(kind, qn):
        cx.emit(
            "rename-column",
            f"RENAME COLUMN {display(qn, node.subname)} TO "
            f"{new}: the prior generation still uses the old name",
            cx.loc(node.relation),
        )


def _rename_minor(cx: Checker, node: Node, rt: ObjectType, new: str) -> None:
    what = _RENAME_WARN[rt]
    rel = node.relation
    if rt is OT.OBJECT_INDEX:
        qn = cx.rv(rel, "index")
        idx = cx.model.obj("index", qn)
        if idx is None or idx.deployed:
            cx.emit(
                "rename-constraint",
                f"RENAME INDEX {display(qn)} TO {new}: code "
                "naming it (hints, ON CONFLICT ON CONSTRAINT) breaks",
            )
        cx.model.move("index", qn, (qn[0], new))
        return
    tqn = cx.rv(rel) if rel is not None else ("", "")
    if rel is None or not cx.model.is_new("table", tqn):
        cx.emit(
            "rename-constraint",
            f"RENAME {what.upper()} {node.subname} on "
            f"{display(tqn)} TO {new}: code naming it (ON CONFLICT ON CONSTRAINT) breaks",
        )
    t = cx.model.tables.get(tqn)
    if t is not None and node.subname in t.constraints:
        t.constraints[new] = t.constraints.pop(node.subname)


def _object_name(cx: Checker, obj: Any, kind: str, fallback: str) -> QualName:
    if is_(obj, "ObjectWithArgs"):
        return cx.qn(names(obj.objname), kind)
    if is_(obj, "TypeName"):
        return cx.qn(names(obj.names), kind)
    if is_(obj, "String"):
        return ("", obj.sval)
    if isinstance(obj, list):
        return cx.qn(names(obj), kind)
    return ("", fallback)


def _rename_object(cx: Checker, node: Node, rt: ObjectType, new: str) -> None:
    kind = OBJ_KINDS.get(rt, rt.name.removeprefix("OBJECT_").lower())
    if rt is OT.OBJECT_SCHEMA:
        qn: QualName = ("", node.subname)
    elif rt is OT.OBJECT_ATTRIBUTE:
        qn = cx.rv(node.relation, "type")
        kind = "type"
    else:
        qn = _object_name(cx, node.object, kind, node.subname or "?")
    if not cx.model.is_new(kind, qn):
        what = f"ATTRIBUTE {node.subname} of " if rt is OT.OBJECT_ATTRIBUTE else ""
        cx.emit(
            "rename-object",
            f"RENAME {what}{kind.upper()} {display(qn)} TO {new}: the "
            f"prior generation still uses the old name; {_EXPAND}",
        )
    if rt is not OT.OBJECT_ATTRIBUTE:
        cx.model.move(kind, qn, (qn[0], new) if qn[0] else ("", new))


@on(ast.AlterObjectSchemaStmt)
def set_schema(cx: Checker, node: Node) -> None:
    ot = member(OT, node.objectType)
    kind = REL_KINDS.get(ot) or OBJ_KINDS.get(ot) or ot.name.removeprefix("OBJECT_").lower()
    if node.relation is not None:
        qn = cx.rv(node.relation, kind)
    else:
        qn = _object_name(cx, node.object, kind, "?")
    target = (node.newschema, qn[1])
    if not cx.model.is_new(kind, qn):
        msg = (
            f"ALTER {kind.upper()} {display(qn)} SET SCHEMA "
            f"{node.newschema}: the prior generation still uses the old qualified "
            f"name; {_EXPAND}"
        )
        loc = cx.loc(node.relation)
        if kind == "table" and not cx.replay_only:
            at = cx.override if cx.override is not None else max(loc or 0, cx.offset)
            cx.file.renames[qn] = PendingRename("set-schema", qn, target, at, msg)
        else:
            cx.emit("set-schema", msg, loc)
        if kind == "table":
            cx.lock_stmt("SET SCHEMA")
    cx.model.move(kind, qn, target)


# -- the view shim --------------------------------------------------------------------------


def view_shim(cx: Checker, qn: QualName, node: Node) -> bool:
    """A view created under a name a table was renamed away from in this file.

    Returns True (and replaces the pending rename error with a warning) when the view reads
    the renamed table, in the same transaction as the rename.
    """
    pending = cx.file.renames.get(qn)
    if pending is None:
        return False
    query = node.query
    sources = _sources(cx, query)
    if pending.new not in sources or not (cx.file.wrapped or cx.file.explicit):
        return False
    t = cx.model.tables.get(pending.new)
    gaps = []
    updatable = _simple(query) and len(sources) == 1
    if not updatable:
        gaps.append(
            "writes fail (the view is not automatically updatable: add INSTEAD OF triggers)"
        )
    star, listed = _targets(query)
    if t is not None and t.columns_known and not star:
        missing = sorted(set(t.columns) - listed)
        if missing:  # old reads of these columns fail: the shim does not keep reads working
            pending.message += (
                f" (the view {display(qn)} leaves out {', '.join(missing)}, which the prior "
                "generation may read)"
            )
            return False
    gaps.append(
        "DDL, TRUNCATE, COPY ... FROM, LOCK and anything naming the table's indexes, "
        "constraints or sequences by the old name still fail"
    )
    if star:
        gaps.append("columns added to the table later do not appear (SELECT * is expanded once)")
    del cx.file.renames[qn]
    cx.emit_at(
        "rename-behind-view",
        f"{display(qn)} now a view over {display(pending.new)}: the prior generation's reads "
        f"keep working; not covered: {'; '.join(gaps)}",
        pending.offset,
    )
    return True


def _sources(cx: Checker, query: Any) -> set[QualName]:
    out: set[QualName] = set()

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, Node):
            if v.tag == "RangeVar":
                out.add(cx.rv(v))
                return
            for key in v.d:
                walk(getattr(v, key) if key != "def" else v.def_)

    walk(query)
    return out


def _simple(query: Any) -> bool:
    """PostgreSQL's auto-updatable view shape: one FROM item, no grouping, set op, DISTINCT."""
    if not is_(query, "SelectStmt"):
        return False
    if query.op is not None and member(SetOperation, query.op) is not SetOperation.SETOP_NONE:
        return False
    if query.groupClause or query.havingClause or query.distinctClause is not None:
        return False
    if query.limitCount is not None or query.limitOffset is not None or query.withClause:
        return False
    frm: Sequence[Any] = query.fromClause or ()
    if len(frm) != 1 or not is_(frm[0], "RangeVar"):
        return False
    for target in query.targetList or ():
        if _has(target.val, ("FuncCall", "WindowFunc", "SubLink")) and _aggregate(target.val):
            return False
    return True


def _aggregate(v: Any) -> bool:
    return is_(v, "FuncCall") and (
        str(v.funcname[-1].sval).lower()
        in {
            "count",
            "sum",
            "min",
            "max",
            "avg",
            "array_agg",
            "string_agg",
            "bool_and",
            "bool_or",
            "json_agg",
            "jsonb_agg",
        }
        or v.over is not None
    )


def _has(v: Any, tags: tuple[str, ...]) -> bool:
    return isinstance(v, Node) and v.tag in tags


def _targets(query: Any) -> tuple[bool, set[str]]:
    star, listed = False, set()
    if not is_(query, "SelectStmt"):
        return False, set()
    for target in query.targetList or ():
        val = target.val
        if is_(val, "ColumnRef"):
            fields: Sequence[Any] = val.fields or ()
            last = fields[-1]
            if is_(last, "A_Star"):
                star = True
            elif is_(last, "String"):
                listed.add(target.name or last.sval)
    return star, listed
