"""Live traffic for the retention benchmarks (``bench_retention.py``, ``bench_partition_drop.py``).

:func:`live_run` runs, in this process, what a worker of the serving generation runs: the
real :class:`~spectral_core.Consumer` (the settings' lanes and batch, LISTEN on, one no-op
handler) and a heartbeat, while a producer publishes single events (one transaction each,
the real :class:`~spectral_core.Publisher`) at ``rate`` per second for ``seconds``.  The
latency of an event is its publisher's call start -> its handler start.  The producer is
an open loop with its own pools (one task per event on schedule, as independent requests
publish), so a slow publish on a loaded machine does not lower the rate.  An optional
``beside`` coroutine (the disturbance: a pruner, a partition drop) starts once the consumer
listens and is cancelled when the traffic has been handled.

It also reads the WAL position (``pg_current_wal_lsn()``) at the traffic's start and end, so
a run reports the WAL bytes written during it (the live traffic's own and the disturbance's).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from spectral_core import (
    Consumer,
    ConsumerConfig,
    Database,
    HandlerRegistry,
    Heartbeat,
    Publisher,
    Settings,
    open_pools,
)
from spectral_core.liveness import WorkerInfo

__all__ = ["LiveRun", "live_run", "pct", "wal_lsn", "wal_since"]

TOPIC = "bench.noop"

#: the disturbance: called with the pools and the monotonic time the traffic started
Beside = Callable[[Database, float], Awaitable[None]]


@dataclass
class LiveRun:
    """One run's events: (seconds after the traffic start the event was published, latency
    in ms), the events never handled, and the WAL bytes written from start to end."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    published: int = 0
    lost: int = 0
    wal_bytes: int = 0
    seconds: float = 0.0
    #: the machine's 1-minute load average when the run ended (a loaded box's runs vary)
    load_avg: float = 0.0

    def stats(self, start: float = 0.0, end: float = float("inf")) -> dict[str, Any]:
        """p50/p99 of the events published in [start, end) (seconds after the start)."""
        lat = [ms for at, ms in self.samples if start <= at < end]
        if not lat:
            return {"events": 0, "p50_ms": None, "p99_ms": None}
        return {
            "events": len(lat),
            "p50_ms": round(pct(lat, 0.50), 2),
            "p99_ms": round(pct(lat, 0.99), 2),
        }


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def wal_lsn(db: Database) -> str:
    async with db.pool.connection() as conn:
        cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def wal_since(db: Database, lsn: str) -> int:
    async with db.pool.connection() as conn:
        cur = await conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def live_run(
    settings: Settings,
    *,
    rate: float,
    seconds: float,
    beside: Beside | None = None,
    key_prefix: str = "live",
    stop: anyio.Event | None = None,
) -> LiveRun:
    """Publish ``rate`` events/s for ``seconds`` (or until ``stop`` is set) to
    ``settings.generation`` and handle them; run ``beside`` next to it.  Waits up to 30 s
    for the last events to be handled."""
    run = LiveRun()
    started: dict[str, float] = {}
    t_start = 0.0
    registry = HandlerRegistry()

    async def noop(event: Any, conn: Any) -> None:
        t0 = started.pop(event.idempotency_key, None)
        if t0 is not None:
            now = time.monotonic()
            run.samples.append((t0 - t_start, (now - t0) * 1000))

    registry.register("bench.noop", TOPIC, noop)
    generation = settings.generation
    assert generation is not None
    async with open_pools(settings) as db:
        worker_id = uuid.uuid4()
        consumer = Consumer(
            db,
            generation=generation,
            worker_id=worker_id,
            registry=registry,
            config=ConsumerConfig.from_settings(settings),
        )
        heartbeat = Heartbeat(
            db, WorkerInfo(worker_id, generation, "bench", 0, "bench"), interval_s=2.0
        )
        publisher = Publisher(generation)

        async def publish(i: int) -> None:
            run.published += 1
            key = f"{key_prefix}-{uuid.uuid4().hex[:12]}-{i}"
            started[key] = time.monotonic()
            async with producers.connection() as conn, conn.transaction():
                await publisher.publish_async(conn, TOPIC, {"i": i}, idempotency_key=key)

        async def produce() -> None:
            # open loop, as independent requests publish: one task per event on schedule, so
            # a slow publish delays neither the next one nor the rate
            n = int(rate * seconds)
            async with anyio.create_task_group() as pubs:
                for i in range(n):
                    if stop is not None and stop.is_set():
                        break
                    delay = t_start + i / rate - time.monotonic()
                    if delay > 0:
                        await anyio.sleep(delay)
                    pubs.start_soon(publish, i)

        # the publishers' own pools (an API process's, in production), not the consumer's
        async with open_pools(settings) as api_db, heartbeat:
            producers = api_db.pool
            await heartbeat.register()
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer.run)
                await anyio.sleep(1.0)  # the consumer listens
                lsn0 = await wal_lsn(db)
                t_start = time.monotonic()
                if beside is not None:
                    tg.start_soon(beside, db, t_start)
                await produce()
                with anyio.move_on_after(30):
                    while started:
                        await anyio.sleep(0.05)
                run.seconds = time.monotonic() - t_start
                run.wal_bytes = await wal_since(db, lsn0)
                consumer.stop()
                tg.cancel_scope.cancel()
    run.lost = len(started)
    run.load_avg = round(os.getloadavg()[0], 2)
    return run
