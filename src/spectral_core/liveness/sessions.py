"""The server sessions a worker uses (``core.worker_sessions``, ADR 0027).

A worker records the backend (pid and start time) behind each connection it works on, once
per connection, and gives that session its unique ``application_name``
(:func:`session_application_name`).  When the worker is declared lost, a peer's reaper
terminates those backends while pid, start time and name still all match (ADR 0043), so
the lost worker's open transactions roll back and its row locks are released.

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

__all__ = ["SessionRecorder", "session_application_name"]

log = structlog.get_logger("spectral.worker")


def session_application_name(worker_id: uuid.UUID) -> str:
    """The ``application_name`` a worker gives the sessions it records (unique per worker,
    under PostgreSQL's 63-byte limit): the reaper terminates a recorded backend only while
    it still carries it (ADR 0043)."""
    return f"spectral-worker {worker_id}"


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
                {
                    "worker_id": self.worker_id,
                    "pid": conn.info.backend_pid,
                    "application_name": session_application_name(self.worker_id),
                },
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
