"""A thin, lazy view over libpg_query's JSON parse tree.

pglast's Python AST is exact but builds and validates every node in Python, which costs more
than the whole lint.  The parser's JSON output is produced in C; :class:`Node` wraps a JSON
object and hands out children on attribute access, with pglast's attribute names (``def_``
for ``def``) and missing fields read as None.  Enum values are their names (``"AT_AddColumn"``).
Locations in the JSON are UTF-8 byte offsets; :class:`CharOffsets` maps them to characters.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable
from typing import Any

from pglast.parser import parse_sql_json

__all__ = ["CharOffsets", "Node", "const_int", "const_text", "decode", "is_", "parse", "wrap"]


_UPGRADE_AFTER = 16
_decoded = 0
_decode: Callable[[str], Any] = json.loads


def decode(data: str) -> Any:
    """Decode the parser's JSON.  msgspec decodes faster than :func:`json.loads` but costs
    more to import than a one-file run spends decoding, so a run switches to it only from its
    16th parse on (figures: docs/performance.md, "Figures moved out of the code")."""
    global _decoded, _decode
    _decoded += 1
    if _decoded == _UPGRADE_AFTER:
        import msgspec

        _decode = msgspec.json.Decoder().decode
    return _decode(data)


class Node:
    """One parse-tree node: ``tag`` is its type name ("" for an untagged struct field).

    A field is wrapped on first access and kept in the instance dict, so later accesses are
    plain attribute reads.
    """

    def __init__(self, tag: str, d: dict[str, Any]) -> None:
        self.tag = tag
        self.d = d

    def __getattr__(self, name: str) -> Any:
        value = self.d.get(name)
        if value is not None and type(value) not in _SCALARS:
            value = wrap(value)
        self.__dict__[name] = value
        return value

    @property
    def def_(self) -> Any:
        """The ``def`` field (a Python keyword)."""
        return wrap(self.d.get("def"))

    def __repr__(self) -> str:
        return f"Node({self.tag}, {self.d!r})"


_SCALARS = frozenset({str, int, bool, float})


def wrap(value: Any) -> Any:
    """Wrap a JSON value: tagged objects and plain structs become Nodes, lists stay lists."""
    kind = type(value)
    if kind is dict:
        if len(value) == 1:
            [(key, inner)] = value.items()
            if type(inner) is dict and "A" <= key[0] <= "Z":
                if key == "List":
                    return [wrap(v) for v in inner.get("items", ())]
                return Node(key, inner)
        return Node("", value)
    if kind is list:
        return [wrap(v) for v in value]
    return value


def is_(node: Any, tag: str) -> bool:
    """True when *node* is a Node of type *tag*."""
    return isinstance(node, Node) and node.tag == tag


def const_int(node: Any) -> int | None:
    """The integer value of an ``A_Const`` integer (zero is an omitted field), else None."""
    if is_(node, "A_Const") and "ival" in node.d:
        return int(node.d["ival"].get("ival", 0))
    return None


def const_text(node: Any) -> str | None:
    """The value of an ``A_Const`` as text (strings, numbers, booleans); None for NULL/other."""
    if not is_(node, "A_Const"):
        return None
    d = node.d
    for key in ("sval", "fval", "bsval"):
        if key in d:
            return str(d[key].get(key, ""))
    if "ival" in d:
        return str(d["ival"].get("ival", 0))
    if "boolval" in d:
        return "true" if d["boolval"].get("boolval") else "false"
    return None


class CharOffsets:
    """Maps UTF-8 byte offsets of a text to character offsets (identity for ASCII)."""

    __slots__ = ("_starts",)

    def __init__(self, text: str) -> None:
        if text.isascii():
            self._starts: list[int] | None = None
            return
        starts, pos = [], 0
        for ch in text:
            starts.append(pos)
            pos += len(ch.encode("utf-8"))
        self._starts = starts

    def __call__(self, byte_offset: int) -> int:
        if self._starts is None:
            return byte_offset
        return max(bisect.bisect_right(self._starts, byte_offset) - 1, 0)


def parse(text: str) -> tuple[list[tuple[Node, int]], CharOffsets]:
    """Parse *text*; return its statements with their character offsets, and the mapper.

    Raises:
        pglast.parser.ParseError: the text does not parse (``args[1]`` is the character offset).
    """
    tree = decode(parse_sql_json(text))
    chars = CharOffsets(text)
    out = []
    for raw in tree.get("stmts", ()):
        node = wrap(raw.get("stmt"))
        if isinstance(node, Node):
            out.append((node, chars(raw.get("stmt_location", 0))))
    return out, chars
