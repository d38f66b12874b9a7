"""The drain's cost layer by layer: client and server CPU of each piece of a batch.

    python bench/drain_layers.py                 # 300 batches of 100, embedded PostgreSQL
    python bench/drain_layers.py --batches 500

A whole drain (``bench/paired_commits.py --only drain``) gives the CPU per event of the
sum; this script takes the pieces apart on one connection, without lanes, so what it
reports is CPU (not wall time, which on a shared box is mostly waiting for a core):

* server: the backend's time on CPU from ``/proc/<pid>/schedstat`` (nanoseconds), around
  each timed statement; client: ``time.process_time()`` around the same await;
* per batch of ``--batch`` rows: the claim through ``core.outbox_claim_v1`` against the same
  statement sent inline (what a function call adds), the start through
  ``core.outbox_start_v2`` (in ``BEGIN`` ... ``COMMIT``), and an empty ``BEGIN``/``COMMIT``
  pair (what the two messages of their own cost);
* per handler call, in the process: the consumer's ``_run_handler`` (duration histogram,
  the failed-transaction check, the tracing switch) against a bare ``await handler(...)``;
  per batch: ``tracer()`` with tracing off, the session recorder's check of a connection
  already recorded, and a pool checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

INLINE_CLAIM = """
WITH c AS (
    SELECT o.id FROM core.outbox AS o
    WHERE o.generation = %(generation)s AND o.status = 'pending' AND o.available_at <= now()
    ORDER BY o.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE core.outbox AS o
SET status = 'in_flight', attempts = o.attempts + 1, claimed_at = now(),
    claimed_by = %(worker_id)s
FROM c
WHERE o.id = c.id
RETURNING o.id, o.generation, o.topic, o.payload, o.idempotency_key, o.attempts,
          o.created_at, o.trace_parent
"""


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


class Meter:
    """Client and server CPU of the awaits it wraps, summed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.client = 0.0
        self.server = 0.0
        self.n = 0

    async def run(self, coro: Any) -> Any:
        s0, c0 = backend_ns(self.pid), time.process_time()
        out = await coro
        self.client += time.process_time() - c0
        self.server += (backend_ns(self.pid) - s0) / 1e9
        self.n += 1
        return out

    def per(self, k: int) -> tuple[float, float]:
        return self.client / k * 1e6, self.server / k * 1e6


async def db_layers(
    url: str, batches: int, batch: int, prepare_threshold: int | None
) -> dict[str, tuple[float, float]]:
    import psycopg

    from spectral_core.generations import allocate_generation
    from spectral_core.outbox import EventIn, Publisher
    from spectral_core.outbox.claim import Claimer
    from spectral_core.sql import query

    with psycopg.connect(url, autocommit=True) as c:
        gen = allocate_generation(c, f"layers-{uuid.uuid4().hex[:6]}")
    pub = Publisher(gen)
    claimer = Claimer(gen, uuid.uuid4())
    routes = (("bench.layers", "bench.layers.noop"),)
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, prepare_threshold=prepare_threshold
    ) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        pid = int(row[0])
        names = ("claim_fn", "claim_inline", "start_fn", "begin", "commit", "select1")
        meters = {k: Meter(pid) for k in names}
        params = {"generation": gen, "worker_id": claimer.worker_id, "limit": batch}

        async def fetch(conn: Any, statement: str) -> list[Any]:
            rows: list[Any] = await (await conn.execute(statement, params)).fetchall()
            return rows

        for i in range(batches):
            await pub.publish_many_async(
                conn, [EventIn(topic="bench.layers", payload={"i": j}) for j in range(batch)]
            )
            # alternate, so drift of the box hits both forms alike
            meter = meters["claim_fn" if i % 2 else "claim_inline"]
            rows = await meter.run(fetch(conn, query("claim_batch") if i % 2 else INLINE_CLAIM))
            ids = [r[0] for r in rows]
            assert len(ids) == batch, len(ids)
            await meters["begin"].run(conn.execute("BEGIN"))
            await meters["start_fn"].run(
                conn.execute(
                    query("start_batch"),
                    {
                        "generation": gen,
                        "worker_id": claimer.worker_id,
                        "ids": ids,
                        "topics": [t for t, _ in routes],
                        "handlers": [h for _, h in routes],
                    },
                )
            )
            await meters["commit"].run(conn.execute("COMMIT"))
            await meters["select1"].run(conn.execute("SELECT 1"))
    half = batches / 2
    return {
        "claim: core.outbox_claim_v1(...)": meters["claim_fn"].per(int(half)),
        "claim: the same statement inline": meters["claim_inline"].per(int(half + 0.5)),
        "start: core.outbox_start_v2(...)": meters["start_fn"].per(batches),
        "BEGIN, a message of its own": meters["begin"].per(batches),
        "COMMIT of the start's transaction": meters["commit"].per(batches),
        "SELECT 1 (a bare round trip, for scale)": meters["select1"].per(batches),
    }


