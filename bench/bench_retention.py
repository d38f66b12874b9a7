"""Automatic retention under live traffic (issue 17.3, ADR 0030), side by side.

    python bench/bench_retention.py                        # 1,000,000 done rows, 3 rounds
    python bench/bench_retention.py --rows 20000 --seconds 5 --rounds 2   # smoke test

Starts its own throwaway embedded PostgreSQL (``durable=True``: fsync and synchronous
commit on), migrates it, and allocates two generations: generation 1 holds ``--rows``
``done`` outbox rows finished 8 days ago plus as many ledger rows handled 30 days ago
(drained, so prunable), generation 2 is the serving generation.  Each run, a consumer of
generation 2 (one lane group, a no-op handler) runs in this process, as in spectral-workers,
while a producer publishes single events at ``--rate`` per second (default 100) for
``--seconds``; the latency of an event is its publisher's call start -> its handler start.

Two contenders with the same table state (refilled and vacuumed before every run):
``none`` (no pruning) and ``prune`` (a :class:`~spectral_core.retention.Pruner` with the
default batch and pacing running passes back to back beside the consumer, like the
workers' pruner, until the run ends).  The order is rotated per round; the figure is the
median over rounds of the per-round ratio p99(prune) / p99(none) (target <= 1.5), with the
p50s, and how many rows the pruner deleted within the run.  Figures of record need a quiet
machine: on the shared 2-vCPU development box runs vary by 10-30 %.

Writes ``bench/results/retention-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from spectral_core import (  # noqa: E402
    Consumer,
    ConsumerConfig,
    HandlerRegistry,
    Heartbeat,
    Publisher,
    Settings,
    open_pools,
)
from spectral_core.embedded import EmbeddedPostgres  # noqa: E402
from spectral_core.generations import allocate_generation  # noqa: E402
from spectral_core.liveness import WorkerInfo  # noqa: E402
from spectral_core.logging import configure_logging  # noqa: E402
from spectral_core.migrate import run_migrations  # noqa: E402
from spectral_core.retention import Pruner, RetentionConfig  # noqa: E402

TOPIC = "bench.noop"


def fill(url: str, rows: int) -> None:
    """Generation 1: exactly ``rows`` old done rows and ledger rows; generation 2 empty."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE core.outbox, core.event_handled")
        conn.execute(
            """
            INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status,
                                     attempts, created_at, finished_at)
            SELECT 1, %s, '{"n": 1}', 'old-' || i, 'done', 1,
                   now() - interval '8 days', now() - interval '8 days'
            FROM generate_series(1, %s) AS i
            """,
            (TOPIC, rows),
        )
        conn.execute(
            """
            INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id,
                                            generation, handled_at)
            SELECT 'bench.noop', 'old-' || i, NULL, 1, now() - interval '30 days'
            FROM generate_series(1, %s) AS i
            """,
            (rows,),
        )
        conn.execute("VACUUM ANALYZE core.outbox")
        conn.execute("VACUUM ANALYZE core.event_handled")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def one_run(settings: Settings, mode: str, rate: float, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    started: dict[str, float] = {}
    deleted = 0
    pruned_in: float | None = None
    registry = HandlerRegistry()

    async def noop(event: Any, conn: Any) -> None:
        t0 = started.pop(event.idempotency_key, None)
        if t0 is not None:
            latencies.append((time.monotonic() - t0) * 1000)

    registry.register("bench.noop", TOPIC, noop)
    async with open_pools(settings) as db:
        worker_id = uuid.uuid4()
        consumer = Consumer(
            db,
            generation=2,
            worker_id=worker_id,
            registry=registry,
            config=ConsumerConfig.from_settings(settings),
        )
        heartbeat = Heartbeat(db, WorkerInfo(worker_id, 2, "bench", 0, "bench"), interval_s=2.0)
        publisher = Publisher(2)
        pruner = Pruner(RetentionConfig.from_settings(settings))

        async def produce() -> None:
            n = int(rate * seconds)
            t_start = time.monotonic()
            for i in range(n):
                delay = t_start + i / rate - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                key = f"live-{i}"
                started[key] = time.monotonic()
                async with db.pool.connection() as conn, conn.transaction():
                    await publisher.publish_async(conn, TOPIC, {"i": i}, idempotency_key=key)

        async def prune() -> None:
            nonlocal deleted, pruned_in
            t0 = time.monotonic()
            while True:
                async with db.pool.connection() as conn:
                    result = await pruner.prune(conn)
                deleted += result.deleted
                if result.deleted == 0:
                    if pruned_in is None:
                        pruned_in = round(time.monotonic() - t0, 1)
                    await anyio.sleep(0.5)

        async with heartbeat:
            await heartbeat.register()
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer.run)
                await anyio.sleep(1.0)  # the consumer listens
                if mode == "prune":
                    tg.start_soon(prune)
                await produce()
                with anyio.move_on_after(10):
                    while started:
                        await anyio.sleep(0.05)
                consumer.stop()
                tg.cancel_scope.cancel()
    return {
        "mode": mode,
        "events": len(latencies),
        "lost": len(started),
        "p50_ms": round(pct(latencies, 0.50), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "deleted": deleted,
        # seconds from the pruner's start until a pass found nothing left (None: not
        # finished within the run)
        "pruned_in_s": pruned_in,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="done rows to prune")
    ap.add_argument("--rate", type=float, default=100.0, help="live events per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of one run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000, help="SPECTRAL_RETENTION_BATCH_SIZE")
    args = ap.parse_args()
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    # the workers' production logging (JSON, level info), written to /dev/null
    configure_logging(fmt="json", level="info", stream=open(os.devnull, "w"))  # noqa: SIM115
    root = Path(tempfile.mkdtemp(prefix="spectral-bench-retention-"))
    server = EmbeddedPostgres(root, durable=True)
    url = server.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            run_migrations(conn)
            allocate_generation(conn, "old")
            allocate_generation(conn, "live")
        settings = Settings.from_env(
            {},
            database_url=url,
            generation=2,
            retention_batch_size=args.batch,
        )
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ["none", "prune"] if r % 2 == 0 else ["prune", "none"]
            runs: dict[str, Any] = {}
            for mode in order:
                t0 = time.monotonic()
                fill(url, args.rows)
                fill_s = time.monotonic() - t0
                runs[mode] = anyio.run(one_run, settings, mode, args.rate, args.seconds)
                runs[mode]["fill_s"] = round(fill_s, 1)
                print(f"round {r + 1} {mode:>5}: {runs[mode]}", flush=True)
            ratio = runs["prune"]["p99_ms"] / max(runs["none"]["p99_ms"], 1e-9)
            rounds.append({"round": r + 1, "order": order, "runs": runs, "p99_ratio": ratio})
            print(f"round {r + 1}: p99 prune/none = {ratio:.2f}", flush=True)
        ratios = [x["p99_ratio"] for x in rounds]
        summary = {
            "rows": args.rows,
            "rate": args.rate,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "median_p99_ratio": round(statistics.median(ratios), 2),
            "target": 1.5,
        }
        print(json.dumps(summary), flush=True)
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        (out / f"retention-{stamp}.json").write_text(
            json.dumps({"summary": summary, "rounds": rounds}, indent=2)
        )
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
