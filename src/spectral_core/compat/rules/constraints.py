"""Constraints: UNIQUE / PRIMARY KEY / EXCLUDE, CHECK, FOREIGN KEY, and dropping them.

A uniqueness rule breaks the prior generation when its writes can collide; it cannot when
the index is already enforced (``USING INDEX`` of a known unique index) or when a key column
is one the prior generation never writes and existing rows hold NULL in (NULLs never collide).
"""

from __future__ import annotations

from pglast.enums import AlterTableType, ConstrType

from spectral_core.compat._node import Node
from spectral_core.compat.checker import Checker, implies_not_null, member, names
from spectral_core.compat.registry import Gate, on_alter, rule
from spectral_core.compat.schema import Table, display

__all__ = ["judge_column_constraints", "unique_verdict"]

AT, CT = AlterTableType, ConstrType
_C = Gate.COMPAT
_UNIQUE_KINDS = {
    CT.CONSTR_PRIMARY: "primary key",
    CT.CONSTR_UNIQUE: "unique",
    CT.CONSTR_EXCLUSION: "exclusion",
}


@rule("add-unique", _C, blocking=True)
class AddUnique:
    """UNIQUE / PRIMARY KEY / EXCLUDE / unique index on a table with rows or old writers.

    Safe, and not reported: ``USING INDEX`` of a unique index the schema already has, and a
    key column added in the same file, nullable, with no default (old rows and old writes
    hold NULL, and NULLs never collide).  A table created in the same file and then filled
    (``INSERT ... SELECT``, ``CREATE TABLE AS``, ``COPY``) is a populated table.

    Bad:
        ALTER TABLE core.outbox ADD CONSTRAINT outbox_payload_key UNIQUE (payload);
    Good:
        ALTER TABLE core.outbox ADD COLUMN dedup_key text UNIQUE;
    """


@rule("add-check", _C, blocking=False)
class AddCheck:
    """New CHECK constraint on a deployed table.

    Bad:
        ALTER TABLE core.outbox ADD CONSTRAINT few CHECK (attempts < 100);
    Good:
        CREATE TABLE core.limits (n int CHECK (n > 0));
    """


@rule("add-foreign-key", _C, blocking=False)
class AddForeignKey:
    """New FOREIGN KEY on a deployed table.

    Bad:
        ALTER TABLE core.outbox ADD COLUMN w uuid REFERENCES core.workers (id);
    Good:
        CREATE TABLE core.leases (w uuid REFERENCES core.workers (id));
    """


@rule("drop-unique", _C, blocking=False)
class DropUnique:
    """Dropping a unique index or constraint the prior generation may rely on.

    Bad:
        DROP INDEX core.outbox_topic_key;
    Good:
        DROP INDEX CONCURRENTLY core.outbox_status_idx;
    """


def unique_verdict(
    t: Table, keys: list[str], *, primary: bool = False, nulls_not_distinct: bool = False
) -> str | None:
    """Why a new uniqueness rule on *t* over *keys* can fail; None when it cannot.

    New tables nothing filled are exempt.  Otherwise one key column that existing rows and
    the prior generation's inserts leave NULL (or fill with distinct generated values)
    makes every such row distinct, unless NULLS NOT DISTINCT or PRIMARY KEY forbid NULLs.
    A column accepted for its NULLs is marked ``unique_by_null``: a later constant DEFAULT
    on it is judged again (:func:`spectral_core.compat.rules.tables.column_default`).
    """
    if not t.deployed and not t.populated:
        return None
    if not primary:
        for key in keys:
            col = t.column(key)
            if col is None or col.deployed:
                continue
            nulls = not nulls_not_distinct
            # existing rows: NULLs never collide (unless NULLS NOT DISTINCT); values may
            rows_ok = not col.rows_dup and (nulls or not col.rows_null)
            old_null = not col.has_default and not col.generated and nulls
            if rows_ok and (not t.deployed or old_null or col.default_unique):
                col.unique_by_null = t.deployed and old_null and not col.default_unique
                return None
    if not t.deployed:
        return (
            f"{display(t.name)} was created and filled in this file: building the index "
            "fails if the copied rows hold duplicates"
        )
    return (
        f"the prior generation writes {display(t.name)} and can violate it; building it "
        "fails on existing duplicates"
    )


