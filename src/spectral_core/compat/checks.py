"""The statement checker: judges each statement against the schema model, then applies it.

One :class:`Checker` walks every file in order.  For a deployed file it only replays (no
findings); for a file not yet deployed it emits :class:`Hit` s and replays.  Objects the prior
generation cannot know (created by a migration not yet deployed) are exempt from the compat
rules: nothing old reads or writes them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pglast.parser import ParseError

from spectral_core.compat._node import CharOffsets, Node, const_text, is_, parse
from spectral_core.compat.plpgsql import do_block_items
from spectral_core.compat.schema import Column, Constraint, QualName, SchemaModel, Table, display
from spectral_core.compat.typecompat import SERIAL_TYPES, is_compatible, needs_rewrite, type_ref

__all__ = ["Checker", "Hit"]


class _Names:
    """``CT.CONSTR_CHECK == "CONSTR_CHECK"``: enum values in the JSON tree are their names."""

    def __getattr__(self, name: str) -> str:
        return name


AT = CT = OT = _Names()

_UNIQUE_KINDS = {
    CT.CONSTR_PRIMARY: "primary",
    CT.CONSTR_UNIQUE: "unique",
    CT.CONSTR_EXCLUSION: "exclusion",
}
_KIND_OF = {
    CT.CONSTR_PRIMARY: "primary",
    CT.CONSTR_UNIQUE: "unique",
    CT.CONSTR_EXCLUSION: "exclusion",
    CT.CONSTR_CHECK: "check",
    CT.CONSTR_FOREIGN: "foreign",
    CT.CONSTR_NOTNULL: "notnull",
}
_VOLATILE = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuid_generate_v4",
        "uuid_generate_v1",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "uuidv4",
        "uuidv7",
    }
)
_REL_KINDS = {
    OT.OBJECT_TABLE: "table",
    OT.OBJECT_FOREIGN_TABLE: "table",
    OT.OBJECT_VIEW: "view",
    OT.OBJECT_MATVIEW: "matview",
    OT.OBJECT_SEQUENCE: "sequence",
    OT.OBJECT_INDEX: "index",
}
_OBJ_KINDS = {
    OT.OBJECT_FUNCTION: "function",
    OT.OBJECT_PROCEDURE: "function",
    OT.OBJECT_ROUTINE: "function",
    OT.OBJECT_AGGREGATE: "function",
    OT.OBJECT_TYPE: "type",
    OT.OBJECT_DOMAIN: "type",
    OT.OBJECT_SCHEMA: "schema",
    OT.OBJECT_EXTENSION: "extension",
}
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
_RENAME_WARN = {
    OT.OBJECT_TABCONSTRAINT: "constraint",
    OT.OBJECT_DOMCONSTRAINT: "constraint",
    OT.OBJECT_INDEX: "index",
    OT.OBJECT_TRIGGER: "trigger",
    OT.OBJECT_POLICY: "policy",
    OT.OBJECT_RULE: "rule",
}

_EXPAND = "expand/contract: add the new shape alongside the old one, migrate, and remove the old "
_EXPAND += "shape in a later release once no deployed generation uses it"


@dataclass(frozen=True)
class Hit:
    """A rule violation at a character offset of the file being linted."""

    rule: str
    offset: int
    message: str


def _is_null(expr: Any) -> bool:
    if is_(expr, "A_Const"):
        return bool(expr.isnull)
    if is_(expr, "TypeCast"):
        return _is_null(expr.arg)
    return expr is None


def _is_volatile(expr: Any) -> bool:
    if is_(expr, "FuncCall"):
        return expr.funcname[-1].sval in _VOLATILE
    if is_(expr, "TypeCast"):
        return _is_volatile(expr.arg)
    return False


def _names(nodes: Iterable[Any]) -> list[str]:
    return [n.sval for n in nodes]


class Checker:
    """Judges and replays statements into a :class:`SchemaModel`."""

    def __init__(self, model: SchemaModel | None = None, *, locking: bool = False) -> None:
        self.model = model if model is not None else SchemaModel()
        self.locking = locking
        self.hits: list[Hit] = []
        self.replay_only = True
        self._text = ""
        self._starts: tuple[int, ...] = ()
        self._ends: tuple[int, ...] = ()
        self._cursor = 0
        self._offset = 0
        self._override: int | None = None
        self._touched: dict[tuple[QualName, str], int] = {}
        self._lock_timeout = False
        self._lock_reported = False
        self._char = CharOffsets("")
        self._dispatch: dict[str, Callable[[Any], None]] = {}
        for name in dir(self):
            if name.startswith("_s_"):
                self._dispatch[name[3:]] = getattr(self, name)

    # -- file lifecycle ---------------------------------------------------------------------

    def begin_file(
        self,
        text: str,
        *,
        deployed: bool,
        chars: CharOffsets | None = None,
        tokens: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),
    ) -> None:
        """Start a file: a deployed one is replayed only; a new one is judged too."""
        self.replay_only = deployed
        self._char = chars if chars is not None else CharOffsets(text)
        self._starts, self._ends = tokens
        self._cursor = 0
        self.hits = []
        self._text = text
        self._touched = {}
        self._lock_timeout = False
        self._lock_reported = False
        self.model.search_path = ["public"]

    def statement(self, node: Any, offset: int) -> None:
        """Judge (unless replaying) and apply one top-level statement starting at *offset*."""
        self._offset = offset
        self._cursor = bisect.bisect_left(self._starts, offset)
        handler = self._dispatch.get(node.tag)
        if handler is not None:
            handler(node)

    def end_file(self) -> list[Hit]:
        """Judge the net effect of the file on new columns, and return its hits."""
        for (qn, name), offset in self._touched.items():
            t = self.model.tables.get(qn)
            col = t.column(name) if t is not None else None
            if t is None or col is None or not t.deployed or col.deployed:
                continue
            if col.not_null and not col.has_default and not col.generated:
                self._emit_at(
                    "add-column-not-null",
                    f"column {display(qn, name)} ends this file NOT NULL without a non-null "
                    "DEFAULT: inserts by the prior generation, which does not know the column, "
                    "would fail; give it a DEFAULT or add it nullable and backfill",
                    offset,
                )
        return self.hits

    # -- helpers ----------------------------------------------------------------------------

    def _loc(self, node: Any) -> int | None:
        """The character offset of *node* (its ``location``), if it has one."""
        loc = node.location if isinstance(node, Node) else None
        return self._char(loc) if isinstance(loc, int) and loc >= 0 else None

    def _emit(self, rule: str, message: str, loc: int | None = None) -> None:
        if self._override is not None:
            offset = self._override
        else:
            offset = loc if loc is not None and loc >= self._offset else self._offset
        self._emit_at(rule, message, offset)

    def _emit_at(self, rule: str, message: str, offset: int) -> None:
        if self.replay_only or (rule.startswith("lock-") and not self.locking):
            return
        self.hits.append(Hit(rule, offset, message))

    def _ident(self, name: str | None) -> int | None:
        """Offset of the next token spelling identifier *name* in this statement, if any."""
        if not name or self._override is not None or self.replay_only:
            return None
        text, starts, ends = self._text, self._starts, self._ends
        for i in range(self._cursor, min(self._cursor + 400, len(starts))):
            tok = text[starts[i] : ends[i] + 1]
            if (
                tok == name
                or (tok[:1] == '"' and tok[1:-1].replace('""', '"') == name)
                or (tok[:1] != '"' and tok.lower() == name)
            ):
                self._cursor = i + 1
                return starts[i]
            if tok == ";":
                break
        return None

    def _lock_stmt(self, what: str) -> None:
        if not self._lock_timeout and not self._lock_reported:
            self._lock_reported = True
            self._emit(
                "lock-timeout",
                f"{what} takes a strong lock on a deployed table with no "
                "lock_timeout set earlier in the file; start with SET lock_timeout",
            )

    def _rv(self, rv: Node, kind: str = "table") -> QualName:
        return self.model.qualify(rv.schemaname, rv.relname, kind)

    def _qn(self, names: list[str], kind: str) -> QualName:
        if kind in ("schema", "extension"):
            return ("", names[-1])
        if len(names) >= 2:
            return (names[-2], names[-1])
        return self.model.qualify(None, names[-1], kind)

    def _column(self, cd: Node, deployed: bool) -> Column:
        d = cd.d
        tn = d.get("typeName")
        col = Column(
            d.get("colname", ""),
            type_ref(Node("TypeName", tn)) if tn else None,
            deployed,
            not_null=bool(d.get("is_not_null")),
        )
        if tn and tn.get("names") and tn["names"][-1]["String"]["sval"] in SERIAL_TYPES:
            col.has_default = col.not_null = True
        if d.get("raw_default") is not None and not _is_null(cd.raw_default):
            col.has_default = True
        for c in cd.constraints or ():
            ct = c.contype
            if ct == CT.CONSTR_NOTNULL or ct == CT.CONSTR_PRIMARY:
                col.not_null = True
            elif ct == CT.CONSTR_NULL:
                col.not_null = False
            elif ct == CT.CONSTR_DEFAULT:
                col.has_default = not _is_null(c.raw_expr)
            elif ct == CT.CONSTR_IDENTITY:
                col.has_default = col.not_null = True
            elif ct == CT.CONSTR_GENERATED:
                col.generated = True
        return col

    def _register_constraint(self, t: Table, c: Node, column: str | None) -> None:
        kind = _KIND_OF.get(c.contype)
        if kind is None:
            return
        name = c.conname
        if not name:
            base = t.name[1]
            if kind == "primary":
                name = f"{base}_pkey"
            elif column is not None:
                name = f"{base}_{column}_" + {
                    "unique": "key",
                    "check": "check",
                    "foreign": "fkey",
                }.get(kind, kind)
        if name:
            deployed = self.replay_only
            t.constraints[name] = Constraint(kind, deployed)
            if kind in ("primary", "unique", "exclusion") and not c.indexname:
                self.model.put("index", (t.name[0], name), deployed, unique=True, table=t.name)

    def _new_column_touched(self, t: Table, name: str, offset: int | None) -> None:
        key = (t.name, name)
        if key not in self._touched:
            if self._override is not None:
                offset = self._override
            self._touched[key] = offset if offset is not None else self._offset

    # -- CREATE -----------------------------------------------------------------------------

    def _s_CreateStmt(self, node: Node) -> None:
        qn = self._rv(node.relation)
        if node.if_not_exists and qn in self.model.tables:
            return
        t = Table(qn, deployed=self.replay_only)
        self.model.tables[qn] = t
        if node.inhRelations or node.ofTypename is not None or node.partbound is not None:
            t.columns_known = False
        for elt in node.tableElts or ():
            if is_(elt, "ColumnDef"):
                t.columns[elt.colname] = self._column(elt, self.replay_only)
                for c in elt.constraints or ():
                    self._register_constraint(t, c, elt.colname)
            elif is_(elt, "Constraint"):
                self._register_constraint(t, elt, None)
                if elt.contype == CT.CONSTR_PRIMARY:
                    for key in _names(elt.keys or ()):
                        if key in t.columns:
                            t.columns[key].not_null = True
            else:  # LIKE
                t.columns_known = False

    def _s_CreateTableAsStmt(self, node: Node) -> None:
        rv = node.into.rel
        if node.objtype == OT.OBJECT_MATVIEW:
            self.model.put("matview", self._rv(rv, "matview"), self.replay_only)
        else:
            qn = self._rv(rv)
            if not (node.if_not_exists and qn in self.model.tables):
                self.model.tables[qn] = Table(qn, self.replay_only, columns_known=False)

    def _replace(self, kind: str, qn: QualName, replace: bool, loc: int | None) -> None:
        existing = self.model.obj(kind, qn)
        unknown_counts = existing is None and not self.model.has_baseline
        if replace and (unknown_counts or (existing is not None and existing.deployed)):
            known = "of the prior generation" if existing else "that may exist in production"
            self._emit(
                "replace-deployed",
                f"CREATE OR REPLACE {kind} {display(qn)} replaces one "
                f"{known}; old code calls the new definition, so keep its behaviour "
                "compatible (or create a versioned name)",
                loc,
            )
        self.model.put(kind, qn, self.replay_only)

    def _s_ViewStmt(self, node: Node) -> None:
        self._replace("view", self._rv(node.view, "view"), bool(node.replace), self._loc(node.view))

    def _s_CreateFunctionStmt(self, node: Node) -> None:
        qn = self._qn(_names(node.funcname), "function")
        self._replace("function", qn, bool(node.replace), None)

    def _s_CreateSeqStmt(self, node: Node) -> None:
        self.model.put("sequence", self._rv(node.sequence, "sequence"), self.replay_only)

    def _s_CreateEnumStmt(self, node: Node) -> None:
        self.model.put("type", self._qn(_names(node.typeName), "type"), self.replay_only)

    def _s_CreateDomainStmt(self, node: Node) -> None:
        self.model.put("type", self._qn(_names(node.domainname), "type"), self.replay_only)

    def _s_CreateRangeStmt(self, node: Node) -> None:
        self.model.put("type", self._qn(_names(node.typeName), "type"), self.replay_only)

    def _s_CompositeTypeStmt(self, node: Node) -> None:
        self.model.put("type", self._rv(node.typevar, "type"), self.replay_only)

    def _s_DefineStmt(self, node: Node) -> None:
        if node.kind == OT.OBJECT_TYPE:
            self.model.put("type", self._qn(_names(node.defnames), "type"), self.replay_only)
        elif node.kind == OT.OBJECT_AGGREGATE:
            self.model.put(
                "function", self._qn(_names(node.defnames), "function"), self.replay_only
            )

    def _s_CreateExtensionStmt(self, node: Node) -> None:
        self.model.put("extension", ("", node.extname), self.replay_only)

    def _s_CreateSchemaStmt(self, node: Node) -> None:
        name = node.schemaname or (node.authrole.rolename if node.authrole else "")
        self.model.put("schema", ("", name), self.replay_only)
        saved = self.model.search_path
        self.model.search_path = [name]
        try:
            for elt in node.schemaElts or ():
                self.statement(elt, self._offset)
        finally:
            self.model.search_path = saved

    def _s_IndexStmt(self, node: Node) -> None:
        qn = self._rv(node.relation)
        t = self.model.table(qn)
        if t.deployed:
            loc = self._loc(node.relation)
            if node.unique or node.primary:
                self._emit(
                    "add-unique",
                    f"unique index {node.idxname or ''} on {display(qn)}: "
                    "the prior generation can write rows that violate it (and building it "
                    "fails on existing duplicates); enforce uniqueness in code first and "
                    "add the index in a later release",
                    loc,
                )
            if not node.concurrent:
                self._emit(
                    "lock-create-index",
                    f"CREATE INDEX on {display(qn)} without "
                    "CONCURRENTLY blocks writes while it builds",
                    loc,
                )
                self._lock_stmt("CREATE INDEX")
        if node.idxname:
            iqn = (qn[0], node.idxname)
            if not (node.if_not_exists and self.model.obj("index", iqn)):
                self.model.drop("index", iqn)
                self.model.put("index", iqn, self.replay_only, unique=bool(node.unique), table=qn)

    # -- ALTER TABLE ------------------------------------------------------------------------

    def _s_AlterTableStmt(self, node: Node) -> None:
        if node.objtype == OT.OBJECT_TYPE:
            self._alter_composite(node)
            return
        if node.objtype not in (OT.OBJECT_TABLE, OT.OBJECT_FOREIGN_TABLE):
            return
        qn = self._rv(node.relation)
        if node.missing_ok and qn not in self.model.tables:
            pass  # IF EXISTS on an unknown table: it counts as existing
        t = self.model.table(qn)
        live = t.deployed
        if live and node.cmds:
            self._lock_stmt("ALTER TABLE")
        for cmd in node.cmds or ():
            handler = getattr(self, f"_at_{cmd.subtype}", None)
            if handler is not None:
                handler(t, cmd, live)

    def _alter_composite(self, node: Node) -> None:
        qn = self._rv(node.relation, "type")
        if self.model.is_new("type", qn):
            return
        for cmd in node.cmds or ():
            if cmd.subtype == AT.AT_DropColumn:
                self._emit(
                    "drop-column",
                    f"DROP ATTRIBUTE {cmd.name} of type {display(qn)}: "
                    f"the prior generation still uses it; {_EXPAND}",
                )
            elif cmd.subtype == AT.AT_AlterColumnType:
                self._emit(
                    "alter-column-type",
                    f"ALTER ATTRIBUTE {cmd.name} of type "
                    f"{display(qn)}: the old type is unknown to the lint, so the change "
                    "is treated as incompatible",
                )

    def _col(self, t: Table, name: str) -> Column:
        col = t.column(name)
        if col is None:  # unknown column of a known or unknown table: it exists, type unknown
            col = t.columns[name] = Column(name, None, deployed=t.deployed)
        return col

    def _at_AT_AddColumn(self, t: Table, cmd: Node, live: bool) -> None:
        cd: Node = cmd.def_
        if cmd.missing_ok and cd.colname in t.columns:
            return
        col = self._column(cd, self.replay_only)
        t.columns[cd.colname] = col
        loc = self._loc(cd)
        for c in cd.constraints or ():
            self._register_constraint(t, c, cd.colname)
        if not live:
            return
        self._new_column_touched(t, cd.colname, loc)
        for c in cd.constraints or ():
            where = display(t.name, cd.colname)
            cloc = self._loc(c) or loc
            if c.contype in _UNIQUE_KINDS:
                self._emit(
                    "add-unique",
                    f"new column {where} is {_UNIQUE_KINDS[c.contype]}: "
                    f"a uniqueness rule on {display(t.name)}, which the prior generation "
                    "writes, makes its inserts fail",
                    cloc,
                )
                self._emit(
                    "lock-create-index",
                    f"{where}: the unique index is built under ACCESS EXCLUSIVE",
                    cloc,
                )
            elif c.contype == CT.CONSTR_CHECK:
                self._emit(
                    "add-check",
                    f"new CHECK on {where}: writes by the prior generation may violate it",
                    cloc,
                )
            elif c.contype == CT.CONSTR_FOREIGN:
                self._emit(
                    "add-foreign-key",
                    f"new FOREIGN KEY on {where}: writes by the prior generation may violate it",
                    cloc,
                )
            elif c.contype == CT.CONSTR_DEFAULT and _is_volatile(c.raw_expr):
                self._emit(
                    "lock-table-rewrite",
                    f"{where}: a volatile DEFAULT rewrites "
                    f"{display(t.name)} under ACCESS EXCLUSIVE",
                    cloc,
                )
            elif c.contype == CT.CONSTR_GENERATED:
                self._emit(
                    "lock-table-rewrite",
                    f"{where}: a stored generated column "
                    f"rewrites {display(t.name)} under ACCESS EXCLUSIVE",
                    cloc,
                )

    def _at_AT_DropColumn(self, t: Table, cmd: Node, live: bool) -> None:
        col = t.column(cmd.name)
        if col is None and cmd.missing_ok and t.columns_known:
            return
        if live and (col is None or col.deployed):
            self._emit(
                "drop-column",
                f"DROP COLUMN {display(t.name, cmd.name)}: the prior "
                f"generation still reads or writes it; {_EXPAND}",
                self._ident(cmd.name),
            )
        t.columns.pop(cmd.name, None)

    def _at_AT_AlterColumnType(self, t: Table, cmd: Node, live: bool) -> None:
        new = type_ref(cmd.def_.typeName)
        col = self._col(t, cmd.name)
        where = display(t.name, cmd.name)
        if live and col.deployed:
            old = col.type
            loc = self._ident(cmd.name)
            if not is_compatible(old, new):
                why = (
                    f"{old} -> {new} is not on the compatible-change allowlist"
                    if old is not None
                    else f"-> {new}: the old type is unknown (no replayed migration defines the "
                    "column), so the change cannot be shown compatible"
                )
                self._emit(
                    "alter-column-type",
                    f"ALTER COLUMN {where} TYPE {why}; the prior "
                    f"generation may not read or write it; {_EXPAND}",
                    loc,
                )
            if needs_rewrite(old, new):
                self._emit(
                    "lock-table-rewrite",
                    f"ALTER COLUMN {where} TYPE {new} rewrites "
                    f"{display(t.name)} under ACCESS EXCLUSIVE",
                    loc,
                )
        col.type = new

    def _at_AT_SetNotNull(self, t: Table, cmd: Node, live: bool) -> None:
        col = self._col(t, cmd.name)
        if live and col.deployed:
            self._emit(
                "set-not-null",
                f"SET NOT NULL on {display(t.name, cmd.name)}: the prior "
                "generation may still write NULL (and the check scans the table); add a "
                "CHECK ... NOT VALID, validate it, and set NOT NULL in a later release",
                self._ident(cmd.name),
            )
        elif live:
            self._new_column_touched(t, cmd.name, self._ident(cmd.name))
        col.not_null = True

    def _at_AT_DropNotNull(self, t: Table, cmd: Node, live: bool) -> None:
        col = self._col(t, cmd.name)
        if live and col.deployed:
            self._emit(
                "drop-not-null",
                f"DROP NOT NULL on {display(t.name, cmd.name)}: the prior "
                "generation may now read NULLs it does not expect",
                self._ident(cmd.name),
            )
        col.not_null = False

    def _at_AT_ColumnDefault(self, t: Table, cmd: Node, live: bool) -> None:
        col = self._col(t, cmd.name)
        dropping = cmd.def_ is None or _is_null(cmd.def_)
        if dropping and live and col.deployed:
            self._emit(
                "drop-default",
                f"DROP DEFAULT on {display(t.name, cmd.name)}: inserts by "
                "the prior generation that omit the column change meaning or fail",
                self._ident(cmd.name),
            )
        elif live:
            self._new_column_touched(t, cmd.name, self._ident(cmd.name))
        col.has_default = not dropping

    def _at_AT_DropIdentity(self, t: Table, cmd: Node, live: bool) -> None:
        col = self._col(t, cmd.name)
        if live and col.deployed:
            self._emit(
                "drop-default",
                f"DROP IDENTITY on {display(t.name, cmd.name)}: inserts by "
                "the prior generation rely on the generated value",
                self._ident(cmd.name),
            )
        elif live:
            self._new_column_touched(t, cmd.name, None)
        col.has_default = False

    def _at_AT_AddIdentity(self, t: Table, cmd: Node, live: bool) -> None:
        col = self._col(t, cmd.name)
        col.has_default = col.not_null = True

    def _at_AT_AddConstraint(self, t: Table, cmd: Node, live: bool) -> None:
        c: Node = cmd.def_
        self._register_constraint(t, c, None)
        keys = _names(c.keys or ())
        if c.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_NOTNULL):
            for key in keys:
                col = self._col(t, key)
                if c.contype == CT.CONSTR_NOTNULL and live and col.deployed:
                    self._emit(
                        "set-not-null",
                        f"NOT NULL constraint on "
                        f"{display(t.name, key)}: the prior generation may still write "
                        "NULL",
                        self._loc(c),
                    )
                elif live and not col.deployed:
                    self._new_column_touched(t, key, None)
                col.not_null = True
        if not live:
            return
        loc = self._loc(c)
        label = f"constraint {c.conname} " if c.conname else ""
        if c.contype in _UNIQUE_KINDS:
            self._emit(
                "add-unique",
                f"{_UNIQUE_KINDS[c.contype].upper()} {label}on "
                f"{display(t.name)} ({', '.join(keys)}): the prior generation writes this "
                "table and can violate it; building it fails on existing duplicates",
                loc,
            )
            if not c.indexname:
                self._emit(
                    "lock-create-index",
                    f"{label}on {display(t.name)} builds its index "
                    "under ACCESS EXCLUSIVE; build it CONCURRENTLY and attach it with "
                    "USING INDEX",
                    loc,
                )
        elif c.contype in (CT.CONSTR_CHECK, CT.CONSTR_FOREIGN):
            rule = "add-check" if c.contype == CT.CONSTR_CHECK else "add-foreign-key"
            what = "CHECK" if c.contype == CT.CONSTR_CHECK else "FOREIGN KEY"
            self._emit(
                rule,
                f"new {what} {label}on {display(t.name)}: writes by the prior "
                "generation may violate it",
                loc,
            )
            if not c.skip_validation:
                self._emit(
                    "lock-not-valid",
                    f"{what} {label}on {display(t.name)} without NOT "
                    "VALID scans the table under lock; add it NOT VALID, then VALIDATE "
                    "CONSTRAINT",
                    loc,
                )

    def _at_AT_DropConstraint(self, t: Table, cmd: Node, live: bool) -> None:
        con = t.constraints.pop(cmd.name, None)
        self.model.drop("index", (t.name[0], cmd.name))
        if not live or (con is not None and not con.deployed):
            return
        loc = self._ident(cmd.name)
        if con is None:
            if cmd.missing_ok and t.columns_known:
                return
            self._emit(
                "drop-unique",
                f"DROP CONSTRAINT {cmd.name} on {display(t.name)}: the lint "
                "cannot tell whether it is unique; code of the prior generation may rely "
                "on its uniqueness (ON CONFLICT)",
                loc,
            )
        elif con.kind in ("primary", "unique", "exclusion"):
            self._emit(
                "drop-unique",
                f"DROP CONSTRAINT {cmd.name} on {display(t.name)} removes "
                "a uniqueness rule the prior generation may rely on (ON CONFLICT)",
                loc,
            )
        elif con.kind == "notnull":
            self._emit(
                "drop-not-null",
                f"DROP CONSTRAINT {cmd.name} on {display(t.name)}: the "
                "prior generation may now read NULLs it does not expect",
                loc,
            )

    def _at_AT_EnableRowSecurity(self, t: Table, cmd: Node, live: bool) -> None:
        if live:
            self._emit(
                "enable-rls",
                f"row-level security on {display(t.name)}: queries by the "
                "prior generation see no rows unless a policy admits them",
            )

    _at_AT_ForceRowSecurity = _at_AT_EnableRowSecurity

    # -- DROP, RENAME, SET SCHEMA -----------------------------------------------------------

    def _drop_names(self, node: Node, kind: str) -> list[QualName]:
        out = []
        for obj in node.objects or ():
            if is_(obj, "String"):
                names = [obj.sval]
            elif is_(obj, "ObjectWithArgs"):
                names = _names(obj.objname)
            elif is_(obj, "TypeName"):
                names = _names(obj.names)
            else:
                names = _names(obj)
            out.append(self._qn(names, kind))
        return out

    def _s_DropStmt(self, node: Node) -> None:
        rt = node.removeType
        if rt in _DROP_IGNORED:
            return
        if rt in (OT.OBJECT_POLICY,):
            for obj in node.objects or ():
                names = _names(obj)
                tqn = self._qn(names[:-1], "table")
                if not self.model.is_new("table", tqn):
                    self._emit(
                        "drop-object",
                        f"DROP POLICY {names[-1]} on {display(tqn)}: with "
                        "row-level security on, the prior generation loses access",
                    )
            return
        kind = _REL_KINDS.get(rt) or _OBJ_KINDS.get(rt) or rt.removeprefix("OBJECT_").lower()
        cascade = " CASCADE" if node.behavior == "DROP_CASCADE" else ""
        for qn in self._drop_names(node, kind):
            if kind == "index":
                self._drop_index(qn, node)
                continue
            if kind == "table":
                if not self.model.is_new("table", qn):
                    self._emit(
                        "drop-table",
                        f"DROP TABLE {display(qn)}{cascade}: the prior "
                        f"generation still reads or writes it; {_EXPAND}",
                    )
                    self._lock_stmt("DROP TABLE")
            elif not self.model.is_new(kind, qn):
                self._emit(
                    "drop-object",
                    f"DROP {kind.upper()} {display(qn)}{cascade}: the "
                    f"prior generation may still use it; {_EXPAND}",
                )
            self.model.drop(kind, qn)

    def _drop_index(self, qn: QualName, node: Node) -> None:
        idx = self.model.obj("index", qn)
        if idx is not None and (not idx.deployed or not idx.unique):
            pass
        elif idx is not None:
            self._emit(
                "drop-unique",
                f"DROP INDEX {display(qn)} removes a unique index the "
                "prior generation may rely on (ON CONFLICT)",
            )
        elif not node.missing_ok:
            self._emit(
                "drop-unique",
                f"DROP INDEX {display(qn)}: the lint cannot tell whether "
                "it is unique; the prior generation may rely on it (ON CONFLICT)",
            )
        table = self.model.tables.get(idx.table) if idx is not None and idx.table else None
        if table is not None and table.deployed and not node.concurrent:
            self._lock_stmt("DROP INDEX")
        self.model.drop("index", qn)

    def _s_RenameStmt(self, node: Node) -> None:
        rt = node.renameType
        new = node.newname
        if rt == OT.OBJECT_COLUMN:
            kind = _REL_KINDS.get(node.relationType, "table")
            qn = self._rv(node.relation, kind)
            if kind == "table":
                t = self.model.table(qn)
                col = self._col(t, node.subname)
                if t.deployed and col.deployed:
                    self._emit(
                        "rename-column",
                        f"RENAME COLUMN {display(qn, node.subname)} TO "
                        f"{new}: the prior generation still uses the old name; {_EXPAND}",
                        self._loc(node.relation),
                    )
                    self._lock_stmt("RENAME COLUMN")
                t.columns.pop(node.subname, None)
                col.name = new
                t.columns[new] = col
            elif not self.model.is_new(kind, qn):
                self._emit(
                    "rename-column",
                    f"RENAME COLUMN {display(qn, node.subname)} TO "
                    f"{new}: the prior generation still uses the old name",
                    self._loc(node.relation),
                )
            return
        if rt in _RENAME_WARN:
            what = _RENAME_WARN[rt]
            rel = node.relation
            if rt == OT.OBJECT_INDEX:
                qn = self._rv(rel, "index")
                idx = self.model.obj("index", qn)
                if idx is None or idx.deployed:
                    self._emit(
                        "rename-constraint",
                        f"RENAME INDEX {display(qn)} TO {new}: code "
                        "naming it (hints, ON CONFLICT ON CONSTRAINT) breaks",
                    )
                self.model.move("index", qn, (qn[0], new))
                return
            tqn = self._rv(rel) if rel is not None else ("", "")
            if rel is None or not self.model.is_new("table", tqn):
                self._emit(
                    "rename-constraint",
                    f"RENAME {what.upper()} {node.subname} on "
                    f"{display(tqn)} TO {new}: code naming it (ON CONFLICT ON CONSTRAINT) "
                    "breaks",
                )
            t = self.model.tables.get(tqn)
            if t is not None and node.subname in t.constraints:
                t.constraints[new] = t.constraints.pop(node.subname)
            return
        if rt in _REL_KINDS:
            kind = _REL_KINDS[rt]
            qn = self._rv(node.relation, kind)
            if not self.model.is_new(kind, qn):
                self._emit(
                    "rename-table",
                    f"RENAME {kind.upper()} {display(qn)} TO {new}: the "
                    f"prior generation still uses the old name; {_EXPAND}",
                    self._loc(node.relation),
                )
                if kind == "table":
                    self._lock_stmt("RENAME TABLE")
            self.model.move(kind, qn, (qn[0], new))
            return
        kind = _OBJ_KINDS.get(rt, rt.removeprefix("OBJECT_").lower())
        obj = node.object
        if rt == OT.OBJECT_SCHEMA:
            qn: QualName = ("", node.subname)
        elif rt == OT.OBJECT_ATTRIBUTE:
            qn = self._rv(node.relation, "type")
            kind = "type"
        elif is_(obj, "ObjectWithArgs"):
            qn = self._qn(_names(obj.objname), kind)
        elif is_(obj, "TypeName"):
            qn = self._qn(_names(obj.names), kind)
        elif is_(obj, "String"):
            qn = ("", obj.sval)
        elif isinstance(obj, tuple | list):
            qn = self._qn(_names(obj), kind)
        else:
            qn = ("", node.subname or "?")
        if not self.model.is_new(kind, qn):
            what = f"ATTRIBUTE {node.subname} of " if rt == OT.OBJECT_ATTRIBUTE else ""
            self._emit(
                "rename-object",
                f"RENAME {what}{kind.upper()} {display(qn)} TO {new}: the "
                f"prior generation still uses the old name; {_EXPAND}",
            )
        if rt != OT.OBJECT_ATTRIBUTE:
            self.model.move(kind, qn, (qn[0], new) if qn[0] else ("", new))

    def _s_AlterObjectSchemaStmt(self, node: Node) -> None:
        ot = node.objectType
        kind = _REL_KINDS.get(ot) or _OBJ_KINDS.get(ot) or ot.removeprefix("OBJECT_").lower()
        if node.relation is not None:
            qn = self._rv(node.relation, kind)
        elif is_(node.object, "ObjectWithArgs"):
            qn = self._qn(_names(node.object.objname), kind)
        elif is_(node.object, "TypeName"):
            qn = self._qn(_names(node.object.names), kind)
        elif isinstance(node.object, tuple | list):
            qn = self._qn(_names(node.object), kind)
        else:
            qn = ("", "?")
        if not self.model.is_new(kind, qn):
            self._emit(
                "set-schema",
                f"ALTER {kind.upper()} {display(qn)} SET SCHEMA "
                f"{node.newschema}: the prior generation still uses the old qualified "
                f"name; {_EXPAND}",
                self._loc(node.relation),
            )
            if kind == "table":
                self._lock_stmt("SET SCHEMA")
        self.model.move(kind, qn, (node.newschema, qn[1]))

    # -- enums, domains, privileges, data ---------------------------------------------------

    def _s_AlterEnumStmt(self, node: Node) -> None:
        qn = self._qn(_names(node.typeName), "type")
        if self.model.is_new("type", qn):
            return
        if node.oldVal:
            self._emit(
                "enum-rename-value",
                f"RENAME VALUE {node.oldVal!r} TO {node.newVal!r} of "
                f"enum {display(qn)}: the prior generation still writes the old label",
            )
        elif node.newVal:
            self._emit(
                "enum-add-value",
                f"ADD VALUE {node.newVal!r} to enum {display(qn)}: the "
                "prior generation may read a label it does not know",
            )

    def _s_AlterDomainStmt(self, node: Node) -> None:
        qn = self._qn(_names(node.typeName), "type")
        if self.model.is_new("type", qn):
            return
        if node.subtype == "C":
            self._emit(
                "add-check",
                f"new constraint on domain {display(qn)}: writes by the prior"
                " generation may violate it",
            )
        elif node.subtype == "O":
            self._emit(
                "set-not-null",
                f"SET NOT NULL on domain {display(qn)}: the prior generation may still write NULL",
            )
        elif node.subtype == "N":
            self._emit(
                "drop-not-null",
                f"DROP NOT NULL on domain {display(qn)}: the prior generation may read NULLs",
            )
        elif node.subtype == "T" and (node.def_ is None or _is_null(node.def_)):
            self._emit(
                "drop-default",
                f"DROP DEFAULT on domain {display(qn)}: inserts by the "
                "prior generation relying on it change meaning",
            )

    def _s_GrantStmt(self, node: Node) -> None:
        if node.is_grant:
            return
        objs = node.objects or ()
        if (
            node.targtype == "ACL_TARGET_OBJECT"
            and node.objtype == OT.OBJECT_TABLE
            and objs
            and all(is_(o, "RangeVar") and self.model.is_new("table", self._rv(o)) for o in objs)
        ):
            return
        self._emit("revoke", "REVOKE: the prior generation may lose a privilege it uses")

    def _s_GrantRoleStmt(self, node: Node) -> None:
        if not node.is_grant:
            self._emit(
                "revoke",
                "REVOKE of role membership: the prior generation may lose privileges it uses",
            )

    def _s_TruncateStmt(self, node: Node) -> None:
        for rv in node.relations or ():
            qn = self._rv(rv)
            if not self.model.is_new("table", qn):
                self._emit(
                    "truncate",
                    f"TRUNCATE {display(qn)}: deletes data the prior generation is serving",
                    self._loc(rv),
                )
                self._lock_stmt("TRUNCATE")

    def _s_DropOwnedStmt(self, node: Node) -> None:
        self._emit(
            "drop-object",
            "DROP OWNED drops every object of the role, including ones the prior generation uses",
        )

    def _s_CreateTrigStmt(self, node: Node) -> None:
        if self.model.table(self._rv(node.relation)).deployed:
            self._lock_stmt("CREATE TRIGGER")

    # -- session settings -------------------------------------------------------------------

    def _s_VariableSetStmt(self, node: Node) -> None:
        name = (node.name or "").lower()
        setting = node.kind == "VAR_SET_VALUE"
        values = [v for v in (const_text(a) for a in node.args or ()) if v is not None]
        if name == "lock_timeout":
            self._lock_timeout = setting and bool(values) and values[0] not in ("0", "")
        elif name == "search_path":
            self.model.search_path = [v for v in values if v] if setting else ["public"]

    def _s_SelectStmt(self, node: Node) -> None:
        for target in node.targetList or ():
            fc = target.val
            if is_(fc, "FuncCall") and fc.funcname[-1].sval == "set_config":
                args = fc.args or ()
                if len(args) >= 2 and const_text(args[0]) == "lock_timeout":
                    self._lock_timeout = (const_text(args[1]) or "0") not in ("0", "")

    # -- opaque SQL -------------------------------------------------------------------------

    def _s_CallStmt(self, node: Node) -> None:
        name = ".".join(_names(node.funccall.funcname))
        self._emit(
            "opaque-sql",
            f"CALL {name}: a procedure body is opaque to the lint; inline "
            "its statements or waive with a reason",
        )

    def _s_ExecuteStmt(self, node: Node) -> None:
        self._emit("opaque-sql", f"EXECUTE {node.name}: a prepared statement is opaque to the lint")

    def _s_DoStmt(self, node: Node) -> None:
        body, language, body_loc = "", "plpgsql", None
        for de in node.args or ():
            if de.defname == "as":
                body = de.arg.sval
                raw = de.arg_location if de.arg_location is not None else de.location
                body_loc = self._char(raw) if isinstance(raw, int) and raw >= 0 else None
            elif de.defname == "language":
                language = de.arg.sval.lower()
        if language != "plpgsql":
            self._emit("opaque-sql", f"DO block in language {language} is opaque to the lint")
            return
        start = self._body_start(body_loc)
        saved = self._override
        try:
            for item in do_block_items(body):
                self._override = self._line_offset(start, item.lineno) if saved is None else saved
                if item.sql is None:
                    self._emit(
                        "opaque-sql",
                        f"{item.why}: the lint cannot see what it runs; "
                        "use static statements or waive with a reason",
                    )
                    continue
                try:
                    inner, _ = parse(item.sql)
                except ParseError as exc:
                    self._emit(
                        "opaque-sql",
                        f"statement in DO block does not parse "
                        f"({exc.args[0]}); the lint cannot see what it does",
                    )
                    continue
                for stmt, _ in inner:
                    self.statement(stmt, self._offset)
        finally:
            self._override = saved

    def _body_start(self, loc: int | None) -> int | None:
        text = self._text
        if loc is None or not (0 <= loc < len(text)):
            return None
        if text[loc] == "$":
            end = text.find("$", loc + 1)
            return end + 1 if end != -1 else None
        return loc + (2 if text[loc] in "eE" else 1)

    def _line_offset(self, start: int | None, lineno: int) -> int:
        if start is None:
            return self._offset
        pos = start
        for _ in range(max(lineno - 1, 0)):
            nxt = self._text.find("\n", pos)
            if nxt == -1:
                break
            pos = nxt + 1
        while pos < len(self._text) and self._text[pos] in " \t\r\n":
            pos += 1
        return pos
