"""SQL loader: every statement lives in ``*.sql`` files of this package.

Files hold blocks introduced by a ``-- name: <query_name>`` line, optionally followed by
``-- description`` comment lines, then the statement with ``%(param)s`` placeholders.
:func:`queries` returns them by name as ``LiteralString`` so only vetted SQL reaches
``execute``.  Every object is schema-qualified (``core.``): nothing relies on
``search_path``, so the same text runs through a transaction pooler.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import LiteralString, cast

__all__ = ["query", "queries"]

_HEADER = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def _parse(text: str) -> dict[str, LiteralString]:
    out: dict[str, LiteralString] = {}
    parts = _HEADER.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.startswith("-- ")]
        statement = "\n".join(lines).strip().rstrip(";")
        if name in out:
            raise ValueError(f"duplicate query name {name!r}")
        out[name] = cast(LiteralString, statement)
    return out


@cache
def queries() -> dict[str, LiteralString]:
    """All named queries of every ``*.sql`` file in this package."""
    result: dict[str, LiteralString] = {}
    for entry in sorted(files(__package__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, statement in _parse(entry.read_text("utf-8")).items():
                if name in result:
                    raise ValueError(f"duplicate query name {name!r} in {entry.name}")
                result[name] = statement
    return result


def query(name: str) -> LiteralString:
    """One statement by name (``KeyError`` if there is none)."""
    return queries()[name]
