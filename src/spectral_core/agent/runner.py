"""Turns from events: the observe handler (hand-off) and the turn runner.

``workers.world_agent.observe`` handles ``world.observe`` events inside the outbox batch
transaction and only *hands the turn off*: it checks the domain is wired and writes one
``agent.turns`` row, which commits with its ``core.event_handled`` row.  That takes
milliseconds, so a turn never holds an outbox batch transaction or lane.

:class:`AgentRunner` runs the turns, at most ``agent_concurrency`` at once
(``anyio.CapacityLimiter``), each on the checkpointer's own pool.  A finished turn
publishes ``world.decided`` in the same transaction that marks it ``done``; a turn that
fails permanently (no credential, budget exceeded, model refusal) ends ``dead`` with the
reason and publishes ``world.failed``; a transient failure re-pends it with backoff, and
the re-run resumes from its last checkpoint.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import structlog

from ..db import Database
from ..db._shielded import release_shielded
from ..db._wrap import is_connection_error
from ..errors import DatabaseError, PayloadError
from ..liveness import Heartbeat
from ..outbox import Event, Handler, Publisher
from ..outbox.backoff import next_delay
from ..settings import Settings
from ..tracing import context_from, maybe_span
from .checkpoint import CheckpointPool, saver_for_turn
from .errors import AgentError, AgentNotWired
from .graph import build_graph, initial_state
from .model import CallPolicy, ChatModel, TurnBudget
from .tools import PlatformTools
from .turns import Turn, TurnQueue, enqueue_turn

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

__all__ = [
    "DECIDED_TOPIC",
    "FAILED_TOPIC",
    "HANDLER_NAME",
    "OBSERVE_TOPIC",
    "AgentConfig",
    "AgentRunner",
    "ObservePayload",
    "make_observe_handler",
]

log = structlog.get_logger("spectral.agent")

HANDLER_NAME = "workers.world_agent.observe"
OBSERVE_TOPIC = "world.observe"
DECIDED_TOPIC = "world.decided"
FAILED_TOPIC = "world.failed"

_ORG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ObservePayload(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a ``world.observe`` event."""

    org: str
    domain: str
    observation: Any = None


def parse_observe(payload: Any) -> ObservePayload:
    """Raises:
    PayloadError: not an observe payload.
    """
    try:
        p = msgspec.convert(payload, ObservePayload)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"world.observe payload: {exc}") from None
    if not _ORG.match(p.org) or not _DOMAIN.match(p.domain):
        raise PayloadError(
            "world.observe payload: bad org or domain name", org=p.org, domain=p.domain
        )
    return p


def not_wired(domain: str) -> AgentNotWired:
    return AgentNotWired(
        f"no LLM credential configured for domain {domain!r} "
        f"(set SPECTRAL_LLM_CREDENTIAL__{domain.upper()})",
        domain=domain,
    )


def make_observe_handler(credentials: Mapping[str, str]) -> Handler:
    """The ``workers.world_agent.observe`` handler: validate, then hand the turn off.

    A domain without a credential is refused here, so its events fail (and end ``dead``
    after the outbox's retries) with the reason, while other domains' events go on.
    """
    wired = frozenset(d for d, c in credentials.items() if c)

    async def observe(event: Event, conn: Any) -> None:
        p = parse_observe(event.payload)
        if p.domain not in wired:
            raise not_wired(p.domain)
        fresh = await enqueue_turn(
            conn,
            generation=event.generation,
            org=p.org,
            domain=p.domain,
            idempotency_key=event.idempotency_key,
            outbox_id=event.id,
            observation=p.observation,
        )
        log.info("agent.turn_enqueued", event_id=event.id, org=p.org, domain=p.domain, fresh=fresh)

    return observe


@dataclass(frozen=True, slots=True)
class AgentConfig:
    concurrency: int = 4
    poll_interval_s: float = 1.0
    reap_interval_s: float = 2.0
    stale_after_s: float = 10.0
    heartbeat_interval_s: float = 2.0
    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    policy: CallPolicy = CallPolicy()
    budget: TurnBudget = TurnBudget()

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AgentConfig:
        values: dict[str, Any] = {
            "concurrency": settings.agent_concurrency,
            "poll_interval_s": settings.agent_poll_interval_s,
            "reap_interval_s": settings.reaper_interval_s,
            "stale_after_s": settings.worker_stale_after_s,
            "heartbeat_interval_s": settings.heartbeat_interval_s,
            "max_attempts": settings.agent_max_attempts,
            "backoff_base_s": settings.outbox_backoff_base_s,
            "backoff_cap_s": settings.outbox_backoff_cap_s,
            "policy": CallPolicy(
                timeout_s=settings.agent_llm_timeout_s,
                retries=settings.agent_llm_retries,
                backoff_base_s=settings.agent_llm_backoff_base_s,
            ),
            "budget": TurnBudget(
                max_steps=settings.agent_max_steps, max_tokens=settings.agent_max_tokens
            ),
        }
        values.update(overrides)
        return cls(**values)


