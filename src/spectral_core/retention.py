"""Automatic retention: the pruner that runs in every worker (issue 17.3, ADR 0030).

It deletes, in bounded batches:

- ``done`` outbox rows finished more than ``SPECTRAL_OUTBOX_RETENTION_S`` ago;
- ledger rows (``core.event_handled``) handled more than ``SPECTRAL_LEDGER_RETENTION_S``
  ago (at least the deduplication window ``SPECTRAL_DEDUP_WINDOW_S``, checked by
  :class:`~spectral_core.settings.Settings`), except while their outbox row can still be
  delivered (pending, in flight or dead);
- ``done`` World Agent turns finished more than ``SPECTRAL_AGENT_TURN_RETENTION_S`` ago,
  with their LangGraph checkpoints.

Rows of workers not seen for ``SPECTRAL_WORKER_RETENTION_S`` are pruned by the reaper
(ADR 0027), not here.

Only rows of a *prunable* generation go: the newest allocated generation, and every
generation that is drained (no pending or in-flight outbox row, no pending or running
turn).  An older generation that still has live work keeps all its rows until it drains.

Each batch is one short transaction that first takes a transaction-level advisory
try-lock: at most one pruner deletes at a time in a database, nobody waits for it, and a
batch that does not get the lock ends the pass (another worker is pruning).  A batch
examines at most ``SPECTRAL_RETENTION_BATCH_SIZE`` rows (a keyset walk on the table's
primary key), so its cost is bounded whatever the table's size.

The pruner is paced by work, not by time share: it examines at most
``SPECTRAL_RETENTION_ROWS_PER_S`` rows per second.  After a batch of ``n`` rows it sleeps
so that the batch and its pause last ``n / rows_per_s`` seconds (a slow batch is not made
up for by a burst afterwards).  Its transactions commit with ``synchronous_commit = off``:
a prune lost in a crash is redone by the next pass, and any transaction that relied on it
and committed durably flushed it too (the WAL is one sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import psycopg
import structlog

from .db import Database
from .db._wrap import is_connection_error, wrap_errors
from .errors import DatabaseError
from .settings import Settings
from .sql import query

__all__ = ["PassResult", "Pruner", "RetentionConfig"]

log = structlog.get_logger("spectral.retention")

#: the longest a pruner statement waits for a row lock (done rows are not locked by the
#: hot path, so a wait means something unusual: skip the batch rather than queue)
LOCK_TIMEOUT_MS = 500


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Ages (seconds) and the batch bound of the pruner."""

    outbox_s: float
    ledger_s: float
    turns_s: float
    batch: int = 1000
    interval_s: float = 60.0
    #: rows examined per second, over every table (the pace)
    rows_per_s: float = 5000.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionConfig:
        return cls(
            outbox_s=settings.outbox_retention_s,
            ledger_s=settings.ledger_retention_s,
            turns_s=settings.agent_turn_retention_s,
            batch=settings.retention_batch_size,
            interval_s=settings.retention_interval_s,
            rows_per_s=settings.retention_rows_per_s,
        )


@dataclass(slots=True)
class PassResult:
    """What one pass deleted (and whether another pruner held the lock)."""

    outbox: int = 0
    ledger: int = 0
    turns: int = 0
    batches: int = 0
    contended: bool = False
    generations: list[int] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return self.outbox + self.ledger + self.turns


class _Contended(Exception):
    """Another pruner holds the lock: this pass ends."""


class Pruner:
    """Deletes finished rows past their retention, one bounded batch at a time."""

    def __init__(self, config: RetentionConfig) -> None:
        self.config = config

    async def _batch(
        self, conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]
    ) -> tuple[Any, ...]:
        with wrap_errors():
            async with conn.transaction():
                # the lock, and this transaction's lock_timeout and synchronous_commit = off
                cur = await conn.execute(
                    query("retention_try_lock"), {"lock_timeout_ms": LOCK_TIMEOUT_MS}
                )
                got = await cur.fetchone()
                if not (got and got[0]):
                    raise _Contended
                cur = await conn.execute(query(name), params)
                row = await cur.fetchone()
        assert row is not None
        return tuple(row)

    async def _pause(self, started: float, seen: int) -> None:
        # the batch and its pause last seen / rows_per_s: the pace, whatever a batch costs;
        # a batch slower than its share is not made up for afterwards (no burst)
        due = started + seen / self.config.rows_per_s
        await anyio.sleep(max(due - anyio.current_time(), 0.0))

    async def prune(self, conn: psycopg.AsyncConnection[Any], *, pause: bool = True) -> PassResult:
        """One full pass over the outbox, the ledger and the turns.

        Raises:
            DatabaseError: a statement failed (that batch is rolled back; what earlier
                batches deleted stays deleted).
        """
        cfg = self.config
        result = PassResult()
        with wrap_errors():
            cur = await conn.execute(query("prunable_generations"))
            gens = [r[0] for r in await cur.fetchall()]
        result.generations = gens
        if not gens:
            return result
        base = {"batch": cfg.batch, "generations": gens}
        try:
            after = 0
            while True:
                t0 = anyio.current_time()
                last, seen, gone, young = await self._batch(
                    conn,
                    "prune_outbox_batch",
                    {**base, "after": after, "older_than_s": cfg.outbox_s},
                )
                result.batches += 1
                result.outbox += gone
                if pause:
                    await self._pause(t0, seen)
                if seen < cfg.batch or young or last is None:
                    break
                after = last
            handler, key = "", ""
            while True:
                t0 = anyio.current_time()
                h, k, seen, gone = await self._batch(
                    conn,
                    "prune_ledger_batch",
                    {
                        **base,
                        "after_handler": handler,
                        "after_key": key,
                        "older_than_s": cfg.ledger_s,
                    },
                )
                result.batches += 1
                result.ledger += gone
                if pause:
                    await self._pause(t0, seen)
                if seen < cfg.batch or h is None:
                    break
                handler, key = h, k
            thread = ""
            while True:
                t0 = anyio.current_time()
                last, seen, gone = await self._batch(
                    conn,
                    "prune_turns_batch",
                    {**base, "after": thread, "older_than_s": cfg.turns_s},
                )
                result.batches += 1
                result.turns += gone
                if pause:
                    await self._pause(t0, seen)
                if seen < cfg.batch or last is None:
                    break
                thread = last
        except _Contended:
            result.contended = True
        if result.deleted:
            log.info(
                "retention.pruned",
                outbox=result.outbox,
                ledger=result.ledger,
                turns=result.turns,
                batches=result.batches,
            )
        return result

    async def run(self, db: Database) -> None:
        """Prune every ``interval_s`` until cancelled; database errors are retried at the
        next interval."""
        while True:
            await anyio.sleep(self.config.interval_s)
            try:
                async with db.pool.connection() as conn:
                    await self.prune(conn)
            except Exception as exc:
                if is_connection_error(exc):
                    log.warning("retention.db_unavailable", error_type=type(exc).__name__)
                elif isinstance(exc, DatabaseError):
                    log.warning(
                        "retention.db_error",
                        error=exc.message,
                        sqlstate=getattr(exc, "sqlstate", None),
                    )
                else:
                    raise
