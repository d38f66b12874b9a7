"""The World Agent's turn reaper follows the outbox reaper's rules (ADR 0027): it never
waits for a lock, never takes its own worker's turns, and judges nobody while its own
heartbeat is stale or has not been steady for a whole stale bound after an outage."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import anyio
import psycopg
import pytest

from spectral_core import Settings
from spectral_core.agent import AgentConfig, TurnQueue, open_world_agent
from spectral_core.db import Database
from spectral_core.errors import ConnectionLost, DatabaseError
from spectral_core.liveness import Heartbeat, SessionRecorder, WorkerInfo
from spectral_core.outbox.reaper import LOCK_TIMEOUT_MS

pytestmark = pytest.mark.anyio


def add_worker(conn: psycopg.Connection[Any], generation: int, *, age: str = "0 s") -> uuid.UUID:
    """A running core.workers row whose heartbeat is ``age`` old."""
    wid = uuid.uuid4()
    conn.execute(
        "INSERT INTO core.workers (id, generation, state, host, pid, version, last_seen)"
        " VALUES (%s, %s, 'running', 'h', 1, 'v', now() - %s::interval)",
        (wid, generation, age),
    )
    return wid


def add_turn(
    conn: psycopg.Connection[Any], generation: int, claimed_by: uuid.UUID, *, attempts: int = 1
) -> str:
    """A turn of ``generation`` running under ``claimed_by``."""
    thread = f"acme:alpha:{uuid.uuid4()}"
    conn.execute(
        "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key,"
        " observation, status, attempts, claimed_by, claimed_at)"
        " VALUES (%s, %s, 'acme', 'alpha', %s, '{}', 'running', %s, %s, now())",
        (thread, generation, thread, attempts, claimed_by),
    )
    return thread


def statuses(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(conn.execute("SELECT thread_id, status FROM agent.turns").fetchall())


async def reap(
    db: Database, queue: TurnQueue, *, stale_after_s: float = 30, interval_s: float = 0.2
) -> list[Any]:
    async with db.pool.connection() as c:
        return await queue.reap(
            c, stale_after_s=stale_after_s, max_attempts=5, heartbeat_interval_s=interval_s
        )


async def test_the_turn_reaper_skips_a_locked_turn_instead_of_waiting_for_it(
    db: Database, conn: psycopg.Connection[Any], generation: int, db_url: str
) -> None:
    """A lost worker's turn locked by a transaction that stays open (a frozen worker in the
    middle of settling it) must not hold up the turn reaper: the pass returns at once,
    re-pends the other lost turn, and takes the locked one once its lock is gone."""
    me = add_worker(conn, generation)
    frozen, killed = (
        add_worker(conn, generation, age="1 hour"),
        add_worker(conn, generation, age="1 hour"),
    )
    held, free = add_turn(conn, generation, frozen), add_turn(conn, generation, killed)
    queue = TurnQueue(generation, me)
    async with await psycopg.AsyncConnection.connect(db_url) as holder:  # not autocommit
        await holder.execute("SELECT 1 FROM agent.turns WHERE thread_id = %s FOR UPDATE", (held,))
        with anyio.fail_after(5):
            got = await reap(db, queue)
        assert got == [(free, "pending")]
        assert statuses(conn) == {held: "running", free: "pending"}
        await holder.rollback()
    assert await reap(db, queue) == [(held, "pending")]


async def test_the_turn_reaper_gives_up_on_a_lock_after_the_lock_timeout(
    db: Database, conn: psycopg.Connection[Any], generation: int, db_url: str
) -> None:
    """No lock can hold the turn reaper for long: with agent.turns locked whole (a
    migration's ALTER waiting in a transaction), a pass fails within about the lock timeout
    with a DatabaseError and changes nothing, and the next pass after the lock works."""
    me = add_worker(conn, generation)
    thread = add_turn(conn, generation, add_worker(conn, generation, age="1 hour"))
    queue = TurnQueue(generation, me)
    async with await psycopg.AsyncConnection.connect(db_url) as holder:
        await holder.execute("LOCK TABLE agent.turns IN ACCESS EXCLUSIVE MODE")
        started = anyio.current_time()
        with anyio.fail_after(10), pytest.raises(DatabaseError) as err:
            await reap(db, queue)
        waited = anyio.current_time() - started
        await holder.rollback()
    assert err.value.sqlstate == "55P03"  # lock_not_available
    assert waited < LOCK_TIMEOUT_MS / 1000 + 3
    assert statuses(conn) == {thread: "running"}
    assert await reap(db, queue) == [(thread, "pending")]


async def test_the_turn_reaper_never_takes_its_own_turns_nor_judges_while_stale(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """After an outage every heartbeat is old.  A turn reaper whose own worker's heartbeat
    is not fresh judges nobody (its pass may have been queued through the outage); once it
    is fresh, it re-pends the lost peer's turn but never its own worker's, a rule that holds
    on its own: with a heartbeat interval longer than the stale bound the judge counts as
    fresh for a while after its turns count as lost, and they are still left alone."""
    me, peer = add_worker(conn, generation), add_worker(conn, generation)
    mine, theirs = add_turn(conn, generation, me), add_turn(conn, generation, peer)
    conn.execute("UPDATE core.workers SET last_seen = now() - interval '20 s'")
    queue = TurnQueue(generation, me)
    assert await reap(db, queue, stale_after_s=2) == []
    assert statuses(conn) == {mine: "running", theirs: "running"}
    conn.execute("UPDATE core.workers SET last_seen = now() WHERE id = %s", (me,))
    assert await reap(db, queue, stale_after_s=2) == [(theirs, "pending")]
    assert statuses(conn) == {mine: "running", theirs: "pending"}
    conn.execute("UPDATE core.workers SET last_seen = now() - interval '2 s' WHERE id = %s", (me,))
    assert await reap(db, queue, stale_after_s=1, interval_s=3) == []
    assert statuses(conn) == {mine: "running", theirs: "pending"}


async def test_the_agent_reaps_turns_only_once_its_heartbeat_has_been_steady(
    settings: Settings, db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """The runner's reap loop, given the worker's heartbeat, judges nobody until that
    heartbeat has been written without a failure for a whole stale bound after an outage,
    so peers have renewed theirs by then; it then takes the lost peer's turn."""
    me = uuid.uuid4()
    beat = Heartbeat(
        db, WorkerInfo(me, generation, "h", 1, "v"), interval_s=0.2, sessions=SessionRecorder(me)
    )
    config = AgentConfig(
        poll_interval_s=0.1,
        reap_interval_s=0.1,
        stale_after_s=2,
        heartbeat_interval_s=0.2,
        max_attempts=1,  # a reaped turn ends dead, so the runner never claims it
    )
    async with (
        beat,
        open_world_agent(
            settings.replace(llm_credential={}),
            db,
            generation=generation,
            worker_id=me,
            config=config,
        ) as agent,
    ):
        await beat.register()
        theirs = add_turn(conn, generation, add_worker(conn, generation, age="1 hour"))
        conn.execute(  # an outage of the heartbeat's connection: the next write fails
            "SELECT pg_terminate_backend(pid) FROM core.worker_sessions WHERE worker_id = %s",
            (me,),
        )
        with pytest.raises(ConnectionLost):
            await beat.beat()
        assert beat.steady_for() == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(beat.run)
            tg.start_soon(partial(agent.run, heartbeat=beat))
            await anyio.sleep(1.2)
            early = statuses(conn)[theirs]
            with anyio.fail_after(10):
                while statuses(conn)[theirs] != "dead":
                    await anyio.sleep(0.05)
            agent.stop()
            tg.cancel_scope.cancel()
    assert early == "running"
    assert beat.steady_for() >= 2
