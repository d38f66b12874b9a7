"""The consumer: LISTEN plus poll, batched claims in parallel lanes, reconnects.

A consumer is bound to one generation (through its :class:`Claimer`).  ``lanes`` tasks
each loop *claim a batch -> handle it -> settle it*; an idle lane sleeps until a NOTIFY
on the generation's channel wakes it or ``poll_interval_s`` passes, so a lost
notification costs at most one poll interval.  A lane that claimed a full batch wakes
another lane, so a backlog is drained by every lane at once.

A notification wakes one idle lane, unless a lane it woke has not sent its claim yet:
that claim will see the notified row (PostgreSQL delivers a notification once the
sender's commit is visible), so waking a second lane would only send a claim that finds
nothing, or split a handful of rows into two batches each with its own commit (ADR 0047).
When notifications come faster than a batch takes, a lane at work gets the first chance at
them: it takes them in its next batch unless no claim was sent within about one recent
batch's time (ADR 0050).

Without ``SPECTRAL_DATABASE_SESSION_URL``, LISTEN goes over the main URL unless that is a
pooler (:func:`~spectral_core.db.pools.is_pooled`): then the lanes poll only.

When the listener or a pool connection drops, :attr:`Consumer.state` becomes
``reconnecting``; lanes keep polling through the pool if it still works, the listener
reconnects with bounded exponential backoff and jitter, and the consumer catches up from
the table once back.  After ``outage_limit_s`` of continuous failure :meth:`run` raises
:class:`~spectral_core.errors.ConnectionLost`.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import psycopg
import structlog
from psycopg import sql

from ..db import Database
from ..db._shielded import release_shielded
from ..db._wrap import is_connection_error, translate
from ..db.pools import is_pooled
from ..errors import ConfigError, ConnectionLost, DatabaseError
from ..liveness import SessionRecorder
from ..metrics.worker import WorkerStats
from ..settings import OUTBOX_BATCH_MAX, OUTBOX_LANES_MAX, Settings
from .backoff import next_delay
from .claim import Claimer
from .handlers import HandlerRegistry
from .process import BatchProcessor, RetryPolicy
from .records import channel_for

__all__ = ["Consumer", "ConsumerConfig"]

log = structlog.get_logger("spectral.consumer")

State = Literal["running", "reconnecting"]

#: a lane at work gets the first chance at a notification only while its batches have
#: lately taken less than this; with slower batches an idle lane is woken at once (ADR 0050)
_FIRST_CHANCE_MAX_S = 0.02


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    batch_size: int = 100
    lanes: int = 4
    poll_interval_s: float = 1.0
    listen: bool = True
    reconnect_backoff_cap_s: float = 5.0
    outage_limit_s: float = 300.0
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        # the bounds SPECTRAL_OUTBOX_* settings enforce, for configs built by hand: a batch
        # size of 0 would claim nothing forever and spin its lanes
        _check(
            1 <= self.batch_size <= OUTBOX_BATCH_MAX,
            "batch_size",
            self.batch_size,
            f"1..{OUTBOX_BATCH_MAX}",
        )
        _check(1 <= self.lanes <= OUTBOX_LANES_MAX, "lanes", self.lanes, f"1..{OUTBOX_LANES_MAX}")
        for name in ("poll_interval_s", "reconnect_backoff_cap_s", "outage_limit_s"):
            value = getattr(self, name)
            _check(value > 0, name, value, "> 0")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ConsumerConfig:
        values: dict[str, Any] = {
            "batch_size": settings.outbox_batch_size,
            "lanes": settings.outbox_lanes,
            "poll_interval_s": settings.poll_interval_s,
            "reconnect_backoff_cap_s": settings.reconnect_backoff_cap_s,
            "outage_limit_s": settings.outage_limit_s,
            "retry": RetryPolicy(
                settings.outbox_max_attempts,
                settings.outbox_backoff_base_s,
                settings.outbox_backoff_cap_s,
            ),
        }
        values.update(overrides)
        return cls(**values)


def _check(ok: bool, name: str, value: object, bounds: str) -> None:
    if not ok:
        raise ConfigError(f"ConsumerConfig.{name} must be {bounds}, got {value!r}")


def reconnect_delay(attempt: int, cap_s: float, rand: random.Random) -> float:
    """Bounded exponential backoff with jitter: 0.25 s, 0.5 s, 1 s ... up to ``cap_s``,
    each scaled by a random factor in [0.5, 1]."""
    return next_delay(attempt + 1, base_s=0.25, cap_s=cap_s, rand=rand)  # the one formula


class Consumer:
    """Consumes one generation's outbox rows with the registered handlers."""

    def __init__(
        self,
        db: Database,
        *,
        generation: int,
        worker_id: uuid.UUID,
        registry: HandlerRegistry,
        config: ConsumerConfig | None = None,
    ) -> None:
        self.db = db
        self.config = config or ConsumerConfig()
        self.claimer = Claimer(generation, worker_id)
        #: process counters, snapshotted into core.workers by the heartbeat (ADR 0029)
        self.stats = WorkerStats()
        self.processor = BatchProcessor(self.claimer, registry, self.config.retry, stats=self.stats)
        self.channel = channel_for(generation)
        self.handled = 0
        self._rand = random.Random()
        self._stopping = anyio.Event()
        self._idle: list[anyio.Event] = []
        self._missed_wake = False
        # lanes a notification woke that have not sent their claim yet (ADR 0047): the
        # events in _owed were set by _notified, not by a timeout or _wake_all
        self._owed: set[anyio.Event] = set()
        self._wake_pending = 0
        # ADR 0050: how long a batch has taken lately, when the last claim was sent, when
        # the last notification came, and the notification deferred to the lanes at work
        self._batch_s = _FIRST_CHANCE_MAX_S
        self._claim_sent = 0.0
        self._last_notified = 0.0
        self._deferred: float | None = None
        self._defer_wake = anyio.Event()
        self._inflight: set[int] = set()
        self._orphans = False
        self._listener_ok = True  # until the first failure: booting is not reconnecting
        self._pool_failing = False
        self._down_since: float | None = None
        self._listening = anyio.Event()
        self._claim_lock = anyio.Lock(fast_acquire=True)
        self._claiming = 0  # claims under way (claimed, not yet recorded in _inflight)
        self._no_claims: anyio.Event | None = None
        #: the backends the lanes work on, for a peer's reaper should we be declared lost
        #: (ADR 0027); it records nothing behind a pooler (no backend of our own there)
        self.sessions = SessionRecorder(worker_id)
        #: called whenever :attr:`state` changes (the worker beats at once)
        self.on_state_change: Callable[[], None] = lambda: None

    # -- observable state ---------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.claimer.generation

    @property
    def state(self) -> State:
        return "reconnecting" if (self._pool_failing or not self._listener_ok) else "running"

    @property
    def inflight(self) -> frozenset[int]:
        return frozenset(self._inflight)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_listening(self) -> None:
        """Wait until the listener is subscribed (tests, readiness)."""
        await self._listening.wait()

    def stop(self) -> None:
        """Stop claiming (idempotent); lanes finish the batch they hold."""
        if not self._stopping.is_set():
            self._stopping.set()
            log.info("consumer.stopping", inflight=len(self._inflight))
        self._wake_all()

    # -- main loop ------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`stop`; returns when every lane has settled its batch.

        Raises:
            ConnectionLost: the database stayed unreachable for ``outage_limit_s``.
        """
        async with anyio.create_task_group() as tg:
            if self.config.listen:
                tg.start_soon(self._listen_loop)
                tg.start_soon(self._deferred_wakes)
            async with anyio.create_task_group() as lanes:
                for i in range(self.config.lanes):
                    lanes.start_soon(self._lane, i)
            tg.cancel_scope.cancel()

    async def release_inflight(self, timeout_s: float = 5.0) -> int:
        """Give every row we still hold back to ``pending`` (shielded: survives cancellation;
        bounded by ``timeout_s``)."""
        return await release_shielded(
            self.db, self.claimer.release_all, event="consumer", timeout_s=timeout_s
        )

    # -- lanes ----------------------------------------------------------------------
    async def _lane(self, lane: int) -> None:
        batch = self.config.batch_size
        attempt = 0
        owed = False  # woken by a notification, claim not sent yet
        while not self._stopping.is_set():
            n = 0
            began = time.monotonic()
            try:
                async with self.db.pool.connection() as conn:
                    await self.sessions.note(conn)
                    # claims and orphan releases never interleave: an orphan release must
                    # not re-pend rows another lane has claimed but not yet recorded.  Claims
                    # run side by side; a release takes the lock, so no claim starts, and
                    # waits for the claims under way to record theirs.
                    async with self._claim_lock:
                        if self._orphans:
                            self._orphans = False
                            await self._claims_recorded()
                            await self.claimer.release_orphans(conn, list(self._inflight))
                        self._claiming += 1
                    try:
                        if owed:  # notifications from now on need a claim of their own
                            owed = False
                            self._wake_pending -= 1
                        self._claim_sent = time.monotonic()
                        events = await self.claimer.claim(conn, batch)
                        ids = [e.id for e in events]
                        self._inflight.update(ids)
                    finally:
                        self._claiming -= 1
                        if not self._claiming and self._no_claims is not None:
                            self._no_claims.set()
                    n = len(events)
                    if n:
                        self.stats.claims.observe(n)
                        if n == batch:
                            self._wake_one()
                        try:
                            await self.processor.process(conn, events)
                            self.handled += n
                            self._batch_s += (time.monotonic() - began - self._batch_s) / 8
                        except BaseException:
                            self._orphans = True
                            raise
                        finally:
                            self._inflight.difference_update(ids)
                self._set_pool_ok()
                attempt = 0
            except Exception as exc:
                if owed:  # failed before its claim: pass the wake-up on
                    owed = False
                    self._wake_pending -= 1
                    self._notified()
                if not is_connection_error(exc):
                    if not isinstance(exc, DatabaseError):
                        raise
                    # e.g. a deadlock with the reaper or a cancelled statement while
                    # settling: the claims go back (orphans) and the lane carries on
                    log.warning(
                        "consumer.db_error",
                        error=exc.message,
                        sqlstate=getattr(exc, "sqlstate", None),
                    )
                    self._orphans = True
                    await self._sleep_or_stop(
                        reconnect_delay(attempt, self.config.reconnect_backoff_cap_s, self._rand)
                    )
                    attempt += 1
                    continue
                self._set_pool_failing(exc)
                await self._sleep_or_stop(
                    reconnect_delay(attempt, self.config.reconnect_backoff_cap_s, self._rand)
                )
                attempt += 1
                continue
            if n < batch:
                owed = await self._wait_for_work()

    async def _claims_recorded(self) -> None:
        """Wait until no claim is under way (called with the claim lock held)."""
        while self._claiming:
            self._no_claims = anyio.Event()
            await self._no_claims.wait()
        self._no_claims = None

    async def _sleep_or_stop(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stopping.wait()

    async def _wait_for_work(self) -> bool:
        """Wait for a wake-up or the poll interval; True if a notification woke this lane
        (it then owes a claim, see :meth:`_notified`)."""
        if self._stopping.is_set():
            return False
        if self._missed_wake:
            self._missed_wake = False
            return False
        ev = anyio.Event()
        self._idle.append(ev)
        try:
            with anyio.move_on_after(self.config.poll_interval_s * self._rand.uniform(0.8, 1.0)):
                await ev.wait()
        finally:
            if ev in self._idle:
                self._idle.remove(ev)
        if ev in self._owed:
            self._owed.discard(ev)
            return True
        return False

    def _notified(self) -> None:
        """A notification arrived: wake one idle lane, unless a lane woken by an earlier
        one has not sent its claim yet (that claim sees this notification's row).

        When notifications come faster than a batch takes, a lane is at work and batches
        have lately been quick (under ``_FIRST_CHANCE_MAX_S``), the lane at work gets the
        first chance (ADR 0050): it re-claims as soon as its batch is settled
        (``_missed_wake``) and takes the row with whatever else arrived meanwhile; an idle
        lane is woken only if no claim was sent within about one recent batch's time.  At
        a steady rate a few lanes then take bigger batches, each paying its round trips and
        its commit once, instead of every lane taking an event or two.
        """
        now = time.monotonic()
        # events arriving faster than a batch takes: one lane's next batch takes several
        frequent = now - self._last_notified < self._batch_s
        self._last_notified = now
        if self._wake_pending:
            return
        if not self._idle:
            self._missed_wake = True
        elif (
            frequent
            and len(self._idle) < self.config.lanes  # a lane is at work (or backing off)
            and self._batch_s < _FIRST_CHANCE_MAX_S
        ):
            self._missed_wake = True
            if self._deferred is None:
                self._deferred = now
                self._defer_wake.set()
        else:
            self._wake_owed()

    def _wake_owed(self) -> None:
        """Wake an idle lane, which then owes a claim (see :meth:`_notified`)."""
        ev = self._idle.pop()
        self._owed.add(ev)
        self._wake_pending += 1
        ev.set()

    async def _deferred_wakes(self) -> None:
        """Wake an idle lane for a deferred notification that no claim sent since took up
        within about one recent batch's time (the lanes at work are slower than lately)."""
        while True:
            await self._defer_wake.wait()
            self._defer_wake = anyio.Event()
            await anyio.sleep(self._batch_s)
            since, self._deferred = self._deferred, None
            if since is None or not self._missed_wake or not self._idle or self._wake_pending:
                continue  # nothing owed, or a lane will claim anyway
            if self._claim_sent <= since:  # no claim sent after it (ties: wake, to be safe)
                self._missed_wake = False
                self._wake_owed()
            else:  # a claim took that row; a notification that came after it is owed one
                self._deferred = time.monotonic()
                self._defer_wake.set()

    def _wake_one(self) -> None:
        if self._idle:
            self._idle.pop().set()
        else:
            self._missed_wake = True

    def _wake_all(self) -> None:
        while self._idle:
            self._idle.pop().set()

    # -- health bookkeeping -------------------------------------------------------
    def _set_pool_failing(self, exc: BaseException) -> None:
        now = time.monotonic()
        if not self._pool_failing:
            self._pool_failing = True
            log.warning("consumer.reconnecting", component="pool", error_type=type(exc).__name__)
            self.on_state_change()
        self._note_down(now, exc)

    def _set_pool_ok(self) -> None:
        if self._pool_failing:
            self._pool_failing = False
            log.info("consumer.running", component="pool")
            self._orphans = True
            self.on_state_change()
        self._note_up()

    def _note_down(self, now: float, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = now
        elif now - self._down_since > self.config.outage_limit_s:
            raise ConnectionLost(
                "database unreachable for longer than the outage limit",
                outage_limit_s=self.config.outage_limit_s,
            ) from exc

    def _note_up(self) -> None:
        if not self._pool_failing and self._listener_ok:
            self._down_since = None

    # -- listener -------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        attempt = 0
        while True:
            try:
                conn = await self.db.connect_session()
                try:
                    if not self.db.settings.database_session_url and await is_pooled(conn):
                        # LISTEN needs a session of its own: through a transaction pooler
                        # the notifications would be silently lost
                        log.warning(
                            "consumer.polling_only",
                            reason="SPECTRAL_DATABASE_URL goes through a pooler and "
                            "SPECTRAL_DATABASE_SESSION_URL is not set",
                            fix="set SPECTRAL_DATABASE_SESSION_URL to a direct or "
                            "session-mode URL for prompt wake-ups",
                            poll_interval_s=self.config.poll_interval_s,
                        )
                        self._listening.set()
                        return
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    was_ok = self._listener_ok
                    self._listener_ok = True
                    if not was_ok:
                        log.info("consumer.running", component="listener")
                        self.on_state_change()
                    self._note_up()
                    self._listening.set()
                    attempt = 0
                    self._wake_all()  # catch up on whatever arrived while we were away
                    await self._consume_notifies(conn)
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        await conn.close()
            except Exception as exc:
                if not is_connection_error(exc):
                    if isinstance(exc, psycopg.Error):
                        raise translate(exc) from exc
                    raise
                if self._listener_ok:
                    self._listener_ok = False
                    log.warning(
                        "consumer.reconnecting", component="listener", error_type=type(exc).__name__
                    )
                    self.on_state_change()
                self._note_down(time.monotonic(), exc)
                await anyio.sleep(
                    reconnect_delay(attempt, self.config.reconnect_backoff_cap_s, self._rand)
                )
                attempt += 1

    async def _consume_notifies(self, conn: psycopg.AsyncConnection[Any]) -> None:
        check_every = max(self.config.poll_interval_s * 5, 2.0)
        # a peer that acknowledges at the TCP level but never answers (a proxy or pooler
        # cut off from the server) is invisible to keepalives: bound the probe itself
        answer_within = max(self.db.settings.database_tcp_timeout_s, 2.0)
        while True:
            got = False
            async for _ in conn.notifies(timeout=check_every):
                got = True
                self._notified()
            if not got:  # quiet period: make sure the connection is still alive
                with anyio.move_on_after(answer_within) as probe:
                    await conn.execute("SELECT 1")
                if probe.cancelled_caught:
                    raise ConnectionLost(
                        "the LISTEN session did not answer", timeout_s=answer_within
                    )
