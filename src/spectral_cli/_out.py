"""Results on stdout: a JSON document with ``--json``, else text lines for a person.

Log lines never come here (they go to stderr, see ``main``), so ``--json`` output can be
piped into ``jq`` as it is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec

__all__ = ["add_json_flag", "emit", "to_json", "table"]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def to_json(obj: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode() + "\n")


def emit(args: argparse.Namespace, doc: object, text: str) -> None:
    """``doc`` as JSON when the verb was given ``--json``, else ``text``."""
    if getattr(args, "json", False):
        to_json(doc)
    else:
        print(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: columns as wide as their widest cell, ``-`` for a missing value."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
