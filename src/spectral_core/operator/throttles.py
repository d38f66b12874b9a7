"""Recent 429s per tenant, in this process's memory, for the console's tenant view.

The API's metrics never label by tenant (an org name is tenant-supplied: unbounded label
sets); the console still needs "who is being throttled".  :class:`RecentThrottles` counts
refusals per (org, limit) in fixed time buckets over a sliding window and forgets the rest.
It is bounded: at most ``max_orgs`` orgs are kept (the least recently throttled goes
first).  Counts are this process's own: with several API processes each shows the part it
refused (ADR 0038).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from ..errors import ConfigError

__all__ = ["LIMIT_KINDS", "RecentThrottles"]

#: the limits a 429 can come from
LIMIT_KINDS: Final = ("rate", "concurrency")


class RecentThrottles:
    """429 counts per org and limit kind over the last ``window_s`` seconds.

    Args:
        window_s: How far back counts reach.
        buckets: Buckets the window is cut into (counts leave the window one bucket at a time).
        max_orgs: Orgs kept at most.
        clock: Monotonic clock (tests).

    Raises:
        ConfigError: Bad bounds.
    """

    def __init__(
        self,
        *,
        window_s: float = 300.0,
        buckets: int = 30,
        max_orgs: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or buckets < 1 or max_orgs < 1:
            raise ConfigError("invalid throttle window bounds")
        self.window_s = window_s
        self._width = window_s / buckets
        self._buckets = buckets
        self._max_orgs = max_orgs
        self._clock = clock
        #: org -> {bucket index: [rate, concurrency]}
        self._orgs: OrderedDict[str, dict[int, list[int]]] = OrderedDict()

    def _index(self) -> int:
        return int(self._clock() // self._width)

    def record(self, org: str, kind: str) -> None:
        """Count one 429 of ``org`` by limit ``kind`` (``rate`` / ``concurrency``)."""
        slot = 0 if kind == "rate" else 1
        now = self._index()
        buckets = self._orgs.get(org)
        if buckets is None:
            if len(self._orgs) >= self._max_orgs:
                self._orgs.popitem(last=False)
            buckets = self._orgs[org] = {}
        else:
            self._orgs.move_to_end(org)
        for old in [i for i in buckets if i <= now - self._buckets]:
            del buckets[old]
        counts = buckets.get(now)
        if counts is None:
            counts = buckets[now] = [0, 0]
        counts[slot] += 1

    def counts(self, org: str) -> dict[str, int]:
        """``{"rate": n, "concurrency": n}`` of ``org`` within the window."""
        buckets = self._orgs.get(org)
        out = [0, 0]
        if buckets:
            oldest = self._index() - self._buckets
            for i, (rate, conc) in buckets.items():
                if i > oldest:
                    out[0] += rate
                    out[1] += conc
        return {"rate": out[0], "concurrency": out[1]}
