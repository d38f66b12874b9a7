"""The server sessions a worker uses (``core.worker_sessions``, ADR 0027).

A worker records the backend (pid and start time) behind each connection it works on, once
per connection.  When the worker is declared lost, a peer's reaper terminates those
backends, so the lost worker's open transactions roll back and its row locks are released.

Behind a transaction pooler a connection has no backend of its own (each transaction may
run on another server connection, shared with other clients), so nothing is recorded
there: the pooler's own timeouts end a stalled client's transaction (docs/runbooks).
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

import psycopg

from ..db._wrap import wrap_errors
from ..sql import query

__all__ = ["SessionRecorder"]


class SessionRecorder:
    """Records the backend of each connection a worker uses, once per connection."""

    def __init__(self, worker_id: uuid.UUID, *, enabled: bool = True) -> None:
        self.worker_id = worker_id
        self.enabled = enabled
        #: connections already recorded (a reconnect is a new object: recorded again)
        self._seen: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    async def note(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Record ``conn``'s backend unless done before (call outside a transaction)."""
        if not self.enabled or conn in self._seen:
            return
        with wrap_errors():
            await conn.execute(query("record_session"), {"worker_id": self.worker_id})
        self._seen.add(conn)