async def python_layers(url: str, n: int) -> dict[str, float]:
    """Client CPU (us) per call of the in-process layers."""
    import psycopg

    from spectral_core.liveness import SessionRecorder
    from spectral_core.metrics.worker import WorkerStats
    from spectral_core.outbox.handlers import HandlerRegistry
    from spectral_core.outbox.process import _run_handler
    from spectral_core.outbox.records import Event
    from spectral_core.tracing import tracer

    async def noop(event: object, conn: object) -> None:
        return None

    reg = HandlerRegistry()
    reg.register("bench.layers.noop", "bench.layers", noop)
    handler = reg.for_topic("bench.layers")[0]
    ev = Event(
        id=1,
        generation=1,
        topic="bench.layers",
        payload={},
        idempotency_key="k",
        attempts=1,
        created_at=datetime.now(UTC),
    )
    stats = WorkerStats()
    rec = SessionRecorder(uuid.uuid4())
    out: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rec._seen.add(conn)  # recorded once already, as in a drain's steady state

        def clock(name: str, t0: float, k: int) -> None:
            out[name] = (time.process_time() - t0) / k * 1e6

        spans = tracer()
        for _ in range(2):  # the second pass counts (warm)
            t0 = time.process_time()
            for _ in range(n):
                await handler.fn(ev, conn)
            clock("handler call, bare", t0, n)
            t0 = time.process_time()
            for _ in range(n):
                await _run_handler(handler, ev, conn, stats.handler(handler.name), spans)
            clock("handler call via _run_handler (+ stats.handler)", t0, n)
            t0 = time.process_time()
            for _ in range(n):
                stats.handler(handler.name).duration.observe(0.0001)
            clock("metrics: stats.handler + duration.observe", t0, n)
            t0 = time.process_time()
            for _ in range(n):
                tracer()
            clock("tracer() with tracing off", t0, n)
            t0 = time.process_time()
            for _ in range(n):
                await rec.note(conn)
            clock("session recorder, connection seen", t0, n)
    return out


async def pool_checkout(url: str, n: int) -> float:
    from spectral_core.db.pools import open_pools
    from spectral_core.settings import Settings

    settings = Settings(database_url=url, database_pool_max=2, database_pool_min=1)
    async with open_pools(settings) as db:
        for _ in range(200):
            async with db.pool.connection():
                pass
        t0 = time.process_time()
        for _ in range(n):
            async with db.pool.connection():
                pass
        return (time.process_time() - t0) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="default: a fresh embedded PostgreSQL")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--prepare",
        choices=["none", "1", "both"],
        default="none",
        help="psycopg's prepare_threshold on the measured connection: none (spectral's "
        "connections, ADR 0041), 1 (prepared from the second execution, before it), or both "
        "in alternating rounds",
    )
    ap.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the event loop (spectral-workers runs on uvloop when it is installed)",
    )
    a = ap.parse_args()

    def run(coro: Any) -> Any:
        if a.loop == "uvloop":
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro)
        return asyncio.run(coro)

    from _server import migrated_server

    with migrated_server(a.url, "spectral-layers-pg-") as url:
        modes: dict[str, int | None] = {"none": None, "1": 1}
        wanted = list(modes) if a.prepare == "both" else [a.prepare]
        rounds: dict[str, list[dict[str, tuple[float, float]]]] = {m: [] for m in wanted}
        for r in range(a.rounds):
            for m in wanted if r % 2 == 0 else wanted[::-1]:  # the order rotated per round
                rounds[m].append(run(db_layers(url, a.batches, a.batch, modes[m])))
        py = run(python_layers(url, 20000))
        pool = run(pool_checkout(url, 5000))
    print(f"command: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, batch {a.batch}, {a.loop}")
    print(
        "\n| per batch (median of rounds) | prepare_threshold | client CPU us | server CPU us "
        "| server us/event |"
    )
    print("|---|---|---|---|---|")
    for k in rounds[wanted[0]][0]:
        for m in wanted:
            client = statistics.median(r[k][0] for r in rounds[m])
            server = statistics.median(r[k][1] for r in rounds[m])
            print(f"| {k} | {m} | {client:.0f} | {server:.0f} | {server / a.batch:.2f} |")
    print("\n| in the process | client CPU us per call |")
    print("|---|---|")
    for k, v in py.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| pool checkout + return (per batch) | {pool:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
