"""The one claim path (ADR 0034): ``core.outbox_claim_v1`` and ``core.outbox_start_v2``,
called the same way everywhere.  What the start re-checks, how a failing start and lanes
claiming side by side are handled, and the plans the functions run with: on statistics
that no longer describe the table (taken while everything was pending, or while the outbox
was empty), and past the plan cache's switch to a generic plan."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import psycopg
import pytest

from spectral_core import Consumer, ConsumerConfig, Publisher
from spectral_core.db import Database
from spectral_core.outbox import Claimer, Event, EventIn, RetryPolicy
from spectral_core.sql import query

from .test_outbox import effect_table, recording_registry

pytestmark = pytest.mark.anyio


async def test_a_start_that_keeps_failing_still_reaches_dead_through_the_retry_policy(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """If the start statement itself fails (here a trigger on the ledger refuses one key),
    the rows the claim took are not stuck in flight: the batch is redone row by row, the
    good neighbour is handled and the poison row goes through backoff to dead with the
    database error recorded."""
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
    """The start statement re-checks every id it is given: a row the reaper took back
    (pending) or that another worker holds is neither marked done nor written to the
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
    async with db.pool.connection() as c:
        async with c.transaction():
            cur = await c.execute(
                query("start_batch"),
                {
                    "generation": generation,
                    "worker_id": me,
                    "ids": ids,
                    "topics": ["t.x"],
                    "handlers": ["workers.a.one"],
                },
            )
            rows_ = await cur.fetchall()
    # one row with the held ids, then one per handler call to make
    assert rows_ == [([ids[2]], None, None), (None, "workers.a.one", ids[2])]
    assert conn.execute("SELECT status FROM core.outbox ORDER BY id").fetchall() == [
        ("in_flight",),
        ("pending",),
        ("done",),
    ]
    assert conn.execute("SELECT idempotency_key FROM core.event_handled").fetchall() == [("k2",)]


async def test_an_orphan_release_waits_for_the_claims_under_way(
    db: Database, conn: psycopg.Connection[Any], generation: int
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

    consumer = Consumer(
        db,
        generation=generation,
        worker_id=uuid.uuid4(),
        registry=recording_registry("workers.a.one"),
        config=ConsumerConfig(lanes=2, batch_size=10, poll_interval_s=0.05),
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


@contextmanager
def nested_plans(conn: psycopg.Connection[Any]) -> Iterator[list[Any]]:
    """The plans of the statements run inside functions on ``conn``, as they ran
    (auto_explain, sent to this client as LOG messages)."""
    plans: list[Any] = []

    def seen(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if text.startswith("duration:") and "{" in text:
            plans.append(json.loads(text[text.index("{") :])["Plan"])

    conn.execute("LOAD 'auto_explain'")
    for name, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_format", "json"),
        ("client_min_messages", "log"),
    ):
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    conn.add_notice_handler(seen)
    try:
        yield plans
    finally:
        conn.remove_notice_handler(seen)
        conn.execute("RESET client_min_messages")
        conn.execute("RESET auto_explain.log_min_duration")


def outbox_scans(plan: Any) -> set[str]:
    """How a plan reads core.outbox: index names, or "seq scan"."""
    found = set()
    if plan.get("Relation Name") == "outbox" and "Scan" in plan["Node Type"]:
        found.add(plan.get("Index Name", "seq scan"))
    for child in plan.get("Plans", []):
        found |= outbox_scans(child)
    return found


def limit_scans(plan: Any, under_limit: bool = False) -> set[str]:
    """How the claim's ``LIMIT`` (the choice of rows) reads the outbox: index names, or
    "seq scan" (the UPDATE then finds the chosen rows by primary key)."""
    under_limit = under_limit or plan.get("Node Type") == "Limit"
    found = set()
    if under_limit and plan.get("Relation Name") == "outbox" and "Scan" in plan["Node Type"]:
        found.add(plan.get("Index Name", "seq scan"))
    for child in plan.get("Plans", []):
        found |= limit_scans(child, under_limit)
    return found


def claim_plans(conn: psycopg.Connection[Any], generation: int, times: int = 7) -> list[Any]:
    """The plans of ``times`` claims (past the plan cache's five custom plans, the generic
    plan is what runs)."""
    with nested_plans(conn) as plans:
        for _ in range(times):
            conn.execute(
                query("claim_batch"),
                {"generation": generation, "worker_id": uuid.uuid4(), "limit": 10},
            ).fetchall()
    return [p for p in plans if outbox_scans(p)]


def start_plans(
    conn: psycopg.Connection[Any], generation: int, me: uuid.UUID, ids: list[int], times: int = 7
) -> list[Any]:
    """The plans of ``times`` starts of a batch of ``ids`` (each rolled back)."""
    params = {
        "generation": generation,
        "worker_id": me,
        "ids": ids,
        "topics": ["t.x"],
        "handlers": ["workers.a.one"],
    }
    with nested_plans(conn) as plans:
        for _ in range(times):
            with conn.transaction(force_rollback=True):
                conn.execute(query("start_batch"), params).fetchall()
    return [p for p in plans if outbox_scans(p)]


def fill(conn: psycopg.Connection[Any], generation: int, n: int) -> None:
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key) "
        "SELECT %s, 't.x', '{}', md5(i::text) FROM generate_series(1, %s) AS i",
        (generation, n),
    )