class AgentRunner:
    """Claims turns of one generation and runs them under a concurrency limit."""

    def __init__(
        self,
        db: Database,
        checkpoints: CheckpointPool,
        tools: PlatformTools,
        models: Mapping[str, ChatModel],
        *,
        generation: int,
        worker_id: uuid.UUID,
        config: AgentConfig | None = None,
        unavailable: str | None = None,
    ) -> None:
        self.db = db
        #: why no model could be built at all (e.g. the provider's extra is missing)
        self.unavailable = unavailable
        self.checkpoints = checkpoints
        self.tools = tools
        self.models = dict(models)
        self.config = config or AgentConfig()
        self.queue = TurnQueue(generation, worker_id)
        self.publisher = Publisher(generation)
        self.limiter = anyio.CapacityLimiter(self.config.concurrency)
        self.running: set[str] = set()
        self.completed = 0
        self._claiming = anyio.CancelScope()
        self._wake = anyio.Event()

    @property
    def generation(self) -> int:
        return self.queue.generation

    def stop(self) -> None:
        """Stop claiming (idempotent); running turns go on until cancelled."""
        if not self._claiming.cancel_called:
            log.info("agent.stopping", running=len(self.running))
        self._claiming.cancel()

    def poke(self) -> None:
        """Claim again now instead of at the next poll."""
        self._wake.set()

    async def run(self, *, heartbeat: Heartbeat | None = None) -> None:
        """Claim and run turns until :meth:`stop`; returns when running turns are done.

        ``heartbeat`` is the worker's: the turn reaper judges nobody until it has beaten
        without a failure for a whole stale bound (ADR 0027).
        """
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reap_loop, heartbeat)
            async with anyio.create_task_group() as turns:
                with self._claiming:
                    await self._claim_loop(turns)
            tg.cancel_scope.cancel()

    async def release_inflight(self, timeout_s: float = 10.0) -> int:
        """Give every turn we still hold back to ``pending`` (shielded; bounded by
        ``timeout_s``)."""
        return await release_shielded(
            self.db, self.queue.release, event="agent", timeout_s=timeout_s
        )

    # -- claiming -----------------------------------------------------------------------
    async def _claim_loop(self, turns: anyio.abc.TaskGroup) -> None:
        while True:
            token = object()
            await self.limiter.acquire_on_behalf_of(token)
            try:
                turn = await self._claim_one()
            except BaseException:
                self.limiter.release_on_behalf_of(token)
                raise
            if turn is None:
                self.limiter.release_on_behalf_of(token)
                await self._idle()
                continue
            self.running.add(turn.thread_id)
            turns.start_soon(self._run_claimed, turn, token, name=f"turn {turn.thread_id}")

    async def _claim_one(self) -> Turn | None:
        try:
            async with self.db.pool.connection() as conn:
                return await self.queue.claim(conn)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("agent.db_unavailable", error_type=type(exc).__name__)
            return None

    async def _idle(self) -> None:
        with anyio.move_on_after(self.config.poll_interval_s):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _reap_loop(self, heartbeat: Heartbeat | None) -> None:
        """Reap every ``reap_interval_s``; with ``heartbeat``, a pass runs only once it
        has beaten without a failure for a whole stale bound (ADR 0027)."""
        while True:
            if heartbeat is None or heartbeat.steady_for() >= self.config.stale_after_s:
                try:
                    async with self.db.pool.connection() as conn:
                        reaped = await self.queue.reap(
                            conn,
                            stale_after_s=self.config.stale_after_s,
                            max_attempts=self.config.max_attempts,
                            heartbeat_interval_s=self.config.heartbeat_interval_s,
                        )
                    if reaped:
                        log.warning("agent.reaped", n=len(reaped))
                        self.poke()
                except Exception as exc:
                    if is_connection_error(exc):
                        log.warning("agent.db_unavailable", error_type=type(exc).__name__)
                    elif isinstance(exc, DatabaseError):
                        # a lock timeout or a cancelled statement: the pass is rolled back
                        # whole, the next one tries again
                        log.warning(
                            "agent.reap_db_error",
                            error=exc.message,
                            sqlstate=getattr(exc, "sqlstate", None),
                        )
                    else:
                        raise
            await anyio.sleep(self.config.reap_interval_s)

    # -- one turn -----------------------------------------------------------------------
    async def _run_claimed(self, turn: Turn, token: object) -> None:
        started = time.perf_counter()
        try:
            with (
                structlog.contextvars.bound_contextvars(
                    thread_id=turn.thread_id, org=turn.org, domain=turn.domain
                ),
                maybe_span(
                    "agent.turn",
                    context=context_from(turn.trace_parent),
                    attributes={
                        "spectral.generation": turn.generation,
                        "spectral.attempt": turn.attempts,
                        "spectral.agent.domain": turn.domain,
                    },
                ),
            ):
                try:
                    values = await self.execute(turn)
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        try:
                            async with self.db.pool.connection(timeout=3) as conn:
                                await self.queue.release(conn, [turn.thread_id])
                        except Exception as exc:
                            log.warning("agent.release_failed", error_type=type(exc).__name__)
                    raise
                except Exception as exc:
                    await self._failed(turn, exc)
                    return
                await self._finished(turn, values, started)
        finally:
            self.running.discard(turn.thread_id)
            self.limiter.release_on_behalf_of(token)

    async def execute(self, turn: Turn) -> dict[str, Any]:
        """Run (or resume) the turn's graph to its end; return the final state.

        Raises:
            AgentNotWired: the turn's domain has no model.
            AgentError: the turn failed (budget, model).
            DatabaseError: the database failed.
        """
        model = self.models.get(turn.domain)
        if model is None:
            if self.unavailable:
                raise AgentNotWired(
                    f"domain {turn.domain!r}: {self.unavailable}", domain=turn.domain
                )
            raise not_wired(turn.domain)
        graph = build_graph(
            model,
            self.tools,
            org=turn.org,
            domain=turn.domain,
            thread_id=turn.thread_id,
            policy=self.config.policy,
            budget=self.config.budget,
            checkpointer=saver_for_turn(self.checkpoints),
        )
        config: RunnableConfig = {
            "configurable": {"thread_id": turn.thread_id},
            "recursion_limit": 2 * self.config.budget.max_steps + 5,
        }
        snapshot = await graph.aget_state(config)
        if snapshot.next:
            log.info("agent.turn_resumed", next=list(snapshot.next), attempts=turn.attempts)
            await graph.ainvoke(None, config, durability="sync")
        elif not snapshot.values:
            await graph.ainvoke(
                initial_state(
                    turn.org,
                    turn.domain,
                    turn.thread_id,
                    turn.observation,
                ),
                config,
                durability="sync",
            )
        final = await graph.aget_state(config)
        return dict(final.values)

    async def _finished(self, turn: Turn, values: dict[str, Any], started: float) -> None:
        result = {
            "decision": values.get("decision"),
            "steps": values.get("steps", 0),
            "tokens": values.get("tokens", 0),
        }
        async with self.db.pool.connection() as conn, conn.transaction():
            held = await self.queue.finish(conn, turn.thread_id, result)
            if held:
                await self.publisher.publish_async(
                    conn,
                    DECIDED_TOPIC,
                    {
                        "org": turn.org,
                        "domain": turn.domain,
                        "thread_id": turn.thread_id,
                        "event_key": turn.idempotency_key,
                        "outbox_id": turn.outbox_id,
                        **result,
                    },
                    idempotency_key=f"{DECIDED_TOPIC}:{turn.thread_id}",
                )
        if held:
            self.completed += 1
        log.info(
            "agent.turn_done" if held else "agent.turn_claim_lost",
            steps=result["steps"],
            tokens=result["tokens"],
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _failed(self, turn: Turn, exc: Exception) -> None:
        permanent = isinstance(exc, AgentError) and not exc.transient
        reason = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        delay = next_delay(
            turn.attempts, base_s=self.config.backoff_base_s, cap_s=self.config.backoff_cap_s
        )
        async with self.db.pool.connection() as conn, conn.transaction():
            status = await self.queue.fail(
                conn,
                turn.thread_id,
                reason,
                permanent=permanent,
                delay_s=delay,
                max_attempts=self.config.max_attempts,
            )
            if status == "dead":
                await self.publisher.publish_async(
                    conn,
                    FAILED_TOPIC,
                    {
                        "org": turn.org,
                        "domain": turn.domain,
                        "thread_id": turn.thread_id,
                        "event_key": turn.idempotency_key,
                        "outbox_id": turn.outbox_id,
                        "error_type": type(exc).__name__,
                        "error": reason[:2000],
                    },
                    idempotency_key=f"{FAILED_TOPIC}:{turn.thread_id}",
                )
        log.warning(
            "agent.turn_failed",
            status=status,
            permanent=permanent,
            attempts=turn.attempts,
            error_type=type(exc).__name__,
            retry_in_s=round(delay, 3) if status == "pending" else None,
        )
