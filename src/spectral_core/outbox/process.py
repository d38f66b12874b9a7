"""Handling a claimed batch: ledger, handlers and settlement.

Fast path: one transaction for the whole batch.  Its first statement marks the rows we
still hold ``done`` and writes the ledger rows of every routed handler for them, returning
the (handler, row) pairs not handled before; the handlers run for those; one commit.  If
any handler raises, that transaction rolls back (no effect, no ledger row survives, the
rows are still ours and ``in_flight``) and the batch is redone one row and one handler at
a time, each in its own transaction, so one poison row cannot hold back its neighbours and
a handler that already took effect is never re-run.  Each of those transactions locks its
row first and the last one marks it ``done``: a reaper cannot settle a row differently
while its handler runs (it skips locked rows), so the row's status never contradicts the
ledger.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.pq import TransactionStatus

from ..errors import ConfigError, ConnectionLost, HandlerError
from ..metrics.worker import HandlerStats, WorkerStats
from ..tracing import Tracer, handler_span, tracer
from .backoff import next_delay
from .claim import Claimer
from .handlers import HandlerRegistry, RegisteredHandler
from .records import Event

__all__ = ["BatchProcessor", "RetryPolicy"]

log = structlog.get_logger("spectral.outbox")

_INERROR = int(TransactionStatus.INERROR)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 10
    base_s: float = 1.0
    cap_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not self.base_s > 0 or not self.cap_s > 0:
            raise ConfigError(
                "RetryPolicy needs max_attempts >= 1 and base_s, cap_s > 0, got "
                f"{self.max_attempts!r}, {self.base_s!r}, {self.cap_s!r}"
            )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _run_handler(
    handler: RegisteredHandler,
    ev: Event,
    conn: psycopg.AsyncConnection[Any],
    stats: HandlerStats,
    spans: Tracer | None,
) -> None:
    """Run one handler and refuse to go on if it left the transaction failed.

    A handler that swallows a database error without a savepoint leaves the transaction
    in the failed state; PostgreSQL would silently turn the COMMIT into a ROLLBACK and the
    row would be settled as done with no effect and no ledger row.

    The call's duration goes to ``stats``; with tracing on (``spans``) it runs in a span
    that is a child of the publisher's (ADR 0029).
    """
    started = time.perf_counter()
    try:
        if spans is None:
            await handler.fn(ev, conn)
        else:
            with handler_span(spans, handler.name, ev):
                await handler.fn(ev, conn)
    finally:
        stats.duration.observe(time.perf_counter() - started)
    # the libpq status as an int: `conn.info.transaction_status` builds an enum per call
    if conn.pgconn.transaction_status == _INERROR:
        raise HandlerError(
            f"handler {handler.name} swallowed a database error and left the transaction "
            "failed (use a savepoint: `async with conn.transaction():`)",
            handler=handler.name,
        )


class BatchProcessor:
    """Runs the registered handlers over claimed events of one :class:`Claimer`."""

    def __init__(
        self,
        claimer: Claimer,
        registry: HandlerRegistry,
        retry: RetryPolicy | None = None,
        *,
        rand: random.Random | None = None,
        stats: WorkerStats | None = None,
    ) -> None:
        self.claimer = claimer
        self.registry = registry
        self.retry = retry or RetryPolicy()
        self._rand = rand or random.Random()
        #: the process counters (handled / failed / retried / dead, durations)
        self.stats = stats or WorkerStats()

    async def process(self, conn: psycopg.AsyncConnection[Any], events: Sequence[Event]) -> None:
        """Handle and settle every event of ``events`` (all claimed by our claimer)."""
        routable: list[Event] = []
        for ev in events:
            if self.registry.for_topic(ev.topic):
                routable.append(ev)
            else:
                await self.claimer.kill(
                    conn, ev.id, f"no handler registered for topic {ev.topic!r}"
                )
                self.stats.handler(WorkerStats.UNROUTABLE).dead += 1
                log.warning("outbox.unroutable", event_id=ev.id, topic=ev.topic)
        if not routable:
            return
        try:
            await self._batch(conn, routable)
        except ConnectionLost:
            raise
        except Exception:  # a handler failed: redo row by row
            await self._one_by_one(conn, routable)

    def _calls(self, events: list[Event]) -> list[tuple[RegisteredHandler, Event]]:
        """The (handler, event) calls of a batch, handler by handler."""
        by_handler: dict[str, tuple[RegisteredHandler, list[Event]]] = {}
        for ev in events:
            for h in self.registry.for_topic(ev.topic):
                by_handler.setdefault(h.name, (h, []))[1].append(ev)
        return [(handler, ev) for handler, evs in by_handler.values() for ev in evs]

    async def _batch(self, conn: psycopg.AsyncConnection[Any], events: list[Event]) -> None:
        calls = self._calls(events)
        started = time.perf_counter()
        spans = tracer()
        ran: list[HandlerStats] = []
        async with conn.transaction():
            held, fresh = await self.claimer.start_batch(
                conn, [ev.id for ev in events], self.registry.routes
            )
            for handler, ev in calls:
                if (handler.name, ev.id) in fresh:
                    stats = self.stats.handler(handler.name)
                    await _run_handler(handler, ev, conn, stats, spans)
                    ran.append(stats)
        for stats in ran:
            stats.handled += 1
        self._settled(events, held, started)

    def _settled(self, events: list[Event], held: set[int], started: float) -> None:
        if len(held) != len(events):
            # reaped while we held them: the rows we lost were neither marked done nor
            # handled by us; whoever claims them next handles them
            log.warning("outbox.claim_lost", expected=len(events), completed=len(held))
        batch_ms = round((time.perf_counter() - started) * 1000, 2)
        # one summary line per batch at info; the per-event lines (never the payload) at
        # debug, so a busy worker does not write a line per event
        log.info("outbox.batch_handled", handled=len(held), batch=len(events), batch_ms=batch_ms)
        if log.is_enabled_for(logging.DEBUG):
            for ev in events:
                if ev.id in held:
                    log.debug(
                        "outbox.handled", event_id=ev.id, topic=ev.topic, attempts=ev.attempts
                    )

    async def _one_by_one(self, conn: psycopg.AsyncConnection[Any], events: list[Event]) -> None:
        for ev in events:
            outcome = await self._redo_row(conn, ev)
            if outcome is None:
                log.warning("outbox.claim_lost", expected=1, completed=0, event_id=ev.id)
                continue
            if not outcome:
                log.debug(
                    "outbox.handled", event_id=ev.id, topic=ev.topic, attempts=ev.attempts, batch=1
                )
                continue
            errors = outcome
            delay = next_delay(
                ev.attempts, base_s=self.retry.base_s, cap_s=self.retry.cap_s, rand=self._rand
            )
            status = await self.claimer.fail(
                conn, ev.id, "; ".join(errors), delay, self.retry.max_attempts
            )
            for error in errors:  # "<handler name>: <error>"; handler names hold no colon
                stats = self.stats.handler(error.partition(":")[0])
                if status == "pending":
                    stats.retried += 1
                elif status == "dead":
                    stats.dead += 1
            log.warning(
                "outbox.failed",
                event_id=ev.id,
                attempts=ev.attempts,
                status=status,
                retry_in_s=round(delay, 3) if status == "pending" else None,
            )

    async def _redo_row(self, conn: psycopg.AsyncConnection[Any], ev: Event) -> list[str] | None:
        """Run each handler of one row in its own transaction; return the errors (none: the
        row is done), or None when the claim was lost before a handler could run.

        Each transaction starts by locking the row (it must still be ours), so a reaper,
        which skips locked rows, cannot re-pend it or mark it ``dead`` while a handler runs;
        the transaction of the last handler also marks the row ``done`` when every handler
        succeeded.  There is no moment between a handler's commit and the row's settlement
        in which a reaper could contradict the ledger.
        """
        errors: list[str] = []
        handlers = self.registry.for_topic(ev.topic)
        spans = tracer()
        for i, handler in enumerate(handlers):
            stats = self.stats.handler(handler.name)
            try:
                async with conn.transaction():
                    if not await self.claimer.hold(conn, ev.id):
                        return None
                    fresh = await self.claimer.mark_handled(conn, handler.name, [ev])
                    if fresh:
                        await _run_handler(handler, ev, conn, stats, spans)
                    if i == len(handlers) - 1 and not errors:
                        await self.claimer.complete(conn, [ev.id])
                if fresh:
                    stats.handled += 1
            except ConnectionLost:
                raise
            except Exception as exc:
                stats.failed += 1
                errors.append(f"{handler.name}: {_describe(exc)}")
                log.warning(
                    "outbox.handler_failed",
                    event_id=ev.id,
                    handler=handler.name,
                    attempts=ev.attempts,
                    error_type=type(exc).__name__,
                )
        return errors
