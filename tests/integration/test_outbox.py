"""Outbox semantics on a real PostgreSQL: publish, claim, handle, fail, reap, status."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest

from spectral_core import HandlerRegistry, Publisher
from spectral_core.db import Database
from spectral_core.errors import PayloadError, UnknownGeneration
from spectral_core.outbox import (
    BatchProcessor,
    Claimer,
    Event,
    EventIn,
    Reaper,
    RetryPolicy,
    channel_for,
    generation_status,
    redrive_dead,
)

pytestmark = pytest.mark.anyio


def rows(conn: psycopg.Connection[Any], where: str = "true") -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT id, generation, topic, status, attempts, idempotency_key FROM core.outbox "
        f"WHERE {where} ORDER BY id"  # noqa: S608 - test-only literal
    ).fetchall()


def effect_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE public.effects (handler text, key text, generation bigint, "
        "row_generation bigint)"
    )


def recording_registry(
    *names: str, topic: str = "t.x", fail: set[str] | None = None
) -> HandlerRegistry:
    """Handlers that write one row per execution into public.effects."""
    reg = HandlerRegistry()
    for name in names:

        async def fn(ev: Event, c: psycopg.AsyncConnection[Any], _name: str = name) -> None:
            await c.execute(
                "INSERT INTO public.effects VALUES (%s, %s, %s, %s)",
                (_name, ev.idempotency_key, ev.generation, ev.generation),
            )
            if fail and ev.payload.get("fail") and _name in fail:
                raise RuntimeError("boom")

        reg.register(name, topic, fn)
    return reg


async def test_publish_commits_row_and_notify_at_commit(
    db: Database, generation: int, db_url: str
) -> None:
    """A committed publish leaves exactly one pending row stamped with the generation, and
    the NOTIFY on the generation's channel arrives only after commit."""
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute(f"LISTEN {channel_for(generation)}")
    pub = Publisher(generation)
    async with db.pool.connection() as c:
        async with c.transaction():
            await pub.publish_async(c, "t.x", {"a": 1}, idempotency_key="k1")
            got_early = [n async for n in listener.notifies(timeout=0.2)]
            assert got_early == []
    got = [n async for n in listener.notifies(timeout=2, stop_after=1)]
    assert [n.channel for n in got] == [channel_for(generation)]
    await listener.close()
    with psycopg.connect(db_url, autocommit=True) as s:
        assert [(r[1], r[2], r[3], r[5]) for r in rows(s)] == [(generation, "t.x", "pending", "k1")]


async def test_rolled_back_publish_leaves_no_row_and_no_wakeup(
    db: Database, generation: int, db_url: str
) -> None:
    """A rolled-back transaction leaves no row and delivers no notification."""
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute(f"LISTEN {channel_for(generation)}")
    pub = Publisher(generation)
    async with db.pool.connection() as c:
        with pytest.raises(ZeroDivisionError):
            async with c.transaction():
                await pub.publish_async(c, "t.x", {"a": 1})
                1 / 0  # noqa: B018
    assert [n async for n in listener.notifies(timeout=0.5)] == []
    await listener.close()
    with psycopg.connect(db_url, autocommit=True) as s:
        assert rows(s) == []


def test_sync_publish_and_batched_publish(conn: psycopg.Connection[Any], generation: int) -> None:
    """The sync twin and the batched form write the same rows; keys default to unique ones;
    the batched form returns the new ids in input order."""
    pub = Publisher(generation)
    with conn.transaction():
        one = pub.publish(conn, "t.x", {"n": 0})
        many = pub.publish_many(conn, [EventIn(topic="t.y", payload={"n": i}) for i in range(3)])
    assert len(many) == 3 and one < many[0]
    got = rows(conn)
    assert [r[2] for r in got] == ["t.x", "t.y", "t.y", "t.y"]
    assert len({r[5] for r in got}) == 4
    for i, event_id in enumerate(many):  # ids come back in input order
        assert conn.execute(
            "SELECT payload FROM core.outbox WHERE id = %s", (event_id,)
        ).fetchone() == ({"n": i},)


