"""Recovery edges on a real PostgreSQL: what the reaper may touch, how a row that failed or
was reaped ends, and how stale workers are shown and pruned (issues 16 and 23)."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest

from spectral_core import Consumer, ConsumerConfig, Event, HandlerRegistry, Publisher
from spectral_core.db import Database
from spectral_core.outbox import (
    BatchProcessor,
    Claimer,
    EventIn,
    Reaper,
    RetryPolicy,
    redrive_dead,
)

pytestmark = pytest.mark.anyio


def add_worker(
    conn: psycopg.Connection[Any],
    generation: int,
    *,
    age: str = "0 s",
    state: str = "running",
    wid: uuid.UUID | None = None,
) -> uuid.UUID:
    """A core.workers row whose heartbeat is ``age`` old."""
    wid = wid or uuid.uuid4()
    conn.execute(
        "INSERT INTO core.workers (id, generation, state, host, pid, version, last_seen)"
        " VALUES (%s, %s, %s, 'h', 1, 'v', now() - %s::interval)",
        (wid, generation, state, age),
    )
    return wid


def flaky_registry(failures: dict[str, int]) -> HandlerRegistry:
    """A handler on t.x that fails the first ``failures[key]`` times it runs for a key."""
    reg = HandlerRegistry()

    async def fn(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        left = failures.get(ev.idempotency_key, 0)
        if left:
            failures[ev.idempotency_key] = left - 1
            raise RuntimeError("flaky")

    reg.register("workers.test.flaky", "t.x", fn)
    return reg


async def handle_all(
    db: Database, generation: int, reg: HandlerRegistry, *, fused: bool, n: int
) -> None:
    """Run a real consumer until every one of the ``n`` rows is done."""
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=reg,
        config=ConsumerConfig(
            batch_size=10,
            lanes=1,
            poll_interval_s=0.1,
            fused_cycle=fused,
            retry=RetryPolicy(max_attempts=5, base_s=0.01, cap_s=0.02),
        ),
    )

    async def all_done() -> bool:
        async with db.pool.connection() as c:
            cur = await c.execute("SELECT count(*) FROM core.outbox WHERE status = 'done'")
            return (await cur.fetchone())[0] == n

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        with anyio.fail_after(30):
            while not await all_done():
                await anyio.sleep(0.05)
        consumer.stop()


@pytest.mark.parametrize("fused", [False, True], ids=["general", "fused"])
async def test_rows_that_failed_were_reaped_or_redriven_end_done_without_an_error(
    db: Database, conn: psycopg.Connection[Any], generation: int, fused: bool
) -> None:
    """Issue 16.7: a `done` row never shows an error.  A row that failed once (then went
    through the batch path or the row-by-row redo), a row the reaper took back from a dead
    worker, and a dead row an operator re-drove all end `done` with `last_error` cleared,
    on the general path and on the one-message cycle."""
    pub = Publisher(generation)
    ids = pub.publish_many(
        conn, [EventIn(topic="t.x", payload={}, idempotency_key=f"k{i}") for i in range(4)]
    )
    # k0 fails in its first batch and in the row-by-row redo of it (so it is re-pended with
    # its error), then succeeds in a batch of its own; the other rows, neighbours in that
    # first batch, are settled by the redo's complete
    failures = {"k0": 2}
    # k2: reaped from a worker that stopped heartbeating
    dead_worker = add_worker(conn, generation, age="1 hour")
    conn.execute(
        "UPDATE core.outbox SET status = 'in_flight', attempts = 1, claimed_by = %s WHERE id = %s",
        (dead_worker, ids[2]),
    )
    async with db.pool.connection() as c:
        assert await Reaper(generation, stale_after_s=30, max_attempts=5).reap(c) == {
            "pending": 1,
            "dead": 0,
        }
    # k3: dead after too many attempts, then re-driven
    conn.execute(
        "UPDATE core.outbox SET status = 'dead', attempts = 5, last_error = 'RuntimeError: x', "
        "finished_at = now() WHERE id = %s",
        (ids[3],),
    )
    assert redrive_dead(conn, generation, [ids[3]]) == [ids[3]]
    assert conn.execute(
        "SELECT count(*) FROM core.outbox WHERE last_error IS NOT NULL"
    ).fetchone() == (2,)

    await handle_all(db, generation, flaky_registry(failures), fused=fused, n=4)

    assert failures == {"k0": 0}
    got = conn.execute(
        "SELECT idempotency_key, status, last_error FROM core.outbox ORDER BY id"
    ).fetchall()
    assert got == [(f"k{i}", "done", None) for i in range(4)]


async def test_the_row_by_row_redo_clears_the_error_of_a_row_it_completes(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Issue 16.7, the redo's own settle (`complete_batch`): a row carrying an earlier
    error that completes in a redo (a neighbour failed) ends `done` without the error."""
    pub = Publisher(generation)
    good = pub.publish(conn, "t.x", {}, idempotency_key="good")
    pub.publish(conn, "t.x", {}, idempotency_key="bad")
    conn.execute("UPDATE core.outbox SET last_error = 'earlier' WHERE id = %s", (good,))
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await BatchProcessor(claimer, flaky_registry({"bad": 1})).process(
            c, await claimer.claim(c, 10)
        )
    assert conn.execute(
        "SELECT status, last_error FROM core.outbox WHERE id = %s", (good,)
    ).fetchone() == ("done", None)


