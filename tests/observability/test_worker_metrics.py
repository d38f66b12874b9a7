"""A worker's process counters (issue 17.1, ADR 0029): counted by a real consumer on the
real database, written to core.workers.metrics by the heartbeat, read back by the API's
collector."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spectral_core import (
    Consumer,
    ConsumerConfig,
    Event,
    HandlerRegistry,
    Heartbeat,
    Publisher,
    Settings,
)
from spectral_core.db import Database
from spectral_core.liveness import WorkerInfo
from spectral_core.metrics import QueueStats
from spectral_core.metrics.exposition import QueueCollector
from spectral_core.outbox import RetryPolicy, generation_status

pytestmark = pytest.mark.anyio


async def test_handled_failed_retried_dead_and_durations_reach_core_workers(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Ten good events, one that fails once then succeeds, one that always fails (dead
    after two attempts) and one no handler takes: the consumer counts per handler the
    committed calls, the failures that stand (a row's redo), the rows retried and dead, a
    duration per call and the claim batch sizes; the
    heartbeat writes the snapshot to core.workers, and the collector renders it under the
    worker's id; `deploy status` sums them per generation."""
    generation = settings.generation or 0
    attempts: dict[str, int] = {}

    async def flaky(event: Event, c: Any) -> None:
        n = attempts[event.idempotency_key] = attempts.get(event.idempotency_key, 0) + 1
        if event.payload.get("fail") == "always" or (
            event.payload.get("fail") == "once" and n == 1
        ):
            raise RuntimeError("boom")

    registry = HandlerRegistry()
    registry.register("test.metrics.flaky", "t.work", flaky)
    pub = Publisher(generation)
    for i in range(10):
        pub.publish(conn, "t.work", {"i": i})
    pub.publish(conn, "t.work", {"fail": "once"}, idempotency_key="once")
    pub.publish(conn, "t.work", {"fail": "always"}, idempotency_key="always")
    pub.publish(conn, "t.nobody", {})
    worker_id = uuid.uuid4()
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=worker_id,
        registry=registry,
        config=ConsumerConfig(
            batch_size=50, lanes=1, poll_interval_s=0.05, retry=RetryPolicy(2, 0.01, 0.02)
        ),
    )
    heartbeat = Heartbeat(
        db,
        WorkerInfo(worker_id, generation, "test", 0, "test"),
        interval_s=0.5,
        metrics=consumer.stats.snapshot,
    )

    def settled() -> bool:
        return (
            conn.execute(
                "SELECT count(*) FROM core.outbox WHERE status IN ('pending', 'in_flight')"
            ).fetchone()[0]
            == 0
        )

    async with heartbeat:
        await heartbeat.register()
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            with anyio.fail_after(30):
                while not settled():
                    await anyio.sleep(0.05)
            consumer.stop()
        await heartbeat.beat()
    [(snap,)] = conn.execute(
        "SELECT metrics FROM core.workers WHERE id = %s", (worker_id,)
    ).fetchall()
    flaky_stats = snap["handlers"]["test.metrics.flaky"]
    assert flaky_stats["handled"] == 11  # ten plus the one that succeeded on its retry
    # "once" raises in its batch, which is then redone row by row, where it succeeds:
    # handled, never failed.  "always" fails in its redo on each of its two attempts.
    assert flaky_stats["failed"] == 2
    assert flaky_stats["retried"] == 1
    assert flaky_stats["dead"] == 1
    assert sum(flaky_stats["duration_s"]["counts"]) >= 14  # every call, failed ones too
    assert snap["handlers"]["unroutable"]["dead"] == 1
    assert sum(snap["claim_batch_rows"]["counts"]) >= 1
    assert snap["claim_batch_rows"]["sum"] >= 13

    # `spectral deploy status --json` sums them per generation
    [status] = [
        g
        for g in generation_status(conn, stale_after_s=settings.worker_stale_after_s)
        if g.generation == generation
    ]
    assert status.as_dict()["events"] == {"handled": 11, "failed": 2, "retried": 1, "dead": 2}

    registry_ = CollectorRegistry()
    stats = QueueStats(db, cache_s=0, stale_after_s=settings.worker_stale_after_s)
    registry_.register(QueueCollector(stats))
    await stats.refresh()
    text = generate_latest(registry_).decode()
    handled = {
        (s.labels["worker"], s.labels["handler"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "spectral_worker_events_handled_total"
    }
    assert handled[(str(worker_id), "test.metrics.flaky")] == 11
