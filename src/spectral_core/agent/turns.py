"""The turn queue (``agent.turns``): hand-off, claim and settlement of turns.

The observe handler writes a turn in the outbox batch transaction (:func:`enqueue_turn`),
so the hand-off commits with the handler's ``core.event_handled`` row: one turn per
event, however often the event is delivered.  :class:`TurnQueue`, bound to one generation
and one worker like the outbox's ``Claimer``, claims turns and settles them; its leases
are the worker's heartbeat, exactly as for outbox claims, and its reaper follows the outbox
reaper's rules (ADR 0027).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import psycopg

from ..db._wrap import wrap_errors
from ..outbox.reaper import LOCK_TIMEOUT_MS
from ..sql import query
from ..tracing import current_traceparent

__all__ = ["Turn", "TurnQueue", "enqueue_turn", "thread_id_for"]

_encode = msgspec.json.Encoder().encode


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One claimed turn."""

    thread_id: str
    generation: int
    org: str
    domain: str
    idempotency_key: str
    outbox_id: int | None
    observation: Any
    attempts: int
    #: the W3C ``traceparent`` of the span that enqueued the turn (the observe handler's)
    trace_parent: str | None = None


def thread_id_for(org: str, domain: str, idempotency_key: str) -> str:
    """The turn's thread (and checkpoint thread): ``<org>:<domain>:<idempotency key>``."""
    return f"{org}:{domain}:{idempotency_key}"


async def enqueue_turn(
    conn: psycopg.AsyncConnection[Any],
    *,
    generation: int,
    org: str,
    domain: str,
    idempotency_key: str,
    outbox_id: int | None,
    observation: Any,
) -> bool:
    """Write a turn in ``conn``'s transaction; False when that thread already exists."""
    with wrap_errors():
        cur = await conn.execute(
            query("enqueue_turn"),
            {
                "thread_id": thread_id_for(org, domain, idempotency_key),
                "generation": generation,
                "org": org,
                "domain": domain,
                "key": idempotency_key,
                "outbox_id": outbox_id,
                "observation": _encode(observation).decode(),
                "trace": current_traceparent(),
            },
        )
        return await cur.fetchone() is not None


class TurnQueue:
    """Claims and settles turns of exactly one generation, for one worker."""

    def __init__(self, generation: int, worker_id: uuid.UUID) -> None:
        self.generation = int(generation)
        self.worker_id = worker_id
        self._base = {"generation": self.generation, "worker_id": self.worker_id}

    async def claim(self, conn: psycopg.AsyncConnection[Any]) -> Turn | None:
        """Claim the oldest available pending turn, if any."""
        with wrap_errors():
            cur = await conn.execute(query("claim_turn"), self._base)
            row = await cur.fetchone()
        if row is None:
            return None
        return Turn(
            thread_id=row[0],
            generation=row[1],
            org=row[2],
            domain=row[3],
            idempotency_key=row[4],
            outbox_id=row[5],
            observation=row[6],
            attempts=row[7],
            trace_parent=row[8],
        )

    async def finish(self, conn: psycopg.AsyncConnection[Any], thread_id: str, result: Any) -> bool:
        """Mark a turn we hold ``done``; False when the claim was lost."""
        with wrap_errors():
            cur = await conn.execute(
                query("finish_turn"),
                {**self._base, "thread_id": thread_id, "result": _encode(result).decode()},
            )
        return cur.rowcount == 1

    async def fail(
        self,
        conn: psycopg.AsyncConnection[Any],
        thread_id: str,
        error: str,
        *,
        permanent: bool,
        delay_s: float,
        max_attempts: int,
    ) -> str | None:
        """Re-pend after ``delay_s`` or end ``dead``; return the new status (None: lost)."""
        with wrap_errors():
            cur = await conn.execute(
                query("fail_turn"),
                {
                    **self._base,
                    "thread_id": thread_id,
                    "error": error[:4000],
                    "permanent": permanent,
                    "delay_s": delay_s,
                    "max_attempts": max_attempts,
                },
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def release(
        self, conn: psycopg.AsyncConnection[Any], thread_ids: list[str] | None = None
    ) -> int:
        """Give turns we hold back to ``pending`` (all of ours when ``thread_ids`` is None)."""
        with wrap_errors():
            cur = await conn.execute(
                query("release_turns"), {**self._base, "thread_ids": thread_ids}
            )
        return cur.rowcount

    async def reap(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        stale_after_s: float,
        max_attempts: int,
        heartbeat_interval_s: float,
    ) -> list[tuple[str, str]]:
        """Re-pend (or kill) turns of our generation whose claimer stopped heartbeating.

        The outbox reaper's rules (ADR 0027): rows locked by a live transaction are
        skipped, the pass is one transaction whose lock waits end after
        ``LOCK_TIMEOUT_MS``, our own worker's turns are never taken, and nobody is judged
        unless our own heartbeat is fresh (younger than ``stale_after_s`` minus one
        heartbeat interval, at least one interval).

        Raises:
            DatabaseError: a statement failed (e.g. a lock wait reached the lock timeout);
                the pass is rolled back whole.
        """
        params = {
            "generation": self.generation,
            "me": self.worker_id,
            "stale_after_s": stale_after_s,
            "self_fresh_s": max(stale_after_s - heartbeat_interval_s, heartbeat_interval_s),
            "max_attempts": max_attempts,
        }
        with wrap_errors():
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}")
                cur = await conn.execute(query("repend_stale_turns"), params)
                return [(r[0], r[1]) for r in await cur.fetchall()]