async def test_a_row_redone_row_by_row_is_never_reaped_dead_while_its_handler_commits(
    db: Database, conn: psycopg.Connection[Any], generation: int, db_url: str
) -> None:
    """Issue 16.2: on the row-by-row redo after a failed batch, the row stays locked by
    the handler's transaction, and that transaction also marks it `done`.  Here the worker
    stalls past the stale bound on the row's last attempt, in the middle of the redo's
    handler call, and a reaper runs: it must not mark the row `dead` (it used to: "claim
    reaped"), and the row ends `done` with its effect and ledger row, never `dead` with a
    ledger row saying it was handled."""
    conn.execute("CREATE TABLE public.effects (key text)")
    event_id = Publisher(generation).publish(conn, "t.x", {}, idempotency_key="last")
    conn.execute("UPDATE core.outbox SET attempts = 2 WHERE id = %s", (event_id,))
    worker = add_worker(conn, generation)
    calls: list[str] = []
    reaped: list[dict[str, int]] = []

    async def stall_and_reap() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as other:
            await other.execute(  # the worker stalls: its heartbeat goes stale
                "UPDATE core.workers SET last_seen = now() - interval '1 hour' WHERE id = %s",
                (worker,),
            )
            reaped.append(await Reaper(generation, stale_after_s=30, max_attempts=3).reap(other))

    reg = HandlerRegistry()

    async def handler(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        calls.append("batch" if not calls else "redo")
        if len(calls) == 1:
            raise RuntimeError("fail the batch: redo row by row")
        await c.execute("INSERT INTO public.effects VALUES (%s)", (ev.idempotency_key,))
        # a reaper that waited for this row's lock would wait for us: bound the wait
        with anyio.move_on_after(3):
            await stall_and_reap()

    reg.register("workers.test.stall", "t.x", handler)
    claimer = Claimer(generation, worker)
    async with db.pool.connection() as c:
        events = await claimer.claim(c, 10)
        assert [e.attempts for e in events] == [3]  # the last attempt
        await BatchProcessor(claimer, reg, RetryPolicy(max_attempts=3)).process(c, events)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as other:
            await Reaper(generation, stale_after_s=30, max_attempts=3).reap(other)

    assert calls == ["batch", "redo"]
    assert reaped in ([{"pending": 0, "dead": 0}], [])
    status = conn.execute(
        "SELECT status, last_error FROM core.outbox WHERE id = %s", (event_id,)
    ).fetchone()
    ledger = conn.execute("SELECT count(*) FROM core.event_handled").fetchone()[0]
    effects = conn.execute("SELECT count(*) FROM public.effects").fetchone()[0]
    assert (status, ledger, effects) == (("done", None), 1, 1)
