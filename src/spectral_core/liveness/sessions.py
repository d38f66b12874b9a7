"""The server sessions a worker uses (``core.worker_sessions``, ADR 0027).

A worker records the backend (pid and start time) behind each connection it works on, once
per connection.  When the worker is declared lost, a peer's reaper terminates those
backends, so the lost worker's open transactions roll back and its row locks are released.

Behind a pooler a connection has no backend of its own (each transaction may run on
another server connection, shared with other clients), so nothing is recorded there: the
pooler's own timeouts end a stalled client's transaction (docs/runbooks).  No setting says
so: a connection is pooled when the backend that runs its statement is not the process
the server announced when the connection was opened (a pooler announces its own id,
ADR 0041); the first such connection turns recording off for the worker.
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

import psycopg
import structlog

from ..db._wrap import wrap_errors
from ..sql import query

__all__ = ["SessionRecorder"]

log = structlog.get_logger("spectral.worker")


class SessionRecorder:
    """Records the backend of each connection a worker uses, once per connection."""

    def __init__(self, worker_id: uuid.UUID) -> None:
        self.worker_id = worker_id
        #: False once a pooled connection was seen: nothing more is recorded
        self.enabled = True
        #: connections already recorded (a reconnect is a new object: recorded again)
        self._seen: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    async def note(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Record ``conn``'s backend unless done before (call outside a transaction)."""
        if not self.enabled or conn in self._seen:
            return
        with wrap_errors():
            cur = await conn.execute(
                query("record_session"),
                {"worker_id": self.worker_id, "pid": conn.info.backend_pid},
            )
            row = await cur.fetchone()
        if row is None or not row[0]:
            self.enabled = False
            log.info(
                "worker.sessions_not_recorded",
                reason="the connection goes through a pooler (its backend is shared)",
            )
            return
        self._seen.add(conn)