@pytest.mark.parametrize(
    "topic,payload,key,fragment",
    [
        ("bad topic", {}, None, "invalid topic"),
        ("", {}, None, "invalid topic"),
        ("t.x", {"x": object()}, None, "not JSON-encodable"),
        ("t.x", {"x": "a" * 300_000}, None, "limit"),
        ("t.x", {"x": "\x00"}, None, "NUL"),
        ("t.x", {}, "", "idempotency_key"),
    ],
)
def test_bad_publish_is_a_clear_error_and_writes_nothing(
    conn: psycopg.Connection[Any],
    generation: int,
    topic: str,
    payload: Any,
    key: str | None,
    fragment: str,
) -> None:
    """Invalid topic, payload or key raises PayloadError naming the problem; no row appears."""
    with pytest.raises(PayloadError, match=fragment):
        Publisher(generation).publish(conn, topic, payload, idempotency_key=key)
    with pytest.raises(PayloadError):
        Publisher(generation).publish_many(
            conn,
            [
                EventIn(topic="t.ok", payload={}),
                EventIn(topic=topic, payload=payload, idempotency_key=key),
            ],
        )
    assert rows(conn) == []


def test_publish_to_an_unallocated_generation_is_refused_and_writes_nothing(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """A Publisher bound to a generation that was never allocated raises UnknownGeneration
    for single and batched publishes, and no row (and no NOTIFY) is written."""
    stray = Publisher(generation + 1000)
    with pytest.raises(UnknownGeneration):
        stray.publish(conn, "t.x", {})
    with pytest.raises(UnknownGeneration):
        stray.publish_many(conn, [EventIn(topic="t.x", payload={}) for _ in range(3)])
    assert rows(conn) == []
    assert Publisher(generation).publish(conn, "t.x", {}) > 0


async def test_claim_only_own_generation_oldest_first_and_available(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A claimer sees only its generation's pending, available rows, oldest first, and two
    claimers never get the same row."""
    from spectral_core.generations import allocate_generation

    other = allocate_generation(conn, "test-2")
    Publisher(other).publish_many(conn, [EventIn(topic="t.x", payload={}) for _ in range(5)])
    ids = Publisher(generation).publish_many(
        conn, [EventIn(topic="t.x", payload={}) for _ in range(6)]
    )
    conn.execute(
        "UPDATE core.outbox SET available_at = now() + interval '1 hour' WHERE id = %s", (ids[0],)
    )
    a, b = Claimer(generation, uuid.uuid4()), Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c1, db.pool.connection() as c2:
        first = await a.claim(c1, 3)
        second = await b.claim(c2, 10)
        assert [e.id for e in first] == ids[1:4]
        assert [e.id for e in second] == ids[4:]
        assert all(e.generation == generation for e in first + second)
        assert await a.claim(c1, 10) == []
    assert {r[3] for r in rows(conn, f"generation = {other}")} == {"pending"}


def sync_commit_probe(seen: list[str]) -> HandlerRegistry:
    """A handler on t.x that records the synchronous_commit its transaction runs with."""
    reg = HandlerRegistry()

    async def probe(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        seen.append((await (await c.execute("SHOW synchronous_commit")).fetchone())[0])

    reg.register("workers.a.probe", "t.x", probe)
    return reg


async def test_handlers_and_ledger_commit_together_and_row_done(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Every subscribed handler runs once; ledger rows exist for each; the row is done."""
    effect_table(conn)
    Publisher(generation).publish_many(
        conn, [EventIn(topic="t.x", payload={}, idempotency_key=f"k{i}") for i in range(4)]
    )
    reg = recording_registry("workers.a.one", "workers.a.two")
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        events = await claimer.claim(c, 10)
        await BatchProcessor(claimer, reg).process(c, events)
    assert {r[3] for r in rows(conn)} == {"done"}
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone() == (8,)
    assert conn.execute("SELECT count(*) FROM core.event_handled").fetchone() == (8,)


async def test_async_claim_commit_does_not_leak_into_the_handler_transaction(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """The claim commits with synchronous_commit off, for its own statement only: the
    connection's next transaction (where handlers run and the ledger is written) commits
    synchronously again."""
    Publisher(generation).publish(conn, "t.x", {})
    seen: list[str] = []
    reg = sync_commit_probe(seen)
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await c.execute("SET synchronous_commit = on")  # the test server's default is off
        assert len(await claimer.claim(c, 10)) == 1
        after_claim = (await (await c.execute("SHOW synchronous_commit")).fetchone())[0]
        await c.execute("UPDATE core.outbox SET status = 'pending'")  # claim again, then handle
        await BatchProcessor(claimer, reg).process(c, await claimer.claim(c, 10))
        await c.execute("RESET synchronous_commit")
    assert after_claim == "on"
    assert seen == ["on"]


async def test_rows_reaped_while_held_are_left_to_their_next_claimer(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """If the reaper took some of a batch back while we held it, we neither run handlers
    for those rows nor mark them done nor write their ledger rows nor log them as handled:
    the next claimer does, exactly once."""
    effect_table(conn)
    ids = Publisher(generation).publish_many(
        conn, [EventIn(topic="t.x", payload={}, idempotency_key=f"k{i}") for i in range(3)]
    )
    reg = recording_registry("workers.a.one")
    slow, fresh = Claimer(generation, uuid.uuid4()), Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        held = await slow.claim(c, 10)
        conn.execute(  # what the reaper does to a claimer it believes dead
            "UPDATE core.outbox SET status = 'pending', claimed_by = NULL WHERE id = %s",
            (ids[1],),
        )
        from structlog.testing import capture_logs

        with capture_logs() as logs:
            await BatchProcessor(slow, reg).process(c, held)
        assert [r[3] for r in rows(conn)] == ["done", "pending", "done"]
        handled = sorted(e["event_id"] for e in logs if e["event"] == "outbox.handled")
        assert handled == [ids[0], ids[2]]  # no "handled" line for the row we lost
        assert [e["completed"] for e in logs if e["event"] == "outbox.claim_lost"] == [2]
        assert conn.execute("SELECT key FROM public.effects ORDER BY key").fetchall() == [
            ("k0",),
            ("k2",),
        ]
        await BatchProcessor(fresh, reg).process(c, await fresh.claim(c, 10))
    assert {r[3] for r in rows(conn)} == {"done"}
    assert conn.execute(
        "SELECT key, count(*) FROM public.effects GROUP BY key ORDER BY key"
    ).fetchall() == [
        ("k0", 1),
        ("k1", 1),
        ("k2", 1),
    ]
    assert conn.execute("SELECT count(*) FROM core.event_handled").fetchone() == (3,)


async def test_redelivered_row_skips_handlers_that_already_ran(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A duplicate publish (same key) and a redelivery never repeat a handler's effect."""
    effect_table(conn)
    pub = Publisher(generation)
    pub.publish_many(conn, [EventIn(topic="t.x", payload={}, idempotency_key="same")] * 3)
    reg = recording_registry("workers.a.one")
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await BatchProcessor(claimer, reg).process(c, await claimer.claim(c, 10))
        pub.publish(conn, "t.x", {}, idempotency_key="same")
        await BatchProcessor(claimer, reg).process(c, await claimer.claim(c, 10))
    assert conn.execute("SELECT count(*) FROM public.effects").fetchone() == (1,)
    assert {r[3] for r in rows(conn)} == {"done"}


async def test_failing_handler_rolls_back_its_effect_and_backs_off_then_dead(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A failing handler leaves no effect and no ledger row, its neighbours in the batch
    still complete, the error is recorded, and after max attempts the row is dead."""
    effect_table(conn)
    pub = Publisher(generation)
    pub.publish(conn, "t.x", {}, idempotency_key="good1")
    bad = pub.publish(conn, "t.x", {"fail": True}, idempotency_key="bad")
    pub.publish(conn, "t.x", {}, idempotency_key="good2")
    reg = recording_registry("workers.a.one", "workers.a.two", fail={"workers.a.two"})
    claimer = Claimer(generation, uuid.uuid4())
    proc = BatchProcessor(claimer, reg, RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.001))
    async with db.pool.connection() as c:
        await proc.process(c, await claimer.claim(c, 10))
        status = conn.execute(
            "SELECT status, attempts, last_error FROM core.outbox WHERE id=%s", (bad,)
        ).fetchone()
        assert status[0] == "pending" and status[1] == 1 and "RuntimeError: boom" in status[2]
        # handler one succeeded for the bad row and must never run again for it
        for _ in range(2):
            await anyio.sleep(0.01)
            await proc.process(c, await claimer.claim(c, 10))
    assert conn.execute(
        "SELECT status, attempts FROM core.outbox WHERE id=%s", (bad,)
    ).fetchone() == ("dead", 3)
    effects = conn.execute(
        "SELECT handler, key, count(*) FROM public.effects GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert effects == [
        ("workers.a.one", "bad", 1),
        ("workers.a.one", "good1", 1),
        ("workers.a.one", "good2", 1),
        ("workers.a.two", "good1", 1),
        ("workers.a.two", "good2", 1),
    ]
    assert conn.execute(
        "SELECT count(*) FROM core.event_handled WHERE idempotency_key='bad'"
    ).fetchone() == (1,)
    assert redrive_dead(conn, generation) == [bad]
    assert conn.execute(
        "SELECT status, attempts FROM core.outbox WHERE id=%s", (bad,)
    ).fetchone() == ("pending", 0)


async def test_row_without_handler_goes_dead_with_reason(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A topic nobody handles in this generation ends dead and says why (not stuck)."""
    Publisher(generation).publish(conn, "t.nobody", {})
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await BatchProcessor(claimer, recording_registry("workers.a.one")).process(
            c, await claimer.claim(c, 10)
        )
    status, error = conn.execute("SELECT status, last_error FROM core.outbox").fetchone()
    assert status == "dead" and "no handler" in error


async def test_reaper_repends_only_dead_claimers_of_its_generation(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """The reaper re-pends in-flight rows whose claimer is unknown, exited or stale, keeps a
    live worker's rows, never touches another generation, and makes a poison row dead."""
    from spectral_core.generations import allocate_generation

    other = allocate_generation(conn, "test-2")
    live, dead_w = uuid.uuid4(), uuid.uuid4()
    for wid, state, age in ((live, "running", "0 s"), (dead_w, "running", "1 hour")):
        conn.execute(
            "INSERT INTO core.workers (id, generation, state, host, pid, version, last_seen)"
            " VALUES (%s, %s, %s, 'h', 1, 'v', now() - %s::interval)",
            (wid, generation, state, age),
        )
    pub = Publisher(generation)
    ids = pub.publish_many(conn, [EventIn(topic="t.x", payload={}) for _ in range(4)])
    other_id = Publisher(other).publish(conn, "t.x", {})
    conn.execute(
        "UPDATE core.outbox SET status='in_flight', attempts=1, claimed_by=%s WHERE id=%s",
        (live, ids[0]),
    )
    conn.execute(
        "UPDATE core.outbox SET status='in_flight', attempts=1, claimed_by=%s WHERE id=%s",
        (dead_w, ids[1]),
    )
    conn.execute(
        "UPDATE core.outbox SET status='in_flight', attempts=1, claimed_by=%s WHERE id=%s",
        (uuid.uuid4(), ids[2]),
    )
    conn.execute(
        "UPDATE core.outbox SET status='in_flight', attempts=5, claimed_by=%s WHERE id=%s",
        (dead_w, ids[3]),
    )
    conn.execute(
        "UPDATE core.outbox SET status='in_flight', attempts=1, claimed_by=%s WHERE id=%s",
        (dead_w, other_id),
    )
    async with db.pool.connection() as c:
        result = await Reaper(generation, stale_after_s=30, max_attempts=5).reap(c)
    assert result == {"pending": 2, "dead": 1}
    status = dict(conn.execute("SELECT id, status FROM core.outbox").fetchall())
    assert status == {
        ids[0]: "in_flight",
        ids[1]: "pending",
        ids[2]: "pending",
        ids[3]: "dead",
        other_id: "in_flight",
    }


def test_generation_status_counts_and_verdicts(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """deploy status: counts per generation and status; drained / draining / stranded."""
    from spectral_core.generations import allocate_generation

    g2 = allocate_generation(conn, "test-2")
    g3 = allocate_generation(conn, "test-3")
    Publisher(generation).publish_many(conn, [EventIn(topic="t.x", payload={})] * 2)
    Publisher(g2).publish(conn, "t.x", {})
    conn.execute("UPDATE core.outbox SET status='done' WHERE generation = %s", (generation,))
    conn.execute(
        "INSERT INTO core.workers (id, generation, state, host, pid, version) "
        "VALUES (%s, %s, 'running', 'h', 1, 'v')",
        (uuid.uuid4(), g3),
    )
    Publisher(g3).publish(conn, "t.x", {})
    got = {s.generation: s.as_dict() for s in generation_status(conn, stale_after_s=10)}
    assert got[generation]["verdict"] == "drained" and got[generation]["outbox"]["done"] == 2
    assert got[g2]["verdict"] == "stranded" and got[g2]["outbox"]["pending"] == 1
    assert got[g3]["verdict"] == "draining" and got[g3]["workers"]["live"] == 1


async def test_handler_swallowing_a_db_error_is_a_failure_not_a_silent_done(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A handler that catches a database error without a savepoint leaves the transaction
    failed; the row must be retried (not settled as done with its effect rolled back)."""
    conn.execute("CREATE TABLE public.uniq (k text PRIMARY KEY)")
    conn.execute("INSERT INTO public.uniq VALUES ('taken')")
    Publisher(generation).publish(conn, "t.x", {}, idempotency_key="k1")
    reg = HandlerRegistry()

    async def sloppy(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        try:
            await c.execute("INSERT INTO public.uniq VALUES ('taken')")
        except psycopg.errors.UniqueViolation:
            pass  # no savepoint: the transaction is now failed

    reg.register("workers.test.sloppy", "t.x", sloppy)
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await BatchProcessor(claimer, reg, RetryPolicy(max_attempts=5)).process(
            c, await claimer.claim(c, 10)
        )
    status, error = conn.execute("SELECT status, last_error FROM core.outbox").fetchone()
    assert status == "pending" and "swallowed a database error" in error
    assert conn.execute("SELECT count(*) FROM core.event_handled").fetchone() == (0,)


@pytest.mark.parametrize("ending", ["commit", "rollback"])
async def test_a_handler_cannot_end_the_batchs_transaction(
    db: Database, conn: psycopg.Connection[Any], generation: int, ending: str
) -> None:
    """The batch's first statement marks every row done and writes every ledger row, so a
    handler that committed the transaction half-way would settle the rows whose handlers
    had not run yet: they would be lost.  psycopg refuses ``commit()`` and ``rollback()``
    inside its transaction block, which is why the batch opens it with
    ``conn.transaction()`` and pays its ``BEGIN`` round trip (ADR 0049): the call fails,
    the batch rolls back, every other event is handled once and the culprit is retried."""
    effect_table(conn)
    pub = Publisher(generation)
    for key in ("before", "culprit", "after"):
        pub.publish(conn, "t.x", {}, idempotency_key=key)
    reg = HandlerRegistry()

    async def handler(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        await c.execute(
            "INSERT INTO public.effects VALUES ('h', %s, %s, %s)",
            (ev.idempotency_key, ev.generation, ev.generation),
        )
        if ev.idempotency_key == "culprit":
            await (c.commit() if ending == "commit" else c.rollback())

    reg.register("workers.test.ends", "t.x", handler)
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        await BatchProcessor(claimer, reg, RetryPolicy(max_attempts=5)).process(
            c, await claimer.claim(c, 10)
        )
    by_key = {
        k: (status, error)
        for k, status, error in conn.execute(
            "SELECT idempotency_key, status, last_error FROM core.outbox"
        ).fetchall()
    }
    assert by_key["before"][0] == by_key["after"][0] == "done"
    assert by_key["culprit"][0] == "pending" and "ProgrammingError" in by_key["culprit"][1]
    assert conn.execute(
        "SELECT key, count(*) FROM public.effects GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("after", 1), ("before", 1)]
    assert conn.execute("SELECT idempotency_key FROM core.event_handled ORDER BY 1").fetchall() == [
        ("after",),
        ("before",),
    ]


async def test_one_info_line_per_batch_and_debug_lines_per_event_without_payload(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A handled batch writes one `outbox.batch_handled` line at info (a busy worker used to
    write an info line per event); each event gets its own `outbox.handled` line with its id
    and topic at debug; no line carries the payload."""
    from structlog.testing import capture_logs

    Publisher(generation).publish_many(
        conn, [EventIn(topic="t.x", payload={"secret": f"s3cr3t-{i}"}) for i in range(3)]
    )
    effect_table(conn)
    reg = recording_registry("workers.a.one")
    claimer = Claimer(generation, uuid.uuid4())
    async with db.pool.connection() as c:
        events = await claimer.claim(c, 10)
        with capture_logs() as logs:
            await BatchProcessor(claimer, reg).process(c, events)
    handled = [e for e in logs if e["event"] == "outbox.handled"]
    assert sorted(e["event_id"] for e in handled) == sorted(e.id for e in events)
    assert all(e["topic"] == "t.x" and e["log_level"] == "debug" for e in handled)
    info = [e for e in logs if e["log_level"] == "info"]
    assert [(e["event"], e["handled"], e["batch"]) for e in info] == [
        ("outbox.batch_handled", 3, 3)
    ]
    assert "s3cr3t" not in repr(logs)


def test_unfinished_agent_turns_keep_a_generation_draining(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """A generation whose outbox is empty but which still has a pending World Agent turn is
    not drained: stopping it would strand the turn."""
    from spectral_core.outbox import drain

    conn.execute(
        "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, "
        "observation) VALUES ('o:d:k', %s, 'o', 'd', 'k', '{}')",
        (generation,),
    )
    status = {s.generation: s for s in generation_status(conn, stale_after_s=10)}[generation]
    assert status.turns == {"pending": 1} and status.verdict == "stranded"
    assert status.as_dict()["turns"] == {"pending": 1, "running": 0, "done": 0, "dead": 0}
    assert drain(conn, generation, timeout_s=0.2, poll_s=0.05) == (False, 1, 0)
    conn.execute("UPDATE agent.turns SET status = 'done'")
    assert drain(conn, generation, timeout_s=0.2) == (True, 0, 0)
