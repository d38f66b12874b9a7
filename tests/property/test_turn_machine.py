"""Hypothesis state machine over the World Agent's turn queue (real PostgreSQL), as
test_outbox_machine.py covers the outbox (issue 17.4).

Random interleavings of hand-offs (committed and rolled back) in two generations, claims
by two workers per generation, completions, transient and permanent failures, workers
dying while they hold a turn, reaper passes and operator re-drives of dead turns.

Invariants:
* no worker ever claims, and no reaper or re-drive ever touches, a turn of another
  generation;
* no turn runs to completion twice (a finish by a worker that lost its claim is refused);
* rolled-back hand-offs never appear;
* at the end, after recovery, every handed-off turn is ``done`` or ``dead`` (none lost),
  every ``done`` one completed exactly once and every ``dead`` one never.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from spectral_core.agent.redrive import redrive_dead_turns
from spectral_core.agent.turns import Turn, TurnQueue, enqueue_turn
from spectral_core.generations import allocate_generation

KEYS = [f"k{i}" for i in range(6)]
MAX_ATTEMPTS = 3
STALE_S = 60.0


class Env:
    """Long-lived resources shared by all examples: one database, one event loop."""

    def __init__(self, url: str, portal: BlockingPortal) -> None:
        self.url = url
        self.portal = portal
        self.sync = psycopg.connect(url, autocommit=True)
        self.gens = [
            allocate_generation(self.sync, "prop-a"),
            allocate_generation(self.sync, "prop-b"),
        ]
        self.aconn: psycopg.AsyncConnection[Any] = portal.call(_aconnect, url)

    def close(self) -> None:
        self.portal.call(self.aconn.close)
        self.sync.close()


async def _aconnect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    with start_blocking_portal(backend="asyncio") as portal:
        e = Env(db_url, portal)
        try:
            yield e
        finally:
            e.close()


class Worker:
    """One simulated worker: its queue, the turn it holds."""

    def __init__(self, machine: TurnMachine, gen: int) -> None:
        self.m = machine
        self.gen = gen
        self.held: Turn | None = None
        self.restart()

    def restart(self) -> None:
        self.worker_id = uuid.uuid4()
        self.m.env.sync.execute(
            "INSERT INTO core.workers (id, generation, state, host, pid, version) "
            "VALUES (%s, %s, 'running', 'prop', 0, 'v')",
            (self.worker_id, self.gen),
        )
        self.queue = TurnQueue(self.gen, self.worker_id)
        self.held = None

    def die(self) -> None:
        """Stops heartbeating (its claim is now the reaper's) and comes back as new."""
        self.m.env.sync.execute(
            "UPDATE core.workers SET last_seen = now() - interval '1 hour' WHERE id = %s",
            (self.worker_id,),
        )
        self.restart()


class TurnMachine(RuleBasedStateMachine):
    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.committed: dict[str, int] = {}  # thread -> generation
        self.completions: Counter[str] = Counter()
        self.stale_holders: list[tuple[TurnQueue, Turn]] = []

    @initialize()
    def setup(self) -> None:
        self.env.sync.execute("TRUNCATE agent.turns, core.workers")
        self.workers = [Worker(self, self.env.gens[i // 2]) for i in range(4)]

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return self.env.portal.call(lambda: fn(self.env.aconn, *args, **kw))

    def _snapshot(self, gen: int) -> dict[str, tuple[Any, ...]]:
        rows = self.env.sync.execute(
            "SELECT thread_id, status, attempts, claimed_by FROM agent.turns "
            "WHERE generation <> %s",
            (gen,),
        ).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    # -- rules ------------------------------------------------------------------------
    @rule(gen_index=st.integers(0, 1), key=st.sampled_from(KEYS), commit=st.booleans())
    def hand_off(self, gen_index: int, key: str, commit: bool) -> None:
        gen = self.env.gens[gen_index]

        async def go() -> bool:
            conn = self.env.aconn
            async with conn.transaction(force_rollback=not commit):
                return await enqueue_turn(
                    conn,
                    generation=gen,
                    org="o",
                    domain=f"g{gen}",
                    idempotency_key=key,
                    outbox_id=None,
                    observation={"k": key},
                )

        fresh = self.env.portal.call(go)
        if commit and fresh:
            self.committed[f"o:g{gen}:{key}"] = gen

    @rule(which=st.integers(0, 3))
    def claim(self, which: int) -> None:
        w = self.workers[which]
        if w.held is not None:
            return
        w.held = self._call(w.queue.claim)
        if w.held is not None:
            assert w.held.generation == w.gen
            assert self.committed[w.held.thread_id] == w.gen

    @rule(which=st.integers(0, 3))
    def complete(self, which: int) -> None:
        w = self.workers[which]
        if w.held is None:
            return
        if self._call(w.queue.finish, w.held.thread_id, {"ok": True}):
            self.completions[w.held.thread_id] += 1
        w.held = None

    @rule(which=st.integers(0, 3), permanent=st.booleans())
    def fail(self, which: int, permanent: bool) -> None:
        w = self.workers[which]
        if w.held is None:
            return
        self._call(
            w.queue.fail,
            w.held.thread_id,
            "scripted",
            permanent=permanent,
            delay_s=0.0,
            max_attempts=MAX_ATTEMPTS,
        )
        w.held = None

    @rule(which=st.integers(0, 3))
    def die(self, which: int) -> None:
        """The worker dies holding its turn (or nothing): it may still try to finish it
        later, as a frozen worker that wakes up would."""
        w = self.workers[which]
        if w.held is not None:
            self.stale_holders.append((w.queue, w.held))
        w.die()

    @rule()
    def late_finish(self) -> None:
        """A worker declared dead wakes up and finishes the turn it held: refused once its
        claim was reaped (the reaped turn may already be someone else's)."""
        if not self.stale_holders:
            return
        queue, turn = self.stale_holders.pop(0)
        if self._call(queue.finish, turn.thread_id, {"late": True}):
            self.completions[turn.thread_id] += 1

    @rule(gen_index=st.integers(0, 1))
    def reap(self, gen_index: int) -> None:
        gen = self.env.gens[gen_index]
        judge = self.workers[2 * gen_index]
        self.env.sync.execute(
            "UPDATE core.workers SET last_seen = now() WHERE id = %s", (judge.worker_id,)
        )
        before = self._snapshot(gen)
        self._call(
            judge.queue.reap,
            stale_after_s=STALE_S,
            max_attempts=MAX_ATTEMPTS,
            heartbeat_interval_s=1.0,
        )
        assert self._snapshot(gen) == before  # never another generation's turns

    @rule(gen_index=st.integers(0, 1))
    def redrive(self, gen_index: int) -> None:
        gen = self.env.gens[gen_index]
        before = self._snapshot(gen)
        for thread in redrive_dead_turns(self.env.sync, gen):
            assert self.committed[thread] == gen
        assert self._snapshot(gen) == before

    # -- invariants -------------------------------------------------------------------
    @invariant()
    def no_cross_generation_claims(self) -> None:
        if not hasattr(self, "workers"):
            return
        bad = self.env.sync.execute(
            "SELECT count(*) FROM agent.turns t JOIN core.workers w ON w.id = t.claimed_by "
            "WHERE t.status = 'running' AND w.generation <> t.generation"
        ).fetchone()
        assert bad == (0,)

    @invariant()
    def no_turn_completes_twice_and_none_appears_unasked(self) -> None:
        assert all(n <= 1 for n in self.completions.values())
        threads = {r[0] for r in self.env.sync.execute("SELECT thread_id FROM agent.turns")}
        assert threads == set(self.committed)

    def teardown(self) -> None:
        if not hasattr(self, "workers"):
            return
        # Recovery: every worker dies and comes back, the reapers run, the fresh workers
        # run everything to completion.
        for w in self.workers:
            w.die()
        for _ in range(200):
            for gi in (0, 1):
                self.reap(gi)
            progressed = False
            for w in self.workers:
                w.held = self._call(w.queue.claim)
                if w.held is not None:
                    progressed = True
                    self.complete(self.workers.index(w))
            if not progressed:
                live = self.env.sync.execute(
                    "SELECT count(*) FROM agent.turns WHERE status IN ('pending', 'running')"
                ).fetchone()
                if live == (0,):
                    break
        # the dead workers wake up and try to finish what they held: always refused now
        while self.stale_holders:
            self.late_finish()
        statuses = dict(self.env.sync.execute("SELECT thread_id, status FROM agent.turns"))
        assert set(statuses) == set(self.committed)  # no turn lost
        for thread, status in statuses.items():
            assert status in ("done", "dead"), (thread, status)
            assert self.completions[thread] == (1 if status == "done" else 0), thread


def test_turn_queue_state_machine(env: Env) -> None:
    """Runs the state machine above with a meaningful number of examples."""
    TurnMachine.env = env
    runner = TurnMachine.TestCase
    runner.settings = settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    runner().runTest()
