"""The one claim path.

:class:`Claimer` is bound to one generation and one worker at construction.  There is no
parameter anywhere that lets a caller claim, complete, fail, release or re-pend a row of
another generation: every statement it runs filters on the bound generation
(``generation = g``; the claims write ``generation = ANY(ARRAY[g])``, the same rows: ADR 0016).
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import anyio
import psycopg
from psycopg import sql

from ..db._wrap import wrap_errors
from ..sql import query
from .records import Event

__all__ = ["Claimer", "Started"]

_CLAIM_STATEMENT = "spectral_claim_started_v1"
#: the server-side statements of the one-message cycle, by name
_CYCLE_STATEMENTS = {
    _CLAIM_STATEMENT: "prepare_claim_started",
    "spectral_start_claimed_v1": "prepare_start_claimed",
}
#: connections known to hold them (a new connection is a new object: nothing to forget)
_prepared: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

#: what :meth:`Claimer.claim_started` returns: the claimed events, the ids of the rows
#: marked done in the open transaction, and the (handler name, event id) calls to make
Started = tuple[list[Event], set[int], set[tuple[str, int]]]


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
        if r[0] is not None
    ]
    events.sort(key=lambda e: e.id)
    return events


def _started(rows: Sequence[Sequence[Any]]) -> tuple[set[int], set[tuple[str, int]]]:
    # one row carries the held ids, the others one handler call each (sql/outbox.sql)
    held = next(r[0] for r in rows if r[1] is None)
    return set(held), {(r[1], r[2]) for r in rows if r[1] is not None}


class Claimer:
    """Claims and settles outbox rows of exactly one generation."""

    __slots__ = ("_base", "_cycle", "generation", "worker_id")

    def __init__(self, generation: int, worker_id: uuid.UUID) -> None:
        self.generation = int(generation)
        self.worker_id = worker_id
        self._base = {"generation": self.generation, "worker_id": self.worker_id}
        self._cycle: dict[tuple[int, tuple[tuple[str, str], ...]], bytes] = {}

    async def claim(self, conn: psycopg.AsyncConnection[Any], limit: int) -> list[Event]:
        """Claim up to ``limit`` pending, available rows of the bound generation."""
        with wrap_errors():
            cur = await conn.execute(query("claim_batch"), {**self._base, "limit": limit})
            rows = await cur.fetchall()
        return _events(rows)

    async def claim_started(
        self,
        conn: psycopg.AsyncConnection[Any],
        limit: int,
        routes: tuple[tuple[str, str], ...],
    ) -> Started:
        """Claim a batch and start its handler transaction in one round trip (ADR 0015).

        ``routes`` are the registry's ``(topic, handler name)`` pairs.  One simple-query
        message runs the claim in its own transaction (committed asynchronously, like
        :meth:`claim`) and then opens the handler transaction with the work of
        :meth:`start_batch` done for the claimed rows whose topic has a handler.  Needs a
        direct or session connection (it prepares two statements on it, once).

        Returns:
            the claimed events (possibly none), the ids marked ``done`` and the
            ``(handler name, event id)`` calls to make.  When events were claimed the
            handler transaction is left open on ``conn`` for the caller to commit or roll
            back; when none were, it is already ended.

        Raises:
            DatabaseError: the message failed; its transactions are rolled back, but rows
                may have been claimed (committed) before the failure: the caller must
                treat its unrecorded claims as orphans.
        """
        message = self._cycle.get((limit, routes))
        if message is None:
            message = self._cycle[(limit, routes)] = self._render(conn, limit, routes)
        with wrap_errors():
            cur = await self._send_cycle(conn, message)
            try:
                # results: BEGIN, SET, the claim, COMMIT, BEGIN, the start
                cur.nextset()
                cur.nextset()
                events = _events(await cur.fetchall())
                for _ in range(3):
                    cur.nextset()
                held, fresh = _started(await cur.fetchall())
                if not events:
                    # COMMIT, not ROLLBACK: the start changed nothing, and psycopg answers
                    # every ROLLBACK with DEALLOCATE ALL, which would drop our statements
                    await conn.commit()
            except BaseException:
                await rollback_quietly(conn)
                raise
        return events, held, fresh

    async def _send_cycle(
        self, conn: psycopg.AsyncConnection[Any], message: bytes
    ) -> psycopg.AsyncCursor[Any]:
        """Send the message, preparing our statements first where needed.

        psycopg deallocates every prepared statement of a connection on any rollback
        there (its own cache is then stale), ours included.  When the claim statement is
        missing the message failed before claiming anything, so it is prepared again and
        sent once more.
        """
        for retry in (False, True):
            try:
                if conn not in _prepared:
                    await self._prepare(conn)
                return await conn.execute(message, prepare=False)
            except psycopg.errors.InvalidSqlStatementName as exc:
                _prepared.discard(conn)
                await rollback_quietly(conn)
                if retry or _CLAIM_STATEMENT not in (exc.diag.message_primary or ""):
                    raise
            except BaseException:
                await rollback_quietly(conn)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _render(
        self, conn: psycopg.AsyncConnection[Any], limit: int, routes: tuple[tuple[str, str], ...]
    ) -> bytes:
        composed = sql.SQL(query("claim_started_cycle")).format(
            generation=sql.Literal(self.generation),
            limit=sql.Literal(int(limit)),
            worker_id=sql.Literal(self.worker_id),
            topics=sql.Literal([t for t, _ in routes]),
            handlers=sql.Literal([h for _, h in routes]),
        )
        return composed.as_bytes(conn)

    @staticmethod
    async def _prepare(conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(query("prepared_statements"), {"names": list(_CYCLE_STATEMENTS)})
        have = {r[0] for r in await cur.fetchall()}
        missing = [query(q) for name, q in _CYCLE_STATEMENTS.items() if name not in have]
        if missing:
            await conn.execute(";\n".join(missing), prepare=False)
        _prepared.add(conn)

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


async def rollback_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    """End whatever transaction a failed message left open (the pool would otherwise roll
    it back with a warning); a broken connection is the pool's to discard."""
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await conn.rollback()
        except psycopg.Error:
            pass
