"""The consumer against a real PostgreSQL: LISTEN wake-ups, poll fallback, reconnects."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import psycopg
import pytest

from spectral_core import Consumer, ConsumerConfig, Event, HandlerRegistry, Publisher
from spectral_core.db import Database
from spectral_core.outbox import EventIn

pytestmark = pytest.mark.anyio


def timing_registry(seen: dict[str, float]) -> HandlerRegistry:
    reg = HandlerRegistry()

    async def fn(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        seen[ev.idempotency_key] = time.monotonic()

    reg.register("workers.test.seen", "t.x", fn)
    return reg


async def wait_until(pred: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(0.02)


async def test_consumer_drains_backlog_with_all_lanes(
    db: Database, generation: int, conn: psycopg.Connection[Any]
) -> None:
    """A backlog larger than one batch is fully handled and every row ends done."""
    Publisher(generation).publish_many(conn, [EventIn(topic="t.x", payload={}) for _ in range(250)])
    seen: dict[str, float] = {}
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=timing_registry(seen),
        config=ConsumerConfig(batch_size=20, lanes=3, poll_interval_s=0.5),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await wait_until(lambda: len(seen) == 250)
        consumer.stop()
    assert conn.execute("SELECT status, count(*) FROM core.outbox GROUP BY 1").fetchall() == [
        ("done", 250)
    ]


async def test_notify_wakes_consumer_long_before_the_poll_interval(
    db: Database, generation: int, db_url: str
) -> None:
    """With LISTEN working, a committed event is handled well within the poll interval (10 s)."""
    seen: dict[str, float] = {}
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=timing_registry(seen),
        config=ConsumerConfig(lanes=2, poll_interval_s=10.0),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await consumer.wait_listening()
        await anyio.sleep(0.3)  # lanes are idle now
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
            start = time.monotonic()
            await Publisher(generation).publish_async(c, "t.x", {}, idempotency_key="fast")
        await wait_until(lambda: "fast" in seen, timeout=5)
        assert seen["fast"] - start < 2.0
        consumer.stop()


async def test_notifications_arriving_together_wake_one_lane(
    db: Database, generation: int, conn: psycopg.Connection[Any]
) -> None:
    """Notifications that reach the listener together, while every lane is idle, wake one
    lane: its claim sees all their rows (ADR 0047), so no other lane is woken to send a
    claim that finds nothing or to split the rows into batches of their own."""
    seen: dict[str, float] = {}
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=timing_registry(seen),
        config=ConsumerConfig(lanes=4, poll_interval_s=10.0),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await consumer.wait_listening()
        await anyio.sleep(0.3)  # every lane has claimed nothing and is idle now
        before = db.pool.get_stats().get("requests_num", 0)
        # five commits, five notifications, while the event loop is blocked (synchronous
        # calls): the listener reads them in one go when the loop runs again
        publisher = Publisher(generation)
        for i in range(5):
            publisher.publish(conn, "t.x", {}, idempotency_key=f"burst-{i}")
        time.sleep(0.2)
        await wait_until(lambda: len(seen) == 5, timeout=5)
        await anyio.sleep(0.2)  # a lane woken for nothing would have claimed by now
        claims = db.pool.get_stats().get("requests_num", 0) - before
        consumer.stop()
    assert claims == 1  # one lane took one connection and claimed the five rows at once
    assert consumer.stats.claims.snapshot()["sum"] == 5


async def test_poll_fallback_without_listen(db: Database, generation: int, db_url: str) -> None:
    """With notifications disabled, an event is still handled within about one poll interval."""
    seen: dict[str, float] = {}
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=timing_registry(seen),
        config=ConsumerConfig(lanes=1, poll_interval_s=0.3, listen=False),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await anyio.sleep(0.1)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
            await Publisher(generation).publish_async(c, "t.x", {}, idempotency_key="polled")
        await wait_until(lambda: "polled" in seen, timeout=3)
        consumer.stop()


async def test_listener_terminated_reports_reconnecting_and_recovers(
    db: Database, generation: int, db_url: str
) -> None:
    """pg_terminate_backend on the LISTEN connection flips the state to reconnecting; the
    consumer reconnects, returns to running and handles what was published meanwhile."""
    seen: dict[str, float] = {}
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=timing_registry(seen),
        config=ConsumerConfig(lanes=1, poll_interval_s=5.0, reconnect_backoff_cap_s=0.3),
    )
    states: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await consumer.wait_listening()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
            )
            with anyio.fail_after(5):
                while consumer.state != "reconnecting":
                    await anyio.sleep(0.01)
            states.append(consumer.state)
            await Publisher(generation).publish_async(admin, "t.x", {}, idempotency_key="during")
            await wait_until(lambda: consumer.state == "running", timeout=10)
            states.append(consumer.state)
            await wait_until(lambda: "during" in seen, timeout=10)
        consumer.stop()
    assert states == ["reconnecting", "running"]


async def test_pool_connections_terminated_nothing_lost(
    db: Database, generation: int, db_url: str
) -> None:
    """Killing every pool connection mid-stream loses no event and handles none twice."""
    reg = HandlerRegistry()
    count: dict[str, int] = {}

    async def fn(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        await c.execute("INSERT INTO public.effects VALUES (%s)", (ev.idempotency_key,))
        await c.execute("SELECT pg_sleep(0.002)")
        count[ev.idempotency_key] = count.get(ev.idempotency_key, 0) + 1

    reg.register("workers.test.count", "t.x", fn)
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=reg,
        config=ConsumerConfig(
            batch_size=10, lanes=2, poll_interval_s=0.2, reconnect_backoff_cap_s=0.2
        ),
    )
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("CREATE TABLE public.effects (key text)")  # no unique constraint on purpose
        Publisher(generation).publish_many(
            c, [EventIn(topic="t.x", payload={}, idempotency_key=f"k{i}") for i in range(300)]
        )
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await wait_until(lambda: len(count) > 30)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
                "pg_backend_pid() AND datname = current_database()"
            )
        with psycopg.connect(db_url, autocommit=True) as c:
            await wait_until(
                lambda: (
                    c.execute("SELECT count(*) FROM core.outbox WHERE status = 'done'").fetchone()
                    == (300,)
                ),
                timeout=30,
            )
        consumer.stop()
    with psycopg.connect(db_url, autocommit=True) as c:
        # effects in PostgreSQL are exactly once; the in-memory counter may see a retry of
        # a batch whose transaction was rolled back by the kill, never a second commit
        assert c.execute("SELECT count(*), count(DISTINCT key) FROM public.effects").fetchone() == (
            300,
            300,
        )
    assert set(count) == {f"k{i}" for i in range(300)}


def two_lanes(db: Database, generation: int, registry: HandlerRegistry | None = None) -> Consumer:
    """A consumer with two lanes that polls only every 10 s (wake-ups come from LISTEN)."""
    return Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=registry or timing_registry({}),
        config=ConsumerConfig(lanes=2, poll_interval_s=10.0),
    )


async def test_frequent_notifications_go_first_to_the_lane_at_work(
    db: Database, generation: int
) -> None:
    """When notifications come faster than a batch takes and a lane is at work with quick
    batches, no idle lane is woken at once: the lane at work re-claims when its batch is
    settled (ADR 0050).  If no claim was sent within about one recent batch's time, an
    idle lane is woken then; if one was, none is."""
    consumer = two_lanes(db, generation)
    idle = anyio.Event()
    consumer._idle.append(idle)
    consumer._batch_s = 0.004  # batches lately took 4 ms; the other lane is at work
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer._deferred_wakes)
        consumer._notified()  # the first of a quick succession: an idle lane, as before
        assert idle.is_set()
        consumer._owed.clear()
        consumer._wake_pending = 0
        idle2 = anyio.Event()
        consumer._idle.append(idle2)
        consumer._notified()  # the next one, within a batch's time: the lane at work first
        assert not idle2.is_set()
        assert consumer._missed_wake  # it re-claims as soon as its batch is settled
        with anyio.fail_after(2):  # no claim was sent since: an idle lane after all
            await idle2.wait()
        assert idle2 in consumer._owed and not consumer._missed_wake

        consumer._owed.clear()
        consumer._wake_pending = 0
        idle3 = anyio.Event()
        consumer._idle.append(idle3)
        consumer._last_notified = time.monotonic()  # the previous notification just came
        consumer._notified()
        assert not idle3.is_set()
        consumer._claim_sent = time.monotonic()  # the lane at work re-claimed ...
        consumer._missed_wake = False  # ... taking the missed wake-up (_wait_for_work)
        await anyio.sleep(0.1)
        assert not idle3.is_set()  # no idle lane is woken for a row already claimed
        tg.cancel_scope.cancel()


async def test_slow_batches_or_sparse_notifications_wake_an_idle_lane_at_once(
    db: Database, generation: int
) -> None:
    """Batches that lately took longer than the first-chance bound (slow handlers), or a
    notification long after the last one, wake an idle lane at once, as before ADR 0050:
    the lane at work is not waited for."""
    consumer = two_lanes(db, generation)
    consumer._batch_s = 0.05  # slow batches
    first, second = anyio.Event(), anyio.Event()
    consumer._idle.extend([second, first])
    consumer._notified()
    consumer._wake_pending = 0
    consumer._notified()  # quick succession, but the batches are slow
    assert first.is_set() and second.is_set()

    consumer._batch_s = 0.004
    consumer._wake_pending = 0
    sparse = anyio.Event()
    consumer._idle.append(sparse)
    await anyio.sleep(0.05)  # the last notification was long ago
    consumer._notified()
    assert sparse.is_set()


async def test_a_lane_stuck_in_a_slow_handler_does_not_hold_back_the_next_event(
    db: Database, generation: int, db_url: str
) -> None:
    """Events published while the busy lane sits in a slow handler are handled by the
    other lane, not after the slow one: the first chance a lane at work gets at a
    notification lasts about one recent batch's time (ADR 0050)."""
    release, stuck = anyio.Event(), anyio.Event()
    seen: dict[str, float] = {}
    reg = HandlerRegistry()

    async def fn(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        if ev.idempotency_key == "slow":
            stuck.set()
            await release.wait()
        seen[ev.idempotency_key] = time.monotonic()

    reg.register("workers.test.seen", "t.x", fn)
    consumer = two_lanes(db, generation, reg)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await consumer.wait_listening()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
            publisher = Publisher(generation)
            for i in range(20):  # quick batches: the recent batch time drops
                await publisher.publish_async(c, "t.x", {}, idempotency_key=f"warm-{i}")
                await wait_until(lambda i=i: f"warm-{i}" in seen)
            await publisher.publish_async(c, "t.x", {}, idempotency_key="slow")
            await stuck.wait()  # its lane claimed it alone and sits in the handler
            for i in range(3):  # in quick succession while the slow handler runs
                await publisher.publish_async(c, "t.x", {}, idempotency_key=f"next-{i}")
            await wait_until(lambda: all(f"next-{i}" in seen for i in range(3)), timeout=5)
        assert "slow" not in seen
        release.set()
        await wait_until(lambda: "slow" in seen)
        consumer.stop()
