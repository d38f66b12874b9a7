"""Live progress of a wait (``deploy drain``): remaining rows, rate, ETA.

On a terminal: one line rewritten in place with a carriage return.  With ``--json`` or
when stdout is not a terminal: one JSON line per interval, so a CI log or a pipe gets a
parseable record instead of control characters.  Plain text on purpose: a single status
line does not need ``rich`` (a dependency of the CLI for one line was not worth it).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

import msgspec

__all__ = ["DrainProgress"]

#: the rate is the decrease of the remaining rows over about this many seconds
RATE_WINDOW_S = 10.0


class DrainProgress:
    """Called with each count (``pending``, ``in_flight``) while a generation drains."""

    def __init__(
        self,
        generation: int,
        *,
        as_json: bool,
        interval_s: float,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generation = generation
        self.out = out if out is not None else sys.stdout
        self.as_json = as_json or not self.out.isatty()
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit: float | None = None
        self._line_open = False

    def rate(self) -> float | None:
        """Rows per second leaving the remaining count over the window (None: too early)."""
        if len(self._samples) < 2:
            return None
        (t0, r0), (t1, r1) = self._samples[0], self._samples[-1]
        if t1 - t0 <= 0:
            return None
        return (r0 - r1) / (t1 - t0)

    def __call__(self, pending: int, in_flight: int) -> None:
        now = self.clock()
        remaining = pending + in_flight
        self._samples.append((now, remaining))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        rate = self.rate()
        eta = remaining / rate if rate and rate > 0 else None
        if self.as_json:
            if self._last_emit is not None and now - self._last_emit < self.interval_s:
                return
            self._last_emit = now
            doc = {
                "event": "progress",
                "generation": self.generation,
                "pending": pending,
                "in_flight": in_flight,
                "remaining": remaining,
                "rate_per_s": None if rate is None else round(rate, 1),
                "eta_s": None if eta is None else round(eta, 1),
                "elapsed_s": round(now - self.started, 1),
            }
            self.out.write(msgspec.json.encode(doc).decode() + "\n")
        else:
            shown_rate = "-" if rate is None else f"{rate:,.1f}/s"
            shown_eta = "-" if eta is None else _duration(eta)
            line = (
                f"generation {self.generation}: {pending:,} pending, {in_flight:,} in flight, "
                f"{shown_rate}, ETA {shown_eta}, {_duration(now - self.started)} elapsed"
            )
            self.out.write("\r" + line.ljust(78) + "\x1b[K")
            self._line_open = True
        self.out.flush()

    def close(self) -> None:
        """End the in-place line (before the final summary)."""
        if self._line_open:
            self.out.write("\n")
            self.out.flush()
            self._line_open = False


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
