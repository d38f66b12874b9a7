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
    {"", "...", "…", "todo", "tbd", "xxx", "fixme", "n/a", "na", "none", "-", "?", "reason",
     "<reason>", "<non-empty text>", "<text>", "...)", "placeholder", "wip", "later", "."}
)

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
    """True when *word* is within edit distance 2 of *target* (1 for short targets)."""
    if word == target:
        return True
    limit = 1 if len(target) <= 6 else 2
    if abs(len(word) - len(target)) > limit:
        return False
    prev = list(range(len(target) + 1))
    for i, a in enumerate(word, 1):
        cur = [i]
        for j, b in enumerate(target, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] <= limit


def _attempted_gate(body: str) -> str | None:
    """Return the gate a comment seems to be aiming at, or None for an ordinary comment."""
    low = body.lower()
    words = _WORDS.findall(low)
    for gate, verbs in _KEYWORDS.items():
        hits = [i for i, w in enumerate(words) if _close(w, gate)]
        if not hits:
            continue
        rest = set(words[hits[0] + 1 :])
        if any(_close(w, v) for w in rest for v in verbs) or "reason" in rest:
            return gate
        # "compat:" / "locking:" as a leading keyword is an attempt even without a verb.
        stripped = low.lstrip("-/* \t")
        first = words[hits[0]]
        if stripped.startswith(first) and stripped[len(first) :].lstrip().startswith(":"):
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
    starts: list[int] = []
    ends: list[int] = []
    for tok in scan(sql):
        if tok.name == "SQL_COMMENT" or tok.name == "C_COMMENT":
            text = sql[tok.start : tok.end + 1]
            marker, problem = _judge(text)
            if marker is not None:
                markers.append(Marker(marker.gate, marker.reason, tok.start))
            elif problem is not None:
                near.append((tok.start, problem))
        else:
            starts.append(tok.start)
            ends.append(tok.end)
    return MarkerScan(tuple(markers), tuple(near), tuple(starts), tuple(ends))