def judge_column_constraints(cx: Checker, t: Table, col: object, cd: Node, loc: int | None) -> None:
    """The inline constraints of a column added to a deployed table."""
    where = display(t.name, cd.colname)
    for c in cd.constraints or ():
        cloc = cx.loc(c) or loc
        ct = member(CT, c.contype)
        if ct in _UNIQUE_KINDS:
            why = unique_verdict(
                t,
                [cd.colname],
                primary=ct is CT.CONSTR_PRIMARY,
                nulls_not_distinct=bool(c.nulls_not_distinct),
            )
            if why is not None:
                cx.emit("add-unique", f"new column {where} is {_UNIQUE_KINDS[ct]}: {why}", cloc)
            cx.emit(
                "lock-create-index",
                f"{where}: the unique index is built under ACCESS EXCLUSIVE",
                cloc,
            )
        elif ct is CT.CONSTR_CHECK and not implies_not_null(c.raw_expr, cd.colname):
            cx.emit(
                "add-check",
                f"new CHECK on {where}: writes by the prior generation may violate it",
                cloc,
            )
        elif ct is CT.CONSTR_FOREIGN:
            cx.emit(
                "add-foreign-key",
                f"new FOREIGN KEY on {where}: writes by the prior generation may violate it",
                cloc,
            )


def _not_null_columns(cx: Checker, t: Table, c: Node, keys: list[str], live: bool) -> None:
    """A PRIMARY KEY, NOT NULL constraint or ``CHECK (col IS NOT NULL)`` makes keys NOT NULL."""
    from spectral_core.compat.rules.tables import fail_not_null

    ct = member(CT, c.contype)
    what = {
        CT.CONSTR_PRIMARY: "PRIMARY KEY",
        CT.CONSTR_NOTNULL: "NOT NULL constraint",
        CT.CONSTR_CHECK: "CHECK (... IS NOT NULL)",
    }[ct]
    for key in keys:
        col = cx.col(t, key)
        judged = ct is not CT.CONSTR_PRIMARY or bool(c.indexname)  # else add-unique says it
        if live and col.deployed and judged and not col.not_null:
            cx.emit(
                "set-not-null",
                f"{what} on {display(t.name, key)} is SET NOT NULL in effect: the prior "
                "generation may still write NULL",
                cx.loc(c),
            )
        elif not col.deployed or not t.deployed:
            validated = not c.skip_validation
            if t.populated and col.rows_null and validated and not cx.replay_only:
                fail_not_null(cx, t, col, what, cx.loc(c))
            if live:
                cx.touch_new_column(t, key, None)
        if ct is not CT.CONSTR_CHECK or not col.not_null:
            col.not_null = True
            if ct is CT.CONSTR_CHECK:
                col.not_null_by = "CHECK (... IS NOT NULL)"


