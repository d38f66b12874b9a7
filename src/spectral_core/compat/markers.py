"""Waiver markers, found only in real comment tokens of pglast's scanner.

A valid marker is a ``--`` line comment of exactly this shape::

    -- compat: breaking (reason: <non-empty text>)
    -- locking: accepted (reason: <non-empty text>)

Anything that looks like an attempt at one (misspelt keyword, wrong verb, empty or placeholder
reason, ``/* block comment */``) is a near miss: an error that waives nothing.  Text inside string
literals or dollar-quoted bodies is never a comment token, so it is never a marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pglast.parser import scan

__all__ = ["Marker", "MarkerScan", "PLACEHOLDER_REASONS", "scan_markers"]

# Regexes here run over the text of one comment token, never over SQL.
_VALID = {
    "compat": re.compile(r"^--\s*compat:\s*breaking\s*\(\s*reason:\s*(?P<reason>.*?)\s*\)\s*$"),
    "locking": re.compile(r"^--\s*locking:\s*accepted\s*\(\s*reason:\s*(?P<reason>.*?)\s*\)\s*$"),
}
_WORDS = re.compile(r"[a-z]+")

#: Reasons that say nothing; a marker carrying one is a near miss.
PLACEHOLDER_REASONS = frozenset(
    {
        "",
        "...",
        "…",
        "todo",
        "tbd",
        "xxx",
        "fixme",
        "n/a",
        "na",
        "none",
        "-",
        "?",
        "reason",
        "<reason>",
        "<non-empty text>",
        "<text>",
        "...)",
        "placeholder",
        "wip",
        "later",
        ".",
    }
)

_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})
_KEYWORDS = {"compat": ("breaking",), "locking": ("accepted",)}


@dataclass(frozen=True)
class Marker:
    """A valid marker: which gate it waives, its reason and where it is."""

    gate: str
    reason: str
    offset: int


@dataclass(frozen=True)
class MarkerScan:
    """Markers of one file, the near misses (offset, message), and the scanner tokens."""

    markers: tuple[Marker, ...]
    near_misses: tuple[tuple[int, str], ...]
    token_starts: tuple[int, ...]  # starts of non-comment tokens, ascending
    token_ends: tuple[int, ...]  # matching inclusive ends

    def reason(self, gate: str) -> str | None:
        """Return the reason of the first valid marker for *gate*, or None."""
        for m in self.markers:
            if m.gate == gate:
                return m.reason
        return None


def _close(word: str, target: str) -> bool:
    """True when *word* is within edit distance 2 of *target*."""
    if word == target:
        return True
    if abs(len(word) - len(target)) > 2:
        return False
    prev = list(range(len(target) + 1))
    for i, a in enumerate(word, 1):
        cur = [i]
        for j, b in enumerate(target, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] <= 2


def _one_edit(word: str) -> frozenset[str]:
    """Every spelling within one edit (delete, transpose, replace, insert) of *word*."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in letters}
    out |= {a + c + b for a, b in splits for c in letters}
    return frozenset(out)


_GATE_SPELLINGS = {gate: _one_edit(gate) for gate in _KEYWORDS}


def _attempted_gate(text: str) -> str | None:
    """Return the gate a comment seems to aim at, or None for an ordinary comment.

    An attempt is a word within one edit of ``compat`` / ``locking`` that is followed by a
    colon or accompanied by a word within two edits of the verb (``breaking`` / ``accepted``).
    """
    low = text.lower()
    words = _WORDS.findall(low)
    for gate, verbs in _KEYWORDS.items():
        spellings = _GATE_SPELLINGS[gate]
        for i, w in enumerate(words):
            if w not in spellings:
                continue
            after = low[low.find(w) + len(w) :].lstrip()
            if after.startswith(":") or any(
                _close(v, verb) for v in words[i + 1 :] for verb in verbs
            ):
                return gate
    return None


def _judge(text: str) -> tuple[Marker | None, str | None]:
    """Classify one comment token: a valid marker, a near miss (message), or neither."""
    is_line = text.startswith("--")
    gate = _attempted_gate(text)
    if gate is None:
        return None, None
    if not is_line:
        return None, f"{gate} marker in a block comment; use a `--` line comment"
    m = _VALID[gate].match(text.rstrip())
    if m is None:
        verb = _KEYWORDS[gate][0]
        return None, (
            f"malformed {gate} marker {text.strip()!r}; "
            f"expected `-- {gate}: {verb} (reason: <why this is safe>)`"
        )
    reason = m.group("reason").strip()
    if reason.lower().strip("\"'`") in PLACEHOLDER_REASONS or not any(c.isalnum() for c in reason):
        return None, f"{gate} marker has an empty or placeholder reason {reason!r}"
    return Marker(gate, reason, 0), None


def scan_markers(sql: str) -> MarkerScan:
    """Scan *sql* with PostgreSQL's lexer and classify its comment tokens.

    Raises:
        pglast.parser.ParseError: the text does not even tokenize (unterminated literal).
    """
    markers: list[Marker] = []
    near: list[tuple[int, str]] = []
    tokens = scan(sql)  # Token(start, end, name, kind); end is inclusive
    for start, end, name, _ in tokens:
        if name in _COMMENT_TOKENS:
            marker, problem = _judge(sql[start : end + 1])
            if marker is not None:
                markers.append(Marker(marker.gate, marker.reason, start))
            elif problem is not None:
                near.append((start, problem))
    code = [t for t in tokens if t[2] not in _COMMENT_TOKENS]
    starts = tuple(t[0] for t in code)
    ends = tuple(t[1] for t in code)
    return MarkerScan(tuple(markers), tuple(near), starts, ends)
