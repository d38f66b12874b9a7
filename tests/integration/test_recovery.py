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


async def handle_all(db: Database, generation: int, reg: HandlerRegistry, *, n: int) -> None:
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


async def test_rows_that_failed_were_reaped_or_redriven_end_done_without_an_error(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Issue 16.7: a `done` row never shows an error.  A row that failed once (then went
    through the batch path or the row-by-row redo), a row the reaper took back from a dead
    worker, and a dead row an operator re-drove all end `done` with `last_error` cleared."""
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

    await handle_all(db, generation, flaky_registry(failures), n=4)

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


def claim_for(conn: psycopg.Connection[Any], worker: uuid.UUID, event_id: int) -> None:
    conn.execute(
        "UPDATE core.outbox SET status = 'in_flight', attempts = 1, claimed_by = %s WHERE id = %s",
        (worker, event_id),
    )


def statuses(conn: psycopg.Connection[Any]) -> dict[int, str]:
    return dict(conn.execute("SELECT id, status FROM core.outbox").fetchall())


async def test_the_reaper_skips_a_locked_row_instead_of_waiting_for_it(
    db: Database, conn: psycopg.Connection[Any], generation: int, db_url: str
) -> None:
    """Issue 16.1: a lost worker's row locked by a transaction that stays open (a frozen
    worker's handler transaction) must not hold up the reaper: the pass returns at once,
    re-pends the other lost claims, and takes the locked row once its lock is gone."""
    ids = Publisher(generation).publish_many(conn, [EventIn(topic="t.x", payload={})] * 2)
    frozen, killed = (
        add_worker(conn, generation, age="1 hour"),
        add_worker(conn, generation, age="1 hour"),
    )
    claim_for(conn, frozen, ids[0])
    claim_for(conn, killed, ids[1])
    async with await psycopg.AsyncConnection.connect(db_url) as holder:  # not autocommit
        await holder.execute("SELECT 1 FROM core.outbox WHERE id = %s FOR UPDATE", (ids[0],))
        async with db.pool.connection() as c:
            with anyio.fail_after(5):
                got = await Reaper(generation, stale_after_s=30, max_attempts=5).reap(c)
        assert got == {"pending": 1, "dead": 0}
        assert statuses(conn) == {ids[0]: "in_flight", ids[1]: "pending"}
        await holder.rollback()
    async with db.pool.connection() as c:
        assert await Reaper(generation, stale_after_s=30, max_attempts=5).reap(c) == {
            "pending": 1,
            "dead": 0,
        }
    assert set(statuses(conn).values()) == {"pending"}


async def test_every_reaper_statement_gives_up_on_a_lock_after_the_lock_timeout(
    db: Database, conn: psycopg.Connection[Any], generation: int, db_url: str
) -> None:
    """Issue 16.1: no lock can hold the reaper for long: with the outbox locked whole (a
    migration's ALTER waiting in a transaction), a pass fails within about the lock timeout
    with a DatabaseError and changes nothing, and the next pass after the lock works."""
    from spectral_core.errors import DatabaseError
    from spectral_core.outbox.reaper import LOCK_TIMEOUT_MS

    event_id = Publisher(generation).publish(conn, "t.x", {})
    claim_for(conn, add_worker(conn, generation, age="1 hour"), event_id)
    async with await psycopg.AsyncConnection.connect(db_url) as holder:
        await holder.execute("LOCK TABLE core.outbox IN ACCESS EXCLUSIVE MODE")
        async with db.pool.connection() as c:
            started = anyio.current_time()
            with anyio.fail_after(10), pytest.raises(DatabaseError) as err:
                await Reaper(generation, stale_after_s=30, max_attempts=5).reap(c)
            waited = anyio.current_time() - started
        await holder.rollback()
    assert err.value.sqlstate == "55P03"  # lock_not_available
    assert waited < LOCK_TIMEOUT_MS / 1000 + 3
    assert statuses(conn) == {event_id: "in_flight"}
    async with db.pool.connection() as c:
        await Reaper(generation, stale_after_s=30, max_attempts=5).reap(c)
    assert statuses(conn) == {event_id: "pending"}


async def test_a_lost_worker_loses_its_recorded_sessions_and_its_locked_claims(
    db: Database, conn: psycopg.Connection[Any], generation: int, db_url: str
) -> None:
    """Issue 16.1: a worker declared lost loses its server sessions.  Its recorded backend,
    frozen in an open handler transaction that locks its claimed row, is terminated by a
    peer's reaper, which then re-pends the row in the same pass.  A live worker's session,
    the judge's own, and a recorded pid whose backend start does not match (a reused pid)
    are left alone."""
    from spectral_core.liveness import SessionRecorder

    event_id = Publisher(generation).publish(conn, "t.x", {})
    lost, live, judge = (
        add_worker(conn, generation, age="1 hour"),
        add_worker(conn, generation),
        add_worker(conn, generation),
    )
    claim_for(conn, lost, event_id)
    sessions = {}
    for name, wid in (("lost", lost), ("live", live), ("judge", judge)):
        c = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        await SessionRecorder(wid).note(c)
        sessions[name] = c
    # a stale record naming the live worker's pid with another start time
    conn.execute(
        "INSERT INTO core.worker_sessions (worker_id, pid, backend_start) "
        "VALUES (%s, %s, now() - interval '1 day')",
        (lost, sessions["live"].info.backend_pid),
    )
    frozen = sessions["lost"]
    await frozen.execute("BEGIN")
    await frozen.execute("SELECT 1 FROM core.outbox WHERE id = %s FOR UPDATE", (event_id,))
    try:
        async with db.pool.connection() as c:
            with anyio.fail_after(10):
                got = await Reaper(
                    generation, stale_after_s=30, max_attempts=5, worker_id=judge
                ).reap(c)
        assert got == {"pending": 1, "dead": 0}
        assert statuses(conn) == {event_id: "pending"}
        with pytest.raises(psycopg.OperationalError):
            await frozen.execute("SELECT 1")
        for name in ("live", "judge"):
            assert await (await sessions[name].execute("SELECT 1")).fetchone() == (1,)
    finally:
        for c in sessions.values():
            await c.close()


async def test_the_reaper_terminates_only_backends_that_still_carry_the_lost_workers_name(
    db: Database, conn: psycopg.Connection[Any], generation: int, db_url: str
) -> None:
    """Issue 16.1 / ADR 0041: the reaper terminates a recorded backend only while it is
    still the lost worker's own session: pid, start time *and* the worker's unique
    application_name (which the recorder gives the session) must all match.  A recorded
    backend that now carries another client's application_name (a pooler that passed a
    real server pid through, its shared backend now serving someone else) and a recorded
    pid whose start time matches no live backend are left alone; the lost worker's
    untouched session is terminated in the same pass."""
    from spectral_core.liveness import SessionRecorder, session_application_name

    lost, judge = add_worker(conn, generation, age="1 hour"), add_worker(conn, generation)
    own = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    shared = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    bystander = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        recorder = SessionRecorder(lost)
        await recorder.note(own)
        await recorder.note(shared)
        name = session_application_name(lost)
        recorded = conn.execute(
            "SELECT a.application_name FROM core.worker_sessions AS s "
            "JOIN pg_stat_activity AS a ON a.pid = s.pid AND a.backend_start = s.backend_start "
            "WHERE s.worker_id = %s",
            (lost,),
        ).fetchall()
        assert recorded == [(name,), (name,)]
        # the shared backend now serves another client (its name is that client's)
        await shared.execute("SET application_name = 'another-client'")
        # a record naming a live backend's pid with the worker's name but another start
        conn.execute(
            "INSERT INTO core.worker_sessions (worker_id, pid, backend_start, application_name)"
            " VALUES (%s, %s, now() - interval '1 day', %s)",
            (lost, bystander.info.backend_pid, name),
        )
        await bystander.execute("SELECT set_config('application_name', %s, false)", (name,))
        async with db.pool.connection() as c:
            with anyio.fail_after(10):
                await Reaper(generation, stale_after_s=30, max_attempts=5, worker_id=judge).reap(c)
        with pytest.raises(psycopg.OperationalError):
            await own.execute("SELECT 1")
        for survivor in (shared, bystander):
            assert await (await survivor.execute("SELECT 1")).fetchone() == (1,)
    finally:
        for c in (own, shared, bystander):
            await c.close()


async def test_a_worker_never_reaps_its_own_claims_nor_judges_while_it_is_stale(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Issue 23.4: after an outage every heartbeat is old (a pooler PAUSE, say).  A
    worker's reaper whose own heartbeat is not fresh judges nobody (its pass may have been
    queued through the outage); once it is fresh, it still never takes its own worker's
    claims, and with its heartbeat given it waits until that heartbeat has been written
    without a failure for a whole stale bound, so peers have renewed theirs by then."""
    from spectral_core.errors import ConnectionLost
    from spectral_core.liveness import Heartbeat, SessionRecorder, WorkerInfo

    ids = Publisher(generation).publish_many(conn, [EventIn(topic="t.x", payload={})] * 2)
    me = uuid.uuid4()
    beat = Heartbeat(
        db,
        WorkerInfo(me, generation, "h", 1, "v"),
        interval_s=0.2,
        sessions=SessionRecorder(me),
    )
    async with beat:
        await beat.register()
        peer = add_worker(conn, generation)
        claim_for(conn, me, ids[0])
        claim_for(conn, peer, ids[1])
        conn.execute("UPDATE core.workers SET last_seen = now() - interval '20 s'")
        reaper = Reaper(
            generation, stale_after_s=2, max_attempts=5, worker_id=me, heartbeat_interval_s=0.2
        )
        async with db.pool.connection() as c:
            assert await reaper.reap(c) == {"pending": 0, "dead": 0}
        assert set(statuses(conn).values()) == {"in_flight"}

        await beat.beat()  # fresh again; the peer has not beaten yet
        async with db.pool.connection() as c:
            assert await reaper.reap(c) == {"pending": 1, "dead": 0}
        assert statuses(conn) == {ids[0]: "in_flight", ids[1]: "pending"}

        # the run loop: nothing is judged until the heartbeat has been steady for 2 s
        claim_for(conn, peer, ids[1])
        assert beat.steady_for() == float("inf")  # no failed write since it started
        conn.execute(  # an outage of the heartbeat's connection: the next write fails
            "SELECT pg_terminate_backend(pid) FROM core.worker_sessions WHERE worker_id = %s",
            (me,),
        )
        with pytest.raises(ConnectionLost):
            await beat.beat()
        assert beat.steady_for() == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(beat.run)
            tg.start_soon(lambda: reaper.run(db, 0.1, heartbeat=beat))
            await anyio.sleep(1.2)
            early = statuses(conn)[ids[1]]
            with anyio.fail_after(10):
                while statuses(conn)[ids[1]] != "pending":
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert early == "in_flight"
        assert statuses(conn)[ids[0]] == "in_flight"
        assert beat.steady_for() >= 2


def test_deploy_status_shows_stale_workers_as_lost_and_hides_rows_past_the_retention(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """Issue 16.5: a worker that did not exit but whose heartbeat is older than the stale
    bound is shown as `lost` (whatever its row last said: running or reconnecting); rows
    not seen within the retention are not shown at all."""
    from spectral_core.outbox import generation_status

    add_worker(conn, generation)
    add_worker(conn, generation, age="1 minute")
    add_worker(conn, generation, age="1 minute", state="reconnecting")
    add_worker(conn, generation, state="reconnecting")
    add_worker(conn, generation, age="1 minute", state="exited")
    add_worker(conn, generation, age="3 days")
    add_worker(conn, generation, age="3 days", state="exited")
    got = {
        s.generation: s.as_dict()
        for s in generation_status(conn, stale_after_s=10, retention_s=86400)
    }
    assert got[generation]["workers"] == {"live": 1, "reconnecting": 1, "lost": 2, "exited": 1}


async def test_the_reaper_prunes_rows_of_long_gone_workers_with_their_sessions(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """Issue 16.5: rows of workers not seen for the retention, lost or exited, of any
    generation, are deleted by a reaper pass together with their recorded sessions; newer
    rows and the reaper's own worker's row stay, and without a retention nothing goes."""
    from spectral_core.generations import allocate_generation

    other = allocate_generation(conn, "test-2")
    me = add_worker(conn, generation, age="2 hours")  # (its own row is never pruned)
    fresh = add_worker(conn, generation, age="30 minutes")
    gone = [
        add_worker(conn, generation, age="2 hours"),
        add_worker(conn, generation, age="2 hours", state="exited"),
        add_worker(conn, other, age="2 hours"),
    ]
    for wid in (*gone, fresh):
        conn.execute(
            "INSERT INTO core.worker_sessions (worker_id, pid, backend_start) "
            "VALUES (%s, 1, now())",
            (wid,),
        )
    async with db.pool.connection() as c:
        await Reaper(generation, stale_after_s=30, max_attempts=5).reap(c)
        assert conn.execute("SELECT count(*) FROM core.workers").fetchone() == (5,)
        await Reaper(
            generation, stale_after_s=30, max_attempts=5, worker_id=me, retention_s=3600
        ).reap(c)
    assert {r[0] for r in conn.execute("SELECT id FROM core.workers").fetchall()} == {me, fresh}
    assert conn.execute("SELECT worker_id FROM core.worker_sessions").fetchall() == [(fresh,)]


def test_the_retention_must_exceed_the_stale_bound() -> None:
    """SPECTRAL_WORKER_RETENTION_S: a clear error when it is not larger than the stale
    bound (a live worker's row would be pruned), and a safe default of one day."""
    from spectral_core import Settings
    from spectral_core.errors import ConfigError

    assert Settings.from_env({}).worker_retention_s == 86400
    with pytest.raises(ConfigError, match="SPECTRAL_WORKER_RETENTION_S"):
        Settings.from_env({"SPECTRAL_WORKER_RETENTION_S": "5"})
    assert Settings.from_env({"SPECTRAL_WORKER_RETENTION_S": "60"}).worker_retention_s == 60
