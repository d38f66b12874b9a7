"""The one claim path.

:class:`Claimer` is bound to one generation and one worker at construction.  There is no
parameter anywhere that lets a caller claim, complete, fail, release or re-pend a row of
another generation: every statement it runs carries ``generation = <bound generation>``.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from ..db._wrap import wrap_errors
from ..sql import query
from .records import Event

__all__ = ["Claimer"]


class Claimer:
    """Claims and settles outbox rows of exactly one generation."""

    __slots__ = ("_base", "generation", "worker_id")

    def __init__(self, generation: int, worker_id: uuid.UUID) -> None:
        self.generation = int(generation)
        self.worker_id = worker_id
        self._base = {"generation": self.generation, "worker_id": self.worker_id}

    async def claim(self, conn: psycopg.AsyncConnection[Any], limit: int) -> list[Event]:
        """Claim up to ``limit`` pending, available rows of the bound generation."""
        with wrap_errors():
            cur = await conn.execute(query("claim_batch"), {**self._base, "limit": limit})
            rows = await cur.fetchall()
        rows.sort(key=lambda r: r[0])
        return [
            Event(
                id=r[0],
                generation=r[1],
                topic=r[2],
                payload=r[3],
                idempotency_key=r[4],
                attempts=r[5],
                created_at=r[6],
            )
            for r in rows
        ]

    async def start_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        calls: list[tuple[str, Event]],
    ) -> tuple[set[int], set[tuple[str, int]]]:
        """First statement of a batch's handler transaction (``start_batch`` in
        ``sql/outbox.sql``).

        ``calls`` are the routed ``(handler name, event)`` pairs.  Marks the rows we still
        hold ``done`` and writes the ledger rows for them, in the caller's transaction.

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
                    "handlers": [name for name, _ in calls],
                    "keys": [e.idempotency_key for _, e in calls],
                    "ids": [e.id for _, e in calls],
                },
            )
            rows = await cur.fetchall()
        return set(rows[0][0]), {(r[1], r[2]) for r in rows if r[1] is not None}

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
