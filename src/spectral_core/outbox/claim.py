"""The one claim path (ADR 0034).

:class:`Claimer` is bound to one generation and one worker at construction.  There is no
parameter anywhere that lets a caller claim, complete, fail, release or re-pend a row of
another generation: every statement it runs filters on the bound generation
(``generation = g``).  The claim and the start of a batch are the versioned functions
``core.outbox_claim_v1`` and ``core.outbox_start_v2`` (migrations 0013 and 0016), called
the same way on a direct connection and behind a transaction pooler: no session state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from ..db._wrap import wrap_errors
from ..sql import query
from .records import Event

__all__ = ["Claimer"]


def _events(rows: Sequence[Sequence[Any]]) -> list[Event]:
    events = [
        Event(
            id=r[0],
            generation=r[1],
            topic=r[2],
            payload=r[3],
            idempotency_key=r[4],
            attempts=r[5],
            created_at=r[6],
            trace_parent=r[7],
        )
        for r in rows
    ]
    events.sort(key=lambda e: e.id)
    return events


def _started(rows: Sequence[Sequence[Any]]) -> tuple[set[int], set[tuple[str, int]]]:
    # one row carries the held ids, the others one handler call each (core.outbox_start_v2)
    held = next(r[0] for r in rows if r[1] is None)
    return set(held), {(r[1], r[2]) for r in rows if r[1] is not None}


class Claimer:
    """Claims and settles outbox rows of exactly one generation."""

    __slots__ = ("_base", "generation", "worker_id")

    def __init__(self, generation: int, worker_id: uuid.UUID) -> None:
        self.generation = int(generation)
        self.worker_id = worker_id
        self._base = {"generation": self.generation, "worker_id": self.worker_id}

    async def claim(self, conn: psycopg.AsyncConnection[Any], limit: int) -> list[Event]:
        """Claim up to ``limit`` pending, available rows of the bound generation, oldest
        first (``core.outbox_claim_v1``; its own transaction, committed asynchronously: call
        it outside any transaction)."""
        with wrap_errors():
            cur = await conn.execute(query("claim_batch"), {**self._base, "limit": limit})
            rows = await cur.fetchall()
        return _events(rows)

    async def start_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        ids: list[int],
        routes: tuple[tuple[str, str], ...],
    ) -> tuple[set[int], set[tuple[str, int]]]:
        """First statement of a batch's handler transaction (``core.outbox_start_v2``).

        ``ids`` are the batch's rows, ``routes`` the registry's ``(topic, handler name)``
        pairs.  Marks the rows we still hold ``done`` and writes the ledger rows of their
        routed handlers, in the caller's transaction.

        Returns:
            the ids of the rows we still held, and the ``(handler name, event id)`` pairs
            to run: the ones whose ledger row is new (for duplicate keys in one batch, the
            lowest event id).
        """
        with wrap_errors():
            cur = await conn.execute(
                query("start_batch"),
                {
                    **self._base,
                    "ids": ids,
                    "topics": [t for t, _ in routes],
                    "handlers": [h for _, h in routes],
                },
            )
            rows = await cur.fetchall()
        return _started(rows)

    async def mark_handled(
        self, conn: psycopg.AsyncConnection[Any], handler: str, events: list[Event]
    ) -> set[str]:
        """Insert ledger rows for ``handler``; return the keys that were not handled before."""
        with wrap_errors():
            cur = await conn.execute(
                query("mark_handled"),
                {
                    "handler": handler,
                    "generation": self.generation,
                    "keys": [e.idempotency_key for e in events],
                    "ids": [e.id for e in events],
                },
            )
            return {r[0] for r in await cur.fetchall()}

    async def hold(self, conn: psycopg.AsyncConnection[Any], event_id: int) -> bool:
        """Lock a row we hold until the caller's transaction ends; False if it is no
        longer ours (re-pended by a reaper)."""
        with wrap_errors():
            cur = await conn.execute(query("hold_claim"), {**self._base, "id": event_id})
            return await cur.fetchone() is not None

    async def complete(self, conn: psycopg.AsyncConnection[Any], ids: list[int]) -> int:
        """Mark rows we still hold as ``done``; return how many were."""
        with wrap_errors():
            cur = await conn.execute(query("complete_batch"), {**self._base, "ids": ids})
        return cur.rowcount

    async def fail(
        self,
        conn: psycopg.AsyncConnection[Any],
        event_id: int,
        error: str,
        delay_s: float,
        max_attempts: int,
    ) -> str | None:
        """Record a failure: re-pend after ``delay_s`` or ``dead``; return the new status."""
        with wrap_errors():
            cur = await conn.execute(
                query("fail_event"),
                {
                    **self._base,
                    "id": event_id,
                    "error": error[:4000],
                    "delay_s": delay_s,
                    "max_attempts": max_attempts,
                },
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def kill(self, conn: psycopg.AsyncConnection[Any], event_id: int, error: str) -> None:
        """Mark a row we hold ``dead`` at once."""
        with wrap_errors():
            await conn.execute(
                query("kill_event"), {**self._base, "id": event_id, "error": error[:4000]}
            )

    async def release_all(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Graceful shutdown: give every row we hold back to ``pending``; the interrupted
        attempt is not counted."""
        with wrap_errors():
            cur = await conn.execute(query("release_all_claims"), self._base)
        return cur.rowcount

    async def release_orphans(self, conn: psycopg.AsyncConnection[Any], keep: list[int]) -> int:
        """Re-pend rows claimed by us that no lane holds (lost across a dropped connection)."""
        with wrap_errors():
            cur = await conn.execute(query("release_orphans"), {**self._base, "keep": keep})
        return cur.rowcount
