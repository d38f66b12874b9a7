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
from typing import Any

from pglast.parser import scan

__all__ = ["Marker", "MarkerScan", "PLACEHOLDER_REASONS", "Tokens", "scan_markers", "skip_trivia"]

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


class Tokens:
    """The starts and inclusive ends of a text's non-comment tokens (PostgreSQL's lexer),
    scanned on first use: most files never need them."""

    __slots__ = ("_ends", "_starts", "_text")

    def __init__(self, text: str, tokens: list[Any] | None = None) -> None:
        self._text = text
        self._starts: tuple[int, ...] | None = None
        self._ends: tuple[int, ...] = ()
        if tokens is not None:
            self._fill(tokens)

    def _fill(self, tokens: list[Any]) -> None:
        code = [t for t in tokens if t[2] not in _COMMENT_TOKENS]
        self._starts = tuple(t[0] for t in code)
        self._ends = tuple(t[1] for t in code)

    @property
    def starts(self) -> tuple[int, ...]:
        if self._starts is None:
            self._fill(scan(self._text))
        return self._starts or ()

    @property
    def ends(self) -> tuple[int, ...]:
        self.starts  # noqa: B018  (fills both)
        return self._ends


@dataclass(frozen=True)
class MarkerScan:
    """Markers of one file, the near misses (offset, message), and its tokens."""

    markers: tuple[Marker, ...]
    near_misses: tuple[tuple[int, str], ...]
    tokens: Tokens

    def reason(self, gate: str) -> str | None:
        """Return the reason of the first valid marker for *gate*, or None."""
        for m in self.markers:
            if m.gate == gate:
                return m.reason
        return None


_TRIVIA_START = frozenset(" \t\n\r\f\v-/")


def skip_trivia(text: str, pos: int) -> int:
    """The offset of the first character at or after *pos* that is not whitespace or part
    of a comment (``--`` to the end of the line, or a nested ``/* ... */``)."""
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch not in _TRIVIA_START:
            break
        if ch.isspace():
            pos += 1
        elif text.startswith("--", pos):
            end = text.find("\n", pos)
            pos = n if end == -1 else end + 1
        elif text.startswith("/*", pos):
            depth, pos = 1, pos + 2
            while pos < n and depth:
                if text.startswith("/*", pos):
                    depth, pos = depth + 1, pos + 2
                elif text.startswith("*/", pos):
                    depth, pos = depth - 1, pos + 2
                else:
                    pos += 1
        else:
            break
    return pos


def _may_hold_marker(sql: str) -> bool:
    """False only when no comment of *sql* can be a marker or a near miss.

    Every ``--`` comment token is the text from ``--`` to the end of its line, so judging each
    such span (in literals too: a superset) tells whether the lexer's comments can hold an
    attempt at a marker.  Block comments are rare: any ``/*`` means a real scan.
    """
    if "/*" in sql:
        return True
    pos = sql.find("--")
    while pos != -1:
        end = sql.find("\n", pos)
        if _attempted_gate(sql[pos : len(sql) if end == -1 else end]) is not None:
            return True
        pos = sql.find("--", pos + 2)
    return False


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

    The lexer runs only when a comment may hold a marker (or later, when a finding needs a
    token position); otherwise there is nothing to classify.

    Raises:
        pglast.parser.ParseError: the text does not even tokenize (unterminated literal).
    """
    if not _may_hold_marker(sql):
        return MarkerScan((), (), Tokens(sql))
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
    return MarkerScan(tuple(markers), tuple(near), Tokens(sql, tokens))
