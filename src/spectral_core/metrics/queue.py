"""Queue truth from PostgreSQL for ``GET /metrics``: read with cheap statements, cached.

:class:`QueueStats` runs the statements of ``sql/metrics.sql`` (each reads a partial index
holding only the rows it counts) at most once per ``cache_s``: concurrent scrapes wait for
the one read under way and share its result, so any number of scrapers costs one round of
queries per interval.  A read that fails leaves :attr:`QueueStats.snapshot` as ``None``
(the exposition then says ``spectral_queue_stats_up 0`` and shows no stale gauges).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from ..db import Database
from ..db._wrap import wrap_errors
from ..errors import DatabaseError
from ..sql import query

__all__ = ["QueueSnapshot", "QueueStats", "WorkerRow"]

log = structlog.get_logger("spectral.metrics")


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One worker that has not exited, as ``core.workers`` shows it."""

    id: str
    generation: int
    #: ``running`` / ``reconnecting``, or ``lost`` when its heartbeat is older than the
    #: stale bound (the reapers treat it as dead)
    state: str
    heartbeat_age_s: float
    reconnects: int
    metrics: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    #: (generation, status) -> rows, for pending / in_flight / dead
    outbox: dict[tuple[int, str], int]
    #: generation -> age in seconds of its oldest pending row
    outbox_oldest_pending_s: dict[int, float]
    #: (generation, status) -> turns, for pending / running / dead
    turns: dict[tuple[int, str], int]
    turns_oldest_pending_s: dict[int, float]
    workers: list[WorkerRow]
    #: table -> the planner's row estimate (absent: never analyzed)
    estimates: dict[str, float]
    read_at: float
    read_seconds: float
    generations: set[int] = field(default_factory=set)
    #: (generation, state) -> API processes not exited: running / reconnecting / lost
    api_processes: dict[tuple[int, str], int] = field(default_factory=dict)

    def stranded(self, generation: int) -> bool:
        """Live work (pending or in-flight rows or turns) and no live worker to take it."""
        live = sum(self.outbox.get((generation, s), 0) for s in ("pending", "in_flight")) + sum(
            self.turns.get((generation, s), 0) for s in ("pending", "running")
        )
        if not live:
            return False
        return not any(w.generation == generation and w.state != "lost" for w in self.workers)


class QueueStats:
    """Cached, single-flight reads of the queue gauges."""

    def __init__(self, db: Database, *, cache_s: float, stale_after_s: float) -> None:
        self.db = db
        self.cache_s = cache_s
        self.stale_after_s = stale_after_s
        self.snapshot: QueueSnapshot | None = None
        #: statements run so far (tests: many scrapes within ``cache_s`` cost one read)
        self.reads = 0
        self._lock = anyio.Lock()
        self._fresh_until = float("-inf")

    async def refresh(self) -> QueueSnapshot | None:
        """The snapshot, read again if older than ``cache_s``; None if the read failed."""
        if time.monotonic() < self._fresh_until:
            return self.snapshot
        async with self._lock:
            if time.monotonic() < self._fresh_until:  # read by the scrape we waited for
                return self.snapshot
            try:
                self.snapshot = await self._read()
            except DatabaseError as exc:
                log.warning("metrics.queue_read_failed", error=exc.message)
                self.snapshot = None
            self._fresh_until = time.monotonic() + self.cache_s
            return self.snapshot

    async def _read(self) -> QueueSnapshot:
        started = time.perf_counter()
        self.reads += 1
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                outbox = await (await conn.execute(query("metrics_outbox"))).fetchall()
                turns = await (await conn.execute(query("metrics_turns"))).fetchall()
                workers = await (await conn.execute(query("metrics_workers"))).fetchall()
                api = await (
                    await conn.execute(
                        query("metrics_api_processes"), {"stale_after_s": self.stale_after_s}
                    )
                ).fetchall()
                estimates = await (await conn.execute(query("metrics_estimates"))).fetchall()
        gens: set[int] = set()
        counts: dict[tuple[int, str], int] = {}
        oldest: dict[int, float] = {}
        for g, status, n, age in outbox:
            gens.add(g)
            counts[(g, status)] = n
            if age is not None:
                oldest[g] = max(0.0, age)
        turn_counts: dict[tuple[int, str], int] = {}
        turn_oldest: dict[int, float] = {}
        for g, status, n, age in turns:
            gens.add(g)
            turn_counts[(g, status)] = n
            if age is not None:
                turn_oldest[g] = max(0.0, age)
        rows = []
        for wid, g, state, age, reconnects, metrics in workers:
            gens.add(g)
            if age > self.stale_after_s:
                state = "lost"
            rows.append(
                WorkerRow(
                    id=str(wid),
                    generation=g,
                    state=state,
                    heartbeat_age_s=max(0.0, age),
                    reconnects=reconnects,
                    metrics=metrics if isinstance(metrics, dict) else None,
                )
            )
        return QueueSnapshot(
            outbox=counts,
            outbox_oldest_pending_s=oldest,
            turns=turn_counts,
            turns_oldest_pending_s=turn_oldest,
            workers=rows,
            estimates={name: n for name, n in estimates if n >= 0},
            read_at=time.time(),
            read_seconds=time.perf_counter() - started,
            generations=gens,
            api_processes={(g, state): n for g, state, n in api},
        )