@on_alter(AT.AT_AddConstraint)
def add_constraint(cx: Checker, t: Table, cmd: Node, live: bool) -> None:
    c: Node = cmd.def_
    ct = member(CT, c.contype)
    keys = names(c.keys or ())
    using = c.indexname
    idx = cx.model.obj("index", (t.name[0], using)) if using else None
    name = cx.register_constraint(t, c, None)
    if using and idx is not None:
        keys = list(idx.columns)
        if name and name != using:
            cx.model.move("index", (t.name[0], using), (t.name[0], name))
    if ct in (CT.CONSTR_PRIMARY, CT.CONSTR_NOTNULL):
        _not_null_columns(cx, t, c, keys, live)
    elif ct is CT.CONSTR_CHECK:
        refs = dict.fromkeys(_column_refs(c.raw_expr))
        nn = [k for k in refs if implies_not_null(c.raw_expr, k)]
        if nn:
            _not_null_columns(cx, t, c, nn, live)
    if c.skip_validation and c.conname:
        cx.file.not_valid.add((t.name, c.conname))
    if not live and not (ct in _UNIQUE_KINDS and t.populated):
        return
    loc = cx.loc(c)
    label = f"constraint {c.conname} " if c.conname else ""
    if ct in _UNIQUE_KINDS:
        kind = _UNIQUE_KINDS[ct].upper()
        if using:
            if idx is None:
                cx.emit(
                    "add-unique",
                    f"{kind} {label}on {display(t.name)} USING INDEX {using}: the index is "
                    "not in the schema the lint replayed, so it cannot be shown to enforce "
                    "the rule already",
                    loc,
                )
            elif not idx.unique:
                cx.emit(
                    "add-unique",
                    f"{kind} {label}on {display(t.name)} USING INDEX {using}: {using} is "
                    "not a unique index (the statement fails)",
                    loc,
                )
            elif idx.partial or not idx.columns:
                cx.emit(
                    "add-unique",
                    f"{kind} {label}on {display(t.name)} USING INDEX {using}: {using} is a "
                    "partial or expression index, which PostgreSQL refuses for a constraint",
                    loc,
                )
            return
        why = unique_verdict(
            t,
            keys,
            primary=ct is CT.CONSTR_PRIMARY,
            nulls_not_distinct=bool(c.nulls_not_distinct),
        )
        if why is not None:
            cols = f" ({', '.join(keys)})" if keys else ""
            cx.emit("add-unique", f"{kind} {label}on {display(t.name)}{cols}: {why}", loc)
        if live:
            cx.emit(
                "lock-create-index",
                f"{label}on {display(t.name)} builds its index "
                "under ACCESS EXCLUSIVE; build it CONCURRENTLY and attach it with "
                "USING INDEX",
                loc,
            )
    elif ct in (CT.CONSTR_CHECK, CT.CONSTR_FOREIGN):
        rule_id = "add-check" if ct is CT.CONSTR_CHECK else "add-foreign-key"
        what = "CHECK" if ct is CT.CONSTR_CHECK else "FOREIGN KEY"
        nn_only = ct is CT.CONSTR_CHECK and all(
            implies_not_null(c.raw_expr, name) for name in _column_refs(c.raw_expr)
        )
        if not nn_only:
            cx.emit(
                rule_id,
                f"new {what} {label}on {display(t.name)}: writes by the prior "
                "generation may violate it",
                loc,
            )
        if not c.skip_validation:
            cx.emit(
                "lock-not-valid",
                f"{what} {label}on {display(t.name)} without NOT "
                "VALID scans the table under lock; add it NOT VALID, then VALIDATE "
                "CONSTRAINT in a later migration file",
                loc,
            )


def _column_refs(expr: object) -> list[str]:
    """The last name part of every column reference in *expr*, walking the raw JSON."""
    out: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            ref = v.get("ColumnRef")
            if isinstance(ref, dict):
                fields = ref.get("fields") or ()
                last = fields[-1] if fields else None
                if isinstance(last, dict) and "String" in last:
                    out.append(last["String"].get("sval", ""))
                return
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(({expr.tag: expr.d} if expr.tag else expr.d) if isinstance(expr, Node) else expr)
    return out


@on_alter(AT.AT_ValidateConstraint)
def validate_constraint(cx: Checker, t: Table, cmd: Node, live: bool) -> None:
    f = cx.file
    if (t.name, cmd.name) in f.not_valid and (f.wrapped or f.explicit):
        cx.emit(
            "lock-validate-in-transaction",
            f"VALIDATE CONSTRAINT {cmd.name} on {display(t.name)} runs in the same "
            "transaction as its NOT VALID add, so the add's lock is held for the whole "
            "validation scan; validate in a later migration file",
            cx.ident(cmd.name),
        )


@on_alter(AT.AT_DropConstraint)
def drop_constraint(cx: Checker, t: Table, cmd: Node, live: bool) -> None:
    con = t.constraints.pop(cmd.name, None)
    cx.model.drop("index", (t.name[0], cmd.name))
    if not live or (con is not None and not con.deployed):
        return
    loc = cx.ident(cmd.name)
    if con is None:
        if cmd.missing_ok and t.columns_known:
            return
        cx.emit(
            "drop-unique",
            f"DROP CONSTRAINT {cmd.name} on {display(t.name)}: the lint "
            "cannot tell whether it is unique; code of the prior generation may rely "
            "on its uniqueness (ON CONFLICT)",
            loc,
        )
    elif con.kind in ("primary", "unique", "exclusion"):
        cx.emit(
            "drop-unique",
            f"DROP CONSTRAINT {cmd.name} on {display(t.name)} removes "
            "a uniqueness rule the prior generation may rely on (ON CONFLICT)",
            loc,
        )
    elif con.kind == "notnull":
        cx.emit(
            "drop-not-null",
            f"DROP CONSTRAINT {cmd.name} on {display(t.name)}: the "
            "prior generation may now read NULLs it does not expect",
            loc,
        )
