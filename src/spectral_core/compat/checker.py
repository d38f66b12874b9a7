"""The statement checker: walks a file in order, judging each statement against the schema
model as it stands at that point, then applying it.

PostgreSQL runs a migration's statements in order, so the model is a sequence of states: a
later ``SET DEFAULT`` does not fill the rows an earlier ``ADD COLUMN ... NOT NULL`` found.
One :class:`Checker` walks every file of a run.  For a deployed file it only replays (no
findings); for a file not yet deployed it emits :class:`Hit` s and replays.  Objects the prior
generation cannot know (created by a migration not yet deployed) are exempt from the compat
rules: nothing old reads or writes them.

The handlers live in :mod:`spectral_core.compat.rules`, one module per statement family,
registered per statement kind in :mod:`spectral_core.compat.registry`.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pglast.enums import A_Expr_Kind, BoolExprType, ConstrType, NullTestType

from spectral_core.compat._node import CharOffsets, Node, is_
from spectral_core.compat.markers import Tokens
from spectral_core.compat.registry import ALTERS, RULES, STATEMENTS
from spectral_core.compat.schema import Column, Constraint, QualName, SchemaModel, Table, display
from spectral_core.compat.typecompat import SERIAL_TYPES, type_ref

__all__ = ["NO_TRANSACTION", "Checker", "Hit", "is_null", "member", "names"]

#: The migration runner's header: a file whose first line is this runs without a transaction
#: (``spectral_core.migrate.NO_TRANSACTION``; a test keeps the two equal).
NO_TRANSACTION = "-- spectral: no-transaction"

_CT = ConstrType
_KIND_OF = {
    _CT.CONSTR_PRIMARY: "primary",
    _CT.CONSTR_UNIQUE: "unique",
    _CT.CONSTR_EXCLUSION: "exclusion",
    _CT.CONSTR_CHECK: "check",
    _CT.CONSTR_FOREIGN: "foreign",
    _CT.CONSTR_NOTNULL: "notnull",
}
#: Functions whose value differs per row and never repeats (a default that fills unique values).
UNIQUE_GENERATORS = frozenset(
    {"gen_random_uuid", "uuid_generate_v4", "uuidv4", "uuidv7", "nextval"}
)
VOLATILE = UNIQUE_GENERATORS | {"random", "uuid_generate_v1", "clock_timestamp", "timeofday"}


@dataclass(frozen=True)
class Hit:
    """A rule violation at a character offset of the file being linted."""

    rule: str
    offset: int
    message: str


@dataclass
class PendingRename:
    """A table renamed (or moved) in this file: an error unless a view shim takes its name."""

    kind: str
    old: QualName
    new: QualName
    offset: int
    message: str


@dataclass
class FileState:
    """What the checker knows about the file being judged, statement by statement."""

    wrapped: bool = True  # the runner wraps the file in one transaction
    lock_timeout: bool = False
    lock_reported: bool = False
    touched: dict[tuple[QualName, str], int] = field(default_factory=dict)
    not_valid: set[tuple[QualName, str]] = field(default_factory=set)
    failed: set[tuple[QualName, str]] = field(default_factory=set)  # reported as failing
    explicit: bool = False  # inside an explicit BEGIN ... COMMIT of the file
    renames: dict[QualName, PendingRename] = field(default_factory=dict)


_E = TypeVar("_E", bound=enum.Enum)


def member(kind: type[_E], name: str) -> _E:
    """The member of pglast enum *kind* named *name* (the JSON tree holds names; an
    unknown name is a KeyError, never a silent mismatch)."""
    return kind[name]


def is_null(expr: Any) -> bool:
    """True for a NULL constant (also cast), or no expression at all."""
    if is_(expr, "A_Const"):
        return bool(expr.isnull)
    if is_(expr, "TypeCast"):
        return is_null(expr.arg)
    return expr is None


def func_name(expr: Any) -> str | None:
    """The unqualified name of a function call (through casts), else None."""
    if is_(expr, "TypeCast"):
        return func_name(expr.arg)
    if is_(expr, "FuncCall"):
        return str(expr.funcname[-1].sval)
    return None


def names(nodes: Iterable[Any]) -> list[str]:
    """The ``sval`` of each String node."""
    return [n.sval for n in nodes]


class Checker:
    """Judges and replays statements into a :class:`SchemaModel`."""

    def __init__(self, model: SchemaModel | None = None, *, locking: bool = False) -> None:
        self.model = model if model is not None else SchemaModel()
        self.locking = locking
        self.hits: list[Hit] = []
        self.replay_only = True
        self.file = FileState()
        self.text = ""
        self.offset = 0
        self.override: int | None = None  # inside a DO block: the offset of its statement
        self._tokens: Tokens | None = None
        self._cursor = -1  # token index of the statement's start; -1: not looked up yet
        self.char = CharOffsets("")

    # -- file lifecycle ---------------------------------------------------------------------

    def begin_file(
        self,
        text: str,
        *,
        deployed: bool,
        chars: CharOffsets | None = None,
        tokens: Tokens | None = None,
    ) -> None:
        """Start a file: a deployed one is replayed only; a new one is judged too."""
        self.replay_only = deployed
        self.char = chars if chars is not None else CharOffsets(text)
        self._tokens = tokens
        self._cursor = -1
        self.hits = []
        self.text = text
        self.file = FileState(wrapped=not text.lstrip().startswith(NO_TRANSACTION))
        self.model.search_path = ["public"]

    def statement(self, node: Any, offset: int) -> None:
        """Judge (unless replaying) and apply one top-level statement starting at *offset*."""
        self.offset = offset
        self._cursor = -1
        handler = STATEMENTS.get(node.tag)
        if handler is not None:
            handler(self, node)

    def alter(self, t: Table, cmd: Node, live: bool) -> None:
        """Judge and apply one ``ALTER TABLE`` subcommand."""
        handler = ALTERS.get(cmd.subtype)
        if handler is not None:
            handler(self, t, cmd, live)

    def end_file(self) -> list[Hit]:
        """Judge what the file leaves behind, and return its hits."""
        for pending in self.file.renames.values():
            self.emit_at(
                "rename-table" if pending.kind != "set-schema" else "set-schema",
                pending.message,
                pending.offset,
            )
        for (qn, name), offset in self.file.touched.items():
            t = self.model.tables.get(qn)
            col = t.column(name) if t is not None else None
            if t is None or col is None or not t.deployed or col.deployed:
                continue
            if (qn, name) in self.file.failed:
                continue
            if col.not_null and not col.has_default and not col.generated:
                how = "NOT NULL" if not col.not_null_by else col.not_null_by
                self.emit_at(
                    "add-column-not-null",
                    f"column {display(qn, name)} ends this file {how} without a non-null "
                    "DEFAULT: inserts by the prior generation, which does not know the column, "
                    "would fail; give it a DEFAULT or add it nullable and backfill",
                    offset,
                )
        return self.hits

    # -- emitting ---------------------------------------------------------------------------

    def loc(self, node: Any) -> int | None:
        """The character offset of *node* (its ``location``), if it has one."""
        loc = node.location if isinstance(node, Node) else None
        return self.char(loc) if isinstance(loc, int) and loc >= 0 else None

    def emit(self, rule: str, message: str, loc: int | None = None) -> None:
        """Report *rule* at *loc* (clamped to the current statement)."""
        if self.override is not None:
            offset = self.override
        else:
            offset = loc if loc is not None and loc >= self.offset else self.offset
        self.emit_at(rule, message, offset)

    def emit_at(self, rule: str, message: str, offset: int) -> None:
        """Report *rule* at a character offset (a rule id not registered is a KeyError)."""
        spec = RULES[rule]
        if self.replay_only or (spec.gate == "locking" and not self.locking):
            return
        self.hits.append(Hit(rule, offset, message))

    def ident(self, name: str | None) -> int | None:
        """Offset of the next token spelling identifier *name* in this statement, if any."""
        if not name or self.override is not None or self.replay_only or self._tokens is None:
            return None
        text, starts, ends = self.text, self._tokens.starts, self._tokens.ends
        if self._cursor < 0:
            self._cursor = bisect.bisect_left(starts, self.offset)
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

    def lock_stmt(self, what: str) -> None:
        """A statement takes a strong lock on a deployed table: it wants a lock_timeout."""
        f = self.file
        if not f.lock_timeout and not f.lock_reported:
            f.lock_reported = True
            self.emit(
                "lock-timeout",
                f"{what} takes a strong lock on a deployed table with no "
                "lock_timeout set earlier in the file; start with SET lock_timeout",
            )

    # -- names and model helpers ------------------------------------------------------------

    def rv(self, rv: Node, kind: str = "table") -> QualName:
        """The qualified name of a RangeVar."""
        return self.model.qualify(rv.schemaname, rv.relname, kind)

    def qn(self, parts: list[str], kind: str) -> QualName:
        """The qualified name of a dotted name list."""
        if kind in ("schema", "extension"):
            return ("", parts[-1])
        if len(parts) >= 2:
            return (parts[-2], parts[-1])
        return self.model.qualify(None, parts[-1], kind)

    def col(self, t: Table, name: str) -> Column:
        """The column *name* of *t*; an unknown one exists with an unknown type."""
        col = t.column(name)
        if col is None:
            col = t.columns[name] = Column(name, None, deployed=t.deployed)
        return col

    def column(self, cd: Node, deployed: bool) -> Column:
        """A Column from a ColumnDef (type, nullability, default, identity, generation)."""
        d = cd.d
        tn = d.get("typeName")
        col = Column(
            d.get("colname", ""),
            type_ref(Node("TypeName", tn)) if tn else None,
            deployed,
            not_null=bool(d.get("is_not_null")),
        )
        if tn and tn.get("names") and tn["names"][-1]["String"]["sval"] in SERIAL_TYPES:
            col.has_default = col.not_null = col.default_unique = True
        elif col.type is not None and self.model.domains:
            dom = self.model.obj("type", self.qn(col.type.name.split("."), "type"))
            if dom is not None and dom.domain:
                col.has_default = dom.has_default
                if dom.not_null:
                    col.not_null = True
                    col.not_null_by = f"NOT NULL through domain {display(dom.name)}"
        if d.get("raw_default") is not None:
            self._default(col, cd.raw_default)
        for c in cd.constraints or ():
            ct = member(_CT, c.contype)
            if ct is _CT.CONSTR_NOTNULL or ct is _CT.CONSTR_PRIMARY:
                col.not_null = True
            elif ct is _CT.CONSTR_NULL:
                col.not_null = False
            elif ct is _CT.CONSTR_DEFAULT:
                self._default(col, c.raw_expr)
            elif ct is _CT.CONSTR_IDENTITY:
                col.has_default = col.not_null = col.default_unique = True
                col.identity = c.generated_when or "d"
            elif ct is _CT.CONSTR_GENERATED:
                col.generated = True
            elif ct is _CT.CONSTR_CHECK and implies_not_null(c.raw_expr, col.name):
                col.not_null = True
                col.not_null_by = "CHECK (... IS NOT NULL)"
        return col

    @staticmethod
    def _default(col: Column, expr: Any) -> None:
        col.has_default = not is_null(expr)
        col.default_unique = func_name(expr) in UNIQUE_GENERATORS

    def register_constraint(self, t: Table, c: Node, column: str | None) -> str | None:
        """Record a table constraint (and the unique index behind one); return its name."""
        kind = _KIND_OF.get(member(_CT, c.contype))
        if kind is None:
            return None
        name: str | None = c.conname
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
                keys = tuple(names(c.keys or ())) or ((column,) if column else ())
                self.model.put(
                    "index", (t.name[0], name), deployed, unique=True, table=t.name, columns=keys
                )
        return name

    def touch_new_column(self, t: Table, name: str, offset: int | None) -> None:
        """Remember where a column new to a deployed table was first touched in this file."""
        key = (t.name, name)
        if key not in self.file.touched:
            if self.override is not None:
                offset = self.override
            self.file.touched[key] = offset if offset is not None else self.offset


def implies_not_null(expr: Any, column: str) -> bool:
    """True when a CHECK expression can only pass with *column* not NULL.

    A CHECK passes when its expression is NULL, so only explicit null tests count:
    ``col IS NOT NULL``, ``NOT (col IS NULL)``, ``col IS DISTINCT FROM NULL``, and any
    ``AND`` with one of those as an arm.
    """
    if is_(expr, "NullTest"):
        return member(NullTestType, expr.nulltesttype) is NullTestType.IS_NOT_NULL and _is_column(
            expr.arg, column
        )
    if is_(expr, "BoolExpr"):
        args: Sequence[Any] = expr.args or ()
        boolop = member(BoolExprType, expr.boolop)
        if boolop is BoolExprType.AND_EXPR:
            return any(implies_not_null(a, column) for a in args)
        if boolop is BoolExprType.NOT_EXPR and len(args) == 1 and is_(args[0], "NullTest"):
            is_null_test = member(NullTestType, args[0].nulltesttype) is NullTestType.IS_NULL
            return is_null_test and _is_column(args[0].arg, column)
        return False
    if is_(expr, "A_Expr") and member(A_Expr_Kind, expr.kind) is A_Expr_Kind.AEXPR_DISTINCT:
        sides = (expr.lexpr, expr.rexpr)
        return any(_is_column(a, column) for a in sides) and any(is_null(a) for a in sides)
    return False


def _is_column(expr: Any, column: str) -> bool:
    if is_(expr, "TypeCast"):
        return _is_column(expr.arg, column)
    if is_(expr, "ColumnRef"):
        fields: Sequence[Any] = expr.fields or ()
        return bool(fields) and is_(fields[-1], "String") and fields[-1].sval == column
    return False


import spectral_core.compat.rules  # noqa: E402,F401  (registers the handlers)
