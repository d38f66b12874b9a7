"""Column types as the lint sees them, and the allowlist of compatible type changes.

A change is *compatible* when code written for the old type can still read and write the
column after the change.  Anything not on the allowlist is incompatible, and so is any change
whose old type is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from spectral_core.compat._node import Node, const_int, wrap

__all__ = ["TypeRef", "is_compatible", "needs_rewrite", "type_ref"]

_ALIASES = {
    "int": "int4",
    "integer": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "serial": "int4",
    "serial4": "int4",
    "smallserial": "int2",
    "serial2": "int2",
    "bigserial": "int8",
    "serial8": "int8",
    "real": "float4",
    "float": "float8",
    "decimal": "numeric",
    "boolean": "bool",
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
    "bit varying": "varbit",
}
SERIAL_TYPES = frozenset({"serial", "serial4", "smallserial", "serial2", "bigserial", "serial8"})

_INT_RANK = {"int2": 1, "int4": 2, "int8": 3}
_FLOAT_RANK = {"float4": 1, "float8": 2}
_PRECISION_TYPES = frozenset({"timestamp", "timestamptz", "time", "timetz", "interval"})


@dataclass(frozen=True)
class TypeRef:
    """A normalized type: name (schema-qualified unless built in), integer modifiers, array."""

    name: str
    mods: tuple[int, ...] = ()
    array: bool = False

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.mods))})" if self.mods else ""
        return f"{self.name}{mods}{'[]' if self.array else ''}"


def type_ref(tn: Node) -> TypeRef | None:
    """Normalize a pglast TypeName; None when it cannot be known statically (``%TYPE``)."""
    d = tn.d
    names = d.get("names")
    if d.get("pct_type") or not names:
        return None
    parts = [n["String"]["sval"] for n in names]
    if len(parts) == 2 and parts[0] == "pg_catalog":
        parts = parts[1:]
    name = ".".join(parts)
    name = _ALIASES.get(name, name)
    array = bool(d.get("arrayBounds"))
    mods: list[int] = []
    for m in d.get("typmods", ()):
        ival = const_int(wrap(m))
        if ival is None:
            return TypeRef(name + "(?)", (), array)
        mods.append(ival)
    if name in ("float4", "float8") and mods:  # float(p)
        name, mods = ("float4" if mods[0] <= 24 else "float8"), []
    return TypeRef(name, tuple(mods), array)


def _widening(old: TypeRef, new: TypeRef) -> bool:
    o, n = old.name, new.name
    if o == "varchar" and n == "text":
        return True
    if o == "text" and n == "varchar" and not new.mods:
        return True
    if o == n and o in ("varchar", "varbit") + tuple(_PRECISION_TYPES):
        if not new.mods:
            return True
        return bool(old.mods) and new.mods[0] >= old.mods[0]
    if o == n == "numeric":
        if not new.mods:
            return True
        if not old.mods:
            return False
        op, os_ = old.mods[0], old.mods[1] if len(old.mods) > 1 else 0
        np_, ns = new.mods[0], new.mods[1] if len(new.mods) > 1 else 0
        return ns >= os_ and np_ - ns >= op - os_
    if o in _INT_RANK and n in _INT_RANK:
        return _INT_RANK[n] >= _INT_RANK[o]
    if o in _FLOAT_RANK and n in _FLOAT_RANK:
        return _FLOAT_RANK[n] >= _FLOAT_RANK[o]
    return False


def is_compatible(old: TypeRef | None, new: TypeRef | None) -> bool:
    """True when the prior generation can still read and write a column changed old -> new."""
    if old is None or new is None:
        return False
    if old == new:
        return True
    if old.array != new.array:
        return False
    return _widening(TypeRef(old.name, old.mods), TypeRef(new.name, new.mods))


def needs_rewrite(old: TypeRef | None, new: TypeRef | None) -> bool:
    """True when PostgreSQL rewrites the table (and holds ACCESS EXCLUSIVE) for old -> new."""
    if old is None or new is None:
        return True
    if old == new:
        return False
    if old.array != new.array:
        return True
    o, n = old.name, new.name
    if (o, n) in (("varchar", "text"), ("text", "varchar")) and not new.mods:
        return False
    if o == n and o in ("varchar", "varbit"):
        return bool(new.mods) and (not old.mods or new.mods[0] < old.mods[0])
    if o == n == "numeric":
        if not new.mods:
            return False
        if not old.mods:
            return True
        same_scale = (old.mods[1:] or (0,)) == (new.mods[1:] or (0,))
        return not (same_scale and new.mods[0] >= old.mods[0])
    if o == n and o in _PRECISION_TYPES:
        return bool(new.mods) and (not old.mods or new.mods[0] < old.mods[0])
    return True
