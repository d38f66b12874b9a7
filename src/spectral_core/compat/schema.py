"""The in-memory schema model that migrations are replayed into.

Every object carries ``deployed``: True when the prior generation can know it (it comes from a
deployed migration, or it is referenced without being created, which counts as an existing,
populated object of the prior generation); False when a migration not yet deployed created it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spectral_core.compat.typecompat import TypeRef

__all__ = ["Column", "Constraint", "QualName", "SchemaModel", "SchemaObject", "Table", "display"]

QualName = tuple[str, str]  # (schema, name); schema "" for schemas themselves


def _quote(ident: str) -> str:
    if (
        ident
        and (ident[0].isalpha() or ident[0] == "_")
        and all(c.islower() or c.isdigit() or c == "_" or c == "$" for c in ident)
    ):
        return ident
    return '"' + ident.replace('"', '""') + '"'


def display(qn: QualName, column: str | None = None) -> str:
    """Render a qualified name as SQL would (quoting where needed)."""
    parts = [p for p in qn if p] + ([column] if column is not None else [])
    return ".".join(_quote(p) for p in parts)


@dataclass
class Column:
    """A column: its type (None when unknown) and what inserts that omit it will see."""

    name: str
    type: TypeRef | None
    deployed: bool
    not_null: bool = False
    has_default: bool = False  # a non-null default (or serial / identity)
    generated: bool = False  # GENERATED ... STORED: never written by clients
    identity: str = ""  # "a" GENERATED ALWAYS, "d" BY DEFAULT, "" none
    default_unique: bool = False  # the default fills distinct values (identity, uuid, nextval)
    not_null_by: str = ""  # how a column is NOT NULL in effect when not by NOT NULL itself
    #: a column added to a populated table in this file: existing rows may hold NULL in it
    #: (added without a default and not backfilled yet)
    rows_null: bool = False
    #: existing rows may hold equal non-null values in it (filled by a constant default or an
    #: UPDATE); a column added without default holds NULLs, which never collide
    rows_dup: bool = False
    #: a uniqueness rule on it was accepted because old writes leave it NULL: a later
    #: constant DEFAULT would make them collide
    unique_by_null: bool = False


@dataclass
class Constraint:
    """A named table constraint; kind: unique, primary, exclusion, check, foreign or notnull."""

    kind: str
    deployed: bool


@dataclass
class Table:
    """A table, with its columns when they are known."""

    name: QualName
    deployed: bool
    columns: dict[str, Column] = field(default_factory=dict)
    columns_known: bool = True
    #: a new table filled in this run (INSERT ... SELECT, CREATE TABLE AS, COPY, several
    #: VALUES rows); deployed tables are always taken as populated
    filled: bool = False
    constraints: dict[str, Constraint] = field(default_factory=dict)

    @property
    def populated(self) -> bool:
        """The table may hold rows that a constraint or NOT NULL must accept."""
        return self.deployed or self.filled

    def column(self, name: str) -> Column | None:
        return self.columns.get(name)


@dataclass
class SchemaObject:
    """Any other object: view, matview, function, type, sequence, schema, index, extension."""

    kind: str
    name: QualName
    deployed: bool
    unique: bool = False  # indexes
    table: QualName | None = None  # indexes
    columns: tuple[str, ...] = ()  # indexes: key columns (empty when unknown/expressions)
    partial: bool = False  # indexes: with a WHERE clause
    domain: bool = False  # types: a domain
    not_null: bool = False  # domains: NOT NULL (or CHECK (VALUE IS NOT NULL))
    has_default: bool = False  # domains: a non-null DEFAULT


@dataclass
class SchemaModel:
    """Tables and other objects by qualified name, plus the session's search_path."""

    tables: dict[QualName, Table] = field(default_factory=dict)
    objects: dict[tuple[str, QualName], SchemaObject] = field(default_factory=dict)
    search_path: list[str] = field(default_factory=lambda: ["public"])
    #: True once deployed migrations were replayed: the model then knows every view and
    #: function the prior generation has, so an unknown one is new.
    has_baseline: bool = False
    domains: int = 0  # domains created so far (a column's type is looked up only if any)

    def qualify(self, schema: str | None, name: str, kind: str = "table") -> QualName:
        """Resolve *name* through the search_path when it is not schema-qualified."""
        if schema:
            return (schema, name)
        for s in self.search_path:
            qn = (s, name)
            if (qn in self.tables) if kind == "table" else ((kind, qn) in self.objects):
                return qn
        return (self.search_path[0] if self.search_path else "public", name)

    def table(self, qn: QualName) -> Table:
        """Return the table *qn*; an unknown one is existing and populated, of unknown shape."""
        t = self.tables.get(qn)
        if t is None:
            t = self.tables[qn] = Table(qn, deployed=True, columns_known=False)
        return t

    def obj(self, kind: str, qn: QualName) -> SchemaObject | None:
        return self.objects.get((kind, qn))

    def is_new(self, kind: str, qn: QualName) -> bool:
        """True when a migration not yet deployed created the object (so nothing old uses it)."""
        if kind == "table":
            t = self.tables.get(qn)
            return t is not None and not t.deployed
        o = self.objects.get((kind, qn))
        return o is not None and not o.deployed

    def put(self, kind: str, qn: QualName, deployed: bool, **extra: object) -> SchemaObject:
        """Create (or keep, when it already exists) the object *qn*."""
        key = (kind, qn)
        o = self.objects.get(key)
        if o is None:
            o = self.objects[key] = SchemaObject(kind, qn, deployed, **extra)  # type: ignore[arg-type]
        return o

    def drop(self, kind: str, qn: QualName) -> None:
        if kind == "table":
            self.tables.pop(qn, None)
            for key in [k for k, o in self.objects.items() if o.table == qn]:
                del self.objects[key]
        elif kind == "schema":
            schema = qn[1]
            for tqn in [t for t in self.tables if t[0] == schema]:
                self.drop("table", tqn)
            for key in [k for k in self.objects if k[1][0] == schema]:
                del self.objects[key]
            self.objects.pop((kind, qn), None)
        else:
            self.objects.pop((kind, qn), None)

    def move(self, kind: str, old: QualName, new: QualName) -> None:
        """Rename or re-schema an object, keeping its deployed flag."""
        if kind == "table":
            t = self.tables.pop(old, None)
            if t is not None:
                t.name = new
                self.tables[new] = t
                for o in self.objects.values():
                    if o.table == old:
                        o.table = new
        else:
            obj = self.objects.pop((kind, old), None)
            if obj is not None:
                obj.name = new
                self.objects[(kind, new)] = obj
