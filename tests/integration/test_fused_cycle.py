"""The one-message cycle (ADR 0015): ``Claimer.claim_started`` claims a batch and opens its
handler transaction in one round trip; ``BatchProcessor.process_started`` finishes it.
It must keep every guarantee of the general path (``claim`` + ``process``)."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.pq import TransactionStatus

from spectral_core import Consumer, ConsumerConfig, Publisher
from spectral_core.db import Database
from spectral_core.errors import DatabaseError
from spectral_core.outbox import BatchProcessor, Claimer, Event, EventIn, RetryPolicy

from .test_outbox import effect_table, recording_registry, rows, sync_commit_probe

pytestmark = pytest.mark.anyio


async def cycle(
    c: psycopg.AsyncConnection[Any], claimer: Claimer, proc: BatchProcessor, limit: int = 10
) -> list[Event]:
    """One fused claim + handle, as a consumer lane does it."""
    events, held, fresh = await claimer.claim_started(c, limit, proc.registry.routes)
    if events:
        await proc.process_started(c, events, held, fresh)
    assert c.info.transaction_status == TransactionStatus.IDLE
    return events


async def test_fused_cycle_runs_every_handler_once_with_its_ledger_row(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Each subscribed handler runs once per row, the ledger holds one row per (handler,
    row) and every row ends done: the same outcome as the general path."""
    effect_table(conn)
    Publisher(generation).publish_many(
        conn, [EventIn(topic="t.x", payload={}, idempotency_key=f"k{i}") for i in range(4)]
    )
    reg = recording_registry("workers.a.one", "workers.a.two")
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        assert len(await cycle(c, claimer, BatchProcessor(claimer, reg))) == 4
    assert {r[3] for r in rows(conn)} == {"done"}
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone() == (8,)
    assert conn.execute(
        "SELECT handler_name, count(*) FROM core.event_handled GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("workers.a.one", 4), ("workers.a.two", 4)]


async def test_fused_claim_is_own_generation_oldest_first_and_limited(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """The fused claim takes only rows of its generation, oldest first, at most ``limit``."""
    other = conn.execute(
        "INSERT INTO core.deployments (version) VALUES ('other') RETURNING generation"
    ).fetchone()[0]
    Publisher(other).publish(conn, "t.x", {})
    ids = Publisher(generation).publish_many(conn, [EventIn(topic="t.x", payload={})] * 3)
    claimer = Claimer(generation, uuid.uuid4())
    proc = BatchProcessor(claimer, recording_registry("workers.a.one"))
    effect_table(conn)
    async with db.pool.connection() as c:
        assert [e.id for e in await cycle(c, claimer, proc, limit=2)] == ids[:2]
        assert [e.id for e in await cycle(c, claimer, proc, limit=2)] == ids[2:]
        assert await cycle(c, claimer, proc) == []
    assert conn.execute(
        "SELECT status FROM core.outbox WHERE generation = %s", (other,)
    ).fetchone() == ("pending",)


async def test_fused_claim_with_nothing_pending_leaves_no_open_transaction(
    db: Database, generation: int
) -> None:
    """An empty claim returns nothing and rolls its handler transaction back at once (a
    connection must never go back to the pool inside a transaction)."""
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        events, held, fresh = await claimer.claim_started(c, 10, (("t.x", "workers.a.one"),))
        assert (events, held, fresh) == ([], set(), set())
        assert c.info.transaction_status == TransactionStatus.IDLE


async def test_fused_claim_commits_async_and_handlers_commit_synchronously(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Only the claim's own transaction has synchronous_commit off: the handler
    transaction (handlers' effects plus ledger) and the next ones commit synchronously."""
    Publisher(generation).publish(conn, "t.x", {})
    seen: list[str] = []
    reg = sync_commit_probe(seen)
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await c.execute("SET synchronous_commit = on")  # the test server's default is off
        await cycle(c, claimer, BatchProcessor(claimer, reg))
        after = (await (await c.execute("SHOW synchronous_commit")).fetchone())[0]
        await c.execute("RESET synchronous_commit")
    assert seen == ["on"]
    assert after == "on"


async def test_fused_cycle_never_repeats_a_handled_key(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Duplicate keys in one batch, and a later duplicate publish, run a handler once."""
    effect_table(conn)
    pub = Publisher(generation)
    pub.publish_many(conn, [EventIn(topic="t.x", payload={}, idempotency_key="same")] * 3)
    claimer = Claimer(generation, uuid.uuid4())
    proc = BatchProcessor(claimer, recording_registry("workers.a.one"))
    async with db.pool.connection() as c:
        await cycle(c, claimer, proc)
        pub.publish(conn, "t.x", {}, idempotency_key="same")
        await cycle(c, claimer, proc)
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone() == (1,)
    assert {r[3] for r in rows(conn)} == {"done"}


async def test_fused_cycle_failing_handler_rolls_back_and_retries_row_by_row(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A handler failing inside the fused transaction undoes the whole start (no row done,
    no ledger row kept), then the batch is redone row by row: neighbours complete, the
    failing row backs off, and the handler that succeeded for it never runs again."""
    effect_table(conn)
    pub = Publisher(generation)
    pub.publish(conn, "t.x", {}, idempotency_key="good")
    bad = pub.publish(conn, "t.x", {"fail": True}, idempotency_key="bad")
    reg = recording_registry("workers.a.one", "workers.a.two", fail={"workers.a.two"})
    claimer = Claimer(generation, uuid.uuid4())
    proc = BatchProcessor(claimer, reg, RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.001))
    async with db.pool.connection() as c:
        await cycle(c, claimer, proc)
        assert conn.execute(
            "SELECT status, attempts FROM core.outbox WHERE id = %s", (bad,)
        ).fetchone() == ("pending", 1)
        await anyio.sleep(0.01)
        await cycle(c, claimer, proc)
    assert conn.execute(
        "SELECT status, attempts FROM core.outbox WHERE id = %s", (bad,)
    ).fetchone() == ("dead", 2)
    assert conn.execute(
        "SELECT handler, key, count(*) FROM public.effects GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall() == [
        ("workers.a.one", "bad", 1),
        ("workers.a.one", "good", 1),
        ("workers.a.two", "good", 1),
    ]


async def test_fused_batch_with_an_unroutable_row_kills_it_and_handles_the_rest(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A row whose topic no handler takes ends dead with the reason; its neighbours in the
    same fused batch are handled once."""
    effect_table(conn)
    pub = Publisher(generation)
    pub.publish(conn, "t.x", {}, idempotency_key="a")
    lost = pub.publish(conn, "t.nobody", {})
    pub.publish(conn, "t.x", {}, idempotency_key="b")
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await cycle(c, claimer, BatchProcessor(claimer, recording_registry("workers.a.one")))
    status = dict(conn.execute("SELECT id, status FROM core.outbox").fetchall())
    assert status.pop(lost) == "dead"
    assert set(status.values()) == {"done"}
    assert conn.execute("SELECT key FROM public.effects ORDER BY key").fetchall() == [
        ("a",),
        ("b",),
    ]


async def test_dropped_statements_are_prepared_again_without_losing_a_cycle(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """psycopg answers any rollback on a connection with DEALLOCATE ALL, which also drops
    the cycle's statements.  The next cycle notices (its claim statement is missing, so
    nothing was claimed), prepares them again and handles the row, claimed exactly once."""
    effect_table(conn)
    pub = Publisher(generation)
    pub.publish(conn, "t.x", {}, idempotency_key="k")
    claimer = Claimer(generation, uuid.uuid4())
    proc = BatchProcessor(claimer, recording_registry("workers.a.one"))
    async with db.pool.connection() as c:
        assert [e.idempotency_key for e in await cycle(c, claimer, proc)] == ["k"]
        pub.publish(conn, "t.x", {}, idempotency_key="k2")
        await c.execute("DEALLOCATE ALL")
        assert [e.idempotency_key for e in await cycle(c, claimer, proc)] == ["k2"]
        pub.publish(conn, "t.x", {}, idempotency_key="k3")
        await c.execute("SELECT 1")
        await c.execute("SELECT 1")  # psycopg has a prepared statement of its own now
        async with c.transaction(force_rollback=True):
            pass  # psycopg: ROLLBACK, then DEALLOCATE ALL
        left = await (await c.execute("SELECT count(*) FROM pg_prepared_statements")).fetchone()
        assert left == (0,)
        assert [e.idempotency_key for e in await cycle(c, claimer, proc)] == ["k3"]
    assert (
        conn.execute("SELECT status, attempts FROM core.outbox ORDER BY id").fetchall()
        == [("done", 1)] * 3
    )


async def test_a_message_failing_after_its_claim_leaves_orphans_and_no_transaction(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """If the message fails after its claim committed (here the start statement alone
    was dropped), claim_started raises, no transaction is left open, and the claimed row
    is in flight under our worker id: the orphan the consumer re-pends.  The next cycle
    prepares the statement again."""
    claimer = Claimer(generation, uuid.uuid4())
    proc = BatchProcessor(claimer, recording_registry("workers.a.one"))
    effect_table(conn)
    async with db.pool.connection() as c:
        assert await cycle(c, claimer, proc) == []  # nothing pending yet; prepares
        await c.execute("DEALLOCATE spectral_start_claimed_v1")
        Publisher(generation).publish_many(
            conn, [EventIn(topic="t.x", payload={}, idempotency_key=k) for k in ("k", "k2")]
        )
        with pytest.raises(DatabaseError):
            await claimer.claim_started(c, 10, proc.registry.routes)
        assert c.info.transaction_status == TransactionStatus.IDLE
        assert await claimer.release_orphans(c, []) == 2
        assert {e.idempotency_key for e in await cycle(c, claimer, proc)} == {"k", "k2"}
    assert {r[3] for r in rows(conn)} == {"done"}


async def test_a_start_that_keeps_failing_still_reaches_dead_through_the_retry_policy(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """If the fused start statement itself fails (here a trigger on the ledger refuses one
    key), the rows its claim took are not stuck in flight: the consumer re-pends them,
    redoes the batch on the general path, the good neighbour is handled and the poison row
    goes through backoff to dead with the database error recorded."""
    effect_table(conn)
    conn.execute(
        """
        CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.idempotency_key = 'poison' THEN
                RAISE EXCEPTION 'ledger refuses poison';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON core.event_handled
        FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
        """
    )
    pub = Publisher(generation)
    pub.publish(conn, "t.x", {}, idempotency_key="good")
    poison = pub.publish(conn, "t.x", {}, idempotency_key="poison")
    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=recording_registry("workers.a.one"),
        config=ConsumerConfig(
            lanes=1,
            poll_interval_s=0.05,
            retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.01),
        ),
    )

    def settled() -> bool:
        return conn.execute(
            "SELECT count(*) FROM core.outbox WHERE status IN ('done', 'dead')"
        ).fetchone() == (2,)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        with anyio.fail_after(30):
            while not settled():
                await anyio.sleep(0.05)
        consumer.stop()
    status, error = conn.execute(
        "SELECT status, last_error FROM core.outbox WHERE id = %s", (poison,)
    ).fetchone()
    assert status == "dead" and "ledger refuses poison" in error
    assert conn.execute("SELECT key FROM public.effects").fetchall() == [("good",)]


async def test_the_start_takes_only_rows_still_in_flight_under_our_worker_id(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """The start statement re-checks every id the claim left it: a row the reaper took
    back (pending) or that another worker holds is neither marked done nor written to the
    ledger; only rows still in flight under our worker id are."""
    ids = Publisher(generation).publish_many(
        conn, [EventIn(topic="t.x", payload={}, idempotency_key=f"k{i}") for i in range(3)]
    )
    me, other = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "UPDATE core.outbox SET status = 'in_flight', claimed_by = %s WHERE id = %s",
        (other, ids[0]),
    )
    conn.execute(
        "UPDATE core.outbox SET status = 'in_flight', claimed_by = %s WHERE id = %s",
        (me, ids[2]),
    )
    claimer = Claimer(generation, me)
    async with db.pool.connection() as c:
        await claimer._prepare(c)
        claimed = "{" + ",".join(map(str, ids)) + "}"
        await c.execute("SELECT set_config('spectral.claimed', %s, false)", (claimed,))
        start = psycopg.sql.SQL("EXECUTE spectral_start_claimed_v1 ({}, {}, {}, {})").format(
            generation, me, ["t.x"], ["workers.a.one"]
        )
        async with c.transaction():
            rows_ = await (await c.execute(start)).fetchall()
    # one row with the held ids, then one per handler call to make
    assert rows_ == [([ids[2]], None, None), (None, "workers.a.one", ids[2])]
    assert conn.execute("SELECT status FROM core.outbox ORDER BY id").fetchall() == [
        ("in_flight",),
        ("pending",),
        ("done",),
    ]
    assert conn.execute("SELECT idempotency_key FROM core.event_handled").fetchall() == [("k2",)]


@pytest.mark.parametrize("fused", [False, True], ids=["general", "fused"])
async def test_an_orphan_release_waits_for_the_claims_under_way(
    db: Database, conn: psycopg.Connection[Any], generation: int, fused: bool
) -> None:
    """Lanes claim side by side.  An orphan release by one lane must not re-pend rows
    another lane has claimed but not yet recorded: the release waits for claims under way
    (here one held up right after its claim returned).  Every row is claimed once and none
    is lost to the release."""
    from structlog.testing import capture_logs

    effect_table(conn)
    Publisher(generation).publish_many(
        conn, [EventIn(topic="t.x", payload={}, idempotency_key=f"k{i}") for i in range(3)]
    )
    gate = anyio.Event()
    paused = anyio.Event()

    class HeldUp(Claimer):
        async def _hold(self, events: list[Event]) -> None:
            if events and not paused.is_set():
                consumer._orphans = True  # as after another lane's failure
                paused.set()
                await gate.wait()

        async def claim(self, c: Any, limit: int) -> list[Event]:
            events = await super().claim(c, limit)
            await self._hold(events)
            return events

        async def claim_started(self, c: Any, limit: int, routes: Any) -> Any:
            started = await super().claim_started(c, limit, routes)
            await self._hold(started[0])
            return started

    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=recording_registry("workers.a.one"),
        config=ConsumerConfig(lanes=2, batch_size=10, poll_interval_s=0.05, fused_cycle=fused),
    )
    consumer.claimer = consumer.processor.claimer = HeldUp(generation, consumer.claimer.worker_id)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            with anyio.fail_after(10):
                await paused.wait()
            await anyio.sleep(0.3)  # the other lane polls meanwhile and wants to release
            gate.set()
            with anyio.fail_after(10):
                while conn.execute(
                    "SELECT count(*) FROM core.outbox WHERE status = 'done'"
                ).fetchone() != (3,):
                    await anyio.sleep(0.02)
            consumer.stop()
    assert conn.execute("SELECT attempts FROM core.outbox").fetchall() == [(1,)] * 3
    assert not [e for e in logs if e["event"] == "outbox.claim_lost"]
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone() == (3,)


def _outbox_scans(plan: Any) -> set[str]:
    """How a plan reads core.outbox: index names, or "seq scan"."""
    found = set()
    if plan.get("Relation Name") == "outbox" and "Scan" in plan["Node Type"]:
        found.add(plan.get("Index Name", plan["Node Type"].lower()))
    for child in plan.get("Plans", []):
        found |= _outbox_scans(child)
    return found


def _has_initplan(plan: Any) -> bool:
    """A sub-select evaluated once per statement ("InitPlan 1"; CTEs show as "CTE x")."""
    return plan.get("Subplan Name", "").startswith("InitPlan") or any(
        _has_initplan(child) for child in plan.get("Plans", [])
    )


async def test_start_statements_find_rows_by_primary_key_and_read_the_id_list_once(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """ADR 0017: with statistics that see no row in flight (taken while the rows were
    pending), a settle statement testing `status = 'in_flight'` walks outbox_in_flight_v1
    over every row the worker ever claimed and filters all its lanes' batches by id.  The
    start statements (the fused one, generic plan included, and the general one) and
    `complete_batch` find their rows by primary key, and the fused start reads the claimed
    id list once (an InitPlan) instead of re-parsing it for each row it visits."""
    from spectral_core.sql import query

    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key) "
        "SELECT %s, 't.x', '{}', md5(i::text) FROM generate_series(1, 5000) AS i",
        (generation,),
    )
    conn.execute("ANALYZE core.outbox")
    me = uuid.uuid4()
    ids = [
        r[0]
        for r in conn.execute(
            "UPDATE core.outbox SET status = 'in_flight', claimed_by = %s "
            "WHERE id IN (SELECT id FROM core.outbox ORDER BY id LIMIT 400) RETURNING id",
            (me,),
        )
    ]
    batch = ids[:100]

    def explain(statement: str, params: Any) -> Any:
        return conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()[0][0]["Plan"]

    # control: the plain status test takes the in-flight index in this scenario
    control = (
        "UPDATE core.outbox SET status = 'done' WHERE id = ANY(%s) AND generation = %s "
        "AND status = 'in_flight' AND claimed_by = %s"
    )
    assert _outbox_scans(explain(control, (batch, generation, me))) == {"outbox_in_flight_v1"}
    params = {
        "generation": generation,
        "worker_id": me,
        "ids": batch,
        "handlers": ["workers.a.one"] * 100,
        "keys": [f"k{i}" for i in batch],
    }
    for name in ("start_batch", "complete_batch"):
        assert _outbox_scans(explain(query(name), params)) == {"outbox_pkey"}, name
    claimer = Claimer(generation, me)
    async with db.pool.connection() as c:
        await claimer._prepare(c)
        await c.execute(
            "SELECT set_config('spectral.claimed', %s, false)",
            ("{" + ",".join(map(str, batch)) + "}",),
        )
        for _ in range(6):  # past the custom plans: the generic plan is what runs
            cur = await c.execute(
                psycopg.sql.SQL(
                    "EXPLAIN (FORMAT JSON) EXECUTE spectral_start_claimed_v1 ({}, {}, {}, {})"
                ).format(generation, me, ["t.x"], ["workers.a.one"])
            )
            plan = (await cur.fetchone())[0][0]["Plan"]
            assert _outbox_scans(plan) == {"outbox_pkey"}
            assert _has_initplan(plan)
