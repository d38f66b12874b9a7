"""Hypothesis state machine over the real outbox (real PostgreSQL).

Random interleavings of publishes (committed and rolled back) in two generations, claims
by two consumers per generation (separately, or claim and start in one message as the
consumer does), handler successes and failures, crashes at any step (before handling, in
the middle of a batch transaction, after handling), and reaper runs.

Invariants:
* no row is ever claimed or handled by a consumer of another generation;
* no handler effect happens twice for one (handler, key);
* rolled-back publishes never appear;
* at the end, after recovery, every committed row is ``done`` or ``dead``, and every
  ``done`` row was handled by every subscribed handler.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from spectral_core import Event, HandlerRegistry, Publisher
from spectral_core.generations import allocate_generation
from spectral_core.outbox import BatchProcessor, Claimer, Reaper, RetryPolicy

HANDLERS = ("workers.prop.alpha", "workers.prop.beta")
KEYS = [f"k{i}" for i in range(8)]
MAX_ATTEMPTS = 4


class Crash(Exception):
    """Simulates the worker dying inside a handler (the transaction never commits)."""


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
        self.sync.execute(
            "CREATE TABLE public.effects (handler text, key text, row_gen bigint, "
            "consumer_gen bigint)"
        )
        self.aconns: list[psycopg.AsyncConnection[Any]] = [
            portal.call(_aconnect, url) for _ in range(4)
        ]

    def close(self) -> None:
        for c in self.aconns:
            self.portal.call(c.close)
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


class Consumer:
    """One simulated worker process: a claimer, its held batch, its connection."""

    def __init__(self, machine: OutboxMachine, index: int, gen: int) -> None:
        self.m = machine
        self.index = index
        self.gen = gen
        self.held: list[Event] = []
        self.restart()

    def restart(self) -> None:
        self.worker_id = uuid.uuid4()
        self.m.env.sync.execute(
            "INSERT INTO core.workers (id, generation, state, host, pid, version) "
            "VALUES (%s, %s, 'running', 'prop', 0, 'v')",
            (self.worker_id, self.gen),
        )
        self.claimer = Claimer(self.gen, self.worker_id)
        self.processor = BatchProcessor(
            self.claimer, self.m.registry, RetryPolicy(MAX_ATTEMPTS, 0.0001, 0.0001)
        )
        self.held = []

    @property
    def conn(self) -> psycopg.AsyncConnection[Any]:
        return self.m.env.aconns[self.index]


class OutboxMachine(RuleBasedStateMachine):
    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.committed: dict[int, tuple[int, str]] = {}
        self.failing: set[str] = set()
        self.crash_next = False
        self.registry = HandlerRegistry()
        for name in HANDLERS:
            self.registry.register(name, "t.prop", self._handler(name))

    def _handler(self, name: str) -> Any:
        async def handle(ev: Event, conn: psycopg.AsyncConnection[Any]) -> None:
            consumer_gen = self.current.gen
            await conn.execute(
                "INSERT INTO public.effects VALUES (%s, %s, %s, %s)",
                (name, ev.idempotency_key, ev.generation, consumer_gen),
            )
            if self.crash_next:
                raise Crash()
            if ev.idempotency_key in self.failing and name == HANDLERS[1]:
                raise RuntimeError("flaky handler")

        return handle

    @initialize()
    def setup(self) -> None:
        e = self.env
        e.sync.execute("TRUNCATE core.outbox, core.event_handled, core.workers, public.effects")
        self.cons = [Consumer(self, i, e.gens[i // 2]) for i in range(4)]
        self.current = self.cons[0]

    # -- rules ------------------------------------------------------------------------
    @rule(
        gen_index=st.integers(0, 1),
        key=st.sampled_from(KEYS),
        commit=st.booleans(),
        n=st.integers(1, 3),
    )
    def publish(self, gen_index: int, key: str, commit: bool, n: int) -> None:
        gen = self.env.gens[gen_index]
        pub = Publisher(gen)
        ids: list[int] = []
        try:
            with self.env.sync.transaction():
                for _ in range(n):
                    ids.append(
                        pub.publish(self.env.sync, "t.prop", {"k": key}, idempotency_key=key)
                    )
                if not commit:
                    raise _Rollback()
        except _Rollback:
            return
        for i in ids:
            self.committed[i] = (gen, key)

    @rule(which=st.integers(0, 3), limit=st.integers(1, 5))
    def claim(self, which: int, limit: int) -> None:
        c = self.cons[which]
        if c.held:
            return
        c.held = self.env.portal.call(c.claimer.claim, c.conn, limit)
        for ev in c.held:
            assert ev.generation == c.gen
            assert self.committed[ev.id][0] == c.gen

    @rule(which=st.integers(0, 3), fail_keys=st.sets(st.sampled_from(KEYS), max_size=3))
    def process(self, which: int, fail_keys: set[str]) -> None:
        c = self.cons[which]
        if not c.held:
            return
        self.failing = fail_keys
        self.current = c
        self.env.portal.call(c.processor.process, c.conn, c.held)
        c.held = []

    @rule(which=st.integers(0, 3), mid_batch=st.booleans())
    def crash(self, which: int, mid_batch: bool) -> None:
        """The worker dies: with its batch unhandled, or inside the batch transaction."""
        c = self.cons[which]
        if mid_batch and c.held:
            self.crash_next = True
            self.current = c
            try:
                # dies inside the first handler that runs; if every key of the batch was
                # already handled no handler runs and the batch simply completes
                self.env.portal.call(c.processor._batch, c.conn, c.held)
            except Crash:
                pass
            finally:
                self.crash_next = False
        self._mark_dead(c)

    def _mark_dead(self, c: Consumer) -> None:
        self.env.sync.execute(
            "UPDATE core.workers SET last_seen = now() - interval '1 hour' WHERE id = %s",
            (c.worker_id,),
        )
        c.restart()

    @rule(gen_index=st.integers(0, 1))
    def reap(self, gen_index: int) -> None:
        gen = self.env.gens[gen_index]
        before = self._in_flight_owners()
        self.env.portal.call(
            Reaper(gen, stale_after_s=60, max_attempts=MAX_ATTEMPTS).reap, self.cons[0].conn
        )
        after = self._in_flight_owners()
        # the reaper never touches another generation's rows
        assert {k: v for k, v in before.items() if v[0] != gen} == {
            k: v for k, v in after.items() if v[0] != gen
        }

    # -- invariants -------------------------------------------------------------------
    def _in_flight_owners(self) -> dict[int, tuple[int, Any]]:
        rows = self.env.sync.execute(
            "SELECT id, generation, claimed_by FROM core.outbox WHERE status = 'in_flight'"
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    @invariant()
    def no_cross_generation_claims_or_effects(self) -> None:
        if not hasattr(self, "cons"):
            return
        bad = self.env.sync.execute(
            "SELECT count(*) FROM core.outbox o JOIN core.workers w ON w.id = o.claimed_by "
            "WHERE o.status = 'in_flight' AND w.generation <> o.generation"
        ).fetchone()
        assert bad == (0,)
        # effects are written inside the handler transaction: only committed ones remain
        assert self.env.sync.execute(
            "SELECT count(*) FROM public.effects WHERE row_gen <> consumer_gen"
        ).fetchone() == (0,)

    @invariant()
    def rolled_back_publishes_never_appear(self) -> None:
        ids = {r[0] for r in self.env.sync.execute("SELECT id FROM core.outbox").fetchall()}
        assert ids == set(self.committed)

    def teardown(self) -> None:
        if not hasattr(self, "cons"):
            return
        # Recovery: every worker restarts, stale claims are reaped, everything drains.
        self.failing = set()
        for c in self.cons:
            self.crash_consumer_quietly(c)
        for _ in range(60):
            for gen in self.env.gens:
                self.env.portal.call(
                    Reaper(gen, stale_after_s=60, max_attempts=MAX_ATTEMPTS).reap, self.cons[0].conn
                )
            for c in self.cons:
                self.current = c
                c.held = self.env.portal.call(c.claimer.claim, c.conn, 50)
                if c.held:
                    self.env.portal.call(c.processor.process, c.conn, c.held)
                    c.held = []
            live = self.env.sync.execute(
                "SELECT count(*) FROM core.outbox WHERE status IN ('pending', 'in_flight')"
            ).fetchone()
            if live == (0,):
                break
            time.sleep(0.002)
        statuses = dict(self.env.sync.execute("SELECT id, status FROM core.outbox").fetchall())
        assert set(statuses) == set(self.committed)
        assert set(statuses.values()) <= {"done", "dead"}
        # rows written by rolled-back handler transactions vanish with them, so every
        # surviving row is a committed effect: at most one per (handler, key)
        survivors = self.env.sync.execute(
            "SELECT handler, key, count(*) FROM public.effects GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        assert survivors == []
        done_keys = {self.committed[i][1] for i, s in statuses.items() if s == "done"}
        handled = set(
            self.env.sync.execute(
                "SELECT handler_name, idempotency_key FROM core.event_handled"
            ).fetchall()
        )
        for key in done_keys:
            for name in HANDLERS:
                assert (name, key) in handled

    def crash_consumer_quietly(self, c: Consumer) -> None:
        self._mark_dead(c)


class _Rollback(Exception):
    pass


def test_outbox_state_machine(env: Env) -> None:
    """Runs the state machine above with a meaningful number of examples."""
    OutboxMachine.env = env
    runner = OutboxMachine.TestCase
    runner.settings = settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    runner().runTest()