def test_the_claim_uses_the_pending_indexes_on_statistics_taken_while_all_was_pending(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """ADR 0016/0034: statistics taken while a backlog was pending say "every row is
    pending"; once most rows are done, a claim `generation = g ... ORDER BY id` planned
    on the table's indexes alone walks the primary key and filters out every finished row.
    The claim function keeps the plain predicate and reads only the pending rows' partial
    indexes (outbox_pending_id_v1 gives the id order inside them), generic plan included."""
    fill(conn, generation, 20000)
    conn.execute("ANALYZE core.outbox")
    conn.execute("UPDATE core.outbox SET status = 'done' WHERE id % 20 <> 0")
    plans = claim_plans(conn, generation)
    assert len(plans) == 7
    for plan in plans:
        assert limit_scans(plan) <= {"outbox_pending_id_v1", "outbox_pending_v1"}, outbox_scans(
            plan
        )
    # control: without outbox_pending_id_v1 the same predicate walks the primary key
    conn.execute("DROP INDEX core.outbox_pending_id_v1")
    plan = conn.execute(
        "EXPLAIN (FORMAT JSON) SELECT id FROM core.outbox WHERE generation = %s "
        "AND status = 'pending' AND available_at <= now() ORDER BY id LIMIT 10 "
        "FOR UPDATE SKIP LOCKED",
        (generation,),
    ).fetchone()[0][0]["Plan"]
    assert outbox_scans(plan) == {"outbox_pkey"}


def test_claim_and_start_use_their_indexes_on_an_outbox_analyzed_while_empty(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """Issue 20.1, the cliff of a fresh install (or an outbox emptied by retention):
    statistics taken on an empty outbox, and plans cached while it was empty, made the claim
    and its UPDATE read the whole table once it had grown (a sequential scan per claim).
    After a claim and a start have run (and cached their plans) on an empty, freshly
    analyzed outbox, both still read only indexes once it holds 20,000 rows."""
    conn.execute("ANALYZE core.outbox")
    me = uuid.uuid4()
    for _ in range(7):  # plans made, and cached, while the outbox is empty
        conn.execute(
            query("claim_batch"), {"generation": generation, "worker_id": me, "limit": 100}
        ).fetchall()
    start_plans(conn, generation, me, [1, 2, 3])
    fill(conn, generation, 20000)
    conn.execute("UPDATE core.outbox SET status = 'done' WHERE id % 20 <> 0")
    plans = claim_plans(conn, generation)
    assert len(plans) == 7
    for plan in plans:
        assert "seq scan" not in outbox_scans(plan), outbox_scans(plan)
        assert limit_scans(plan) <= {"outbox_pending_id_v1", "outbox_pending_v1"}
    ids = [
        r[0]
        for r in conn.execute(
            "UPDATE core.outbox SET status = 'in_flight', claimed_by = %s "
            "WHERE id IN (SELECT id FROM core.outbox WHERE status = 'pending' LIMIT 100) "
            "RETURNING id",
            (me,),
        )
    ]
    for plan in start_plans(conn, generation, me, ids):
        assert "seq scan" not in outbox_scans(plan), outbox_scans(plan)


def test_the_start_finds_its_rows_by_id_whatever_index_the_statistics_pick(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """ADR 0017/0034: with statistics that see no row in flight (taken while the rows were
    pending), a settle statement testing `status = 'in_flight' AND claimed_by = w` takes the
    in-flight index; on outbox_in_flight_v1 (generation, claimed_by) that walked every entry
    the worker ever left there.  The start (generic plan included) and `complete_batch`
    read the primary key or outbox_in_flight_v2, whose key ends with the id, so the batch's
    ids bound the walk."""
    fill(conn, generation, 5000)
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

    def bounded_by_ids(plan: Any) -> bool:
        """Every outbox scan is the primary key, or outbox_in_flight_v2 with the ids in
        its index condition."""
        ok = True
        if plan.get("Relation Name") == "outbox" and "Scan" in plan["Node Type"]:
            name = plan.get("Index Name")
            cond = plan.get("Index Cond", "")
            ok = name == "outbox_pkey" or (name == "outbox_in_flight_v2" and "id = ANY" in cond)
        return ok and all(bounded_by_ids(c) for c in plan.get("Plans", []))

    plans = start_plans(conn, generation, me, batch)
    assert len(plans) == 7
    assert all(bounded_by_ids(p) for p in plans), [outbox_scans(p) for p in plans]
    complete = conn.execute(
        "EXPLAIN (FORMAT JSON) " + query("complete_batch"),
        {"generation": generation, "worker_id": me, "ids": batch},
    ).fetchone()[0][0]["Plan"]
    assert bounded_by_ids(complete), outbox_scans(complete)
