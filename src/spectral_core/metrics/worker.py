"""A worker's process counters, kept in plain Python and snapshotted into ``core.workers``.

The workers have no HTTP surface (SPEC §5), so nothing scrapes them: the consumer counts
into a :class:`WorkerStats` (a dictionary lookup and an integer increment per handler call,
a bucket increment per call and per claimed batch) and the heartbeat writes
:meth:`WorkerStats.snapshot` to ``core.workers.metrics`` with each beat.  The API's
``GET /metrics`` reads every live worker's snapshot from there (ADR 0029).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = [
    "BATCH_BUCKETS",
    "DURATION_BUCKETS_S",
    "HandlerStats",
    "Histogram",
    "WorkerStats",
]

#: handler call durations, seconds (upper bounds; +Inf implied)
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: rows per non-empty claim (upper bounds; +Inf implied)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

#: the snapshot's format version (readers skip snapshots of another version)
SNAPSHOT_VERSION = 1


class Histogram:
    """Fixed buckets, non-cumulative counts (the last one is +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= value
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum}


class HandlerStats:
    """Counters of one handler."""

    __slots__ = ("dead", "duration", "failed", "handled", "retried")

    def __init__(self) -> None:
        #: calls whose effect committed
        self.handled = 0
        #: calls that raised when run alone (the row-by-row redo of a failed batch): the
        #: row is then retried or dead; a raise in the batch transaction is redone first
        self.failed = 0
        #: rows re-pended with backoff after this handler failed on them
        self.retried = 0
        #: rows that ended dead after this handler failed on them
        self.dead = 0
        self.duration = Histogram(DURATION_BUCKETS_S)

    def snapshot(self) -> dict[str, Any]:
        return {
            "handled": self.handled,
            "failed": self.failed,
            "retried": self.retried,
            "dead": self.dead,
            "duration_s": self.duration.snapshot(),
        }


class WorkerStats:
    """Every counter of one worker process (one per :class:`~spectral_core.Consumer`)."""

    __slots__ = ("claims", "handlers")

    #: the pseudo-handler under which rows no handler takes are counted (dead at once);
    #: registered handler names always contain a dot, so it cannot clash
    UNROUTABLE = "unroutable"

    def __init__(self) -> None:
        self.handlers: dict[str, HandlerStats] = {}
        self.claims = Histogram(BATCH_BUCKETS)

    def handler(self, name: str) -> HandlerStats:
        stats = self.handlers.get(name)
        if stats is None:
            stats = self.handlers[name] = HandlerStats()
        return stats

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy (written to ``core.workers.metrics``)."""
        return {
            "v": SNAPSHOT_VERSION,
            "buckets": {"duration_s": DURATION_BUCKETS_S, "claim_batch_rows": BATCH_BUCKETS},
            "handlers": {name: h.snapshot() for name, h in sorted(self.handlers.items())},
            "claim_batch_rows": self.claims.snapshot(),
        }
