"""The JSON nesting bound of decision inputs and outputs (``Budget.json_depth``).

Deeply nested JSON is cheap to send and expensive to take apart: a decoder recurses once
per level, so a document of a few kilobytes can exhaust the interpreter's recursion limit.
Decisions are bounded to ``json_depth`` nested arrays/objects on both sides of the sandbox
(``docs/reference/sandbox-abi.md``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["exceeds_depth", "may_exceed_depth"]


def may_exceed_depth(document: bytes, limit: int) -> bool:
    """Whether the JSON ``document`` *could* nest deeper than ``limit`` containers.

    A cheap filter (a length test, then two ``bytes.count`` calls): a document with at most
    ``limit`` opening brackets cannot nest deeper.  False positives (brackets inside
    strings, wide documents) are settled by :func:`exceeds_depth` on the decoded value.
    """
    if len(document) <= limit:  # the usual decision: fewer bytes than the bound
        return False
    return document.count(b"[") + document.count(b"{") > limit


def exceeds_depth(value: Any, limit: int) -> bool:
    """Whether a decoded JSON ``value`` nests more than ``limit`` arrays/objects.

    Iterative (no recursion, whatever the depth); a scalar has depth 0, ``[]`` depth 1.
    """
    if type(value) not in (list, dict):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) in (list, dict):
                stack.append((child, depth + 1))
    return False
