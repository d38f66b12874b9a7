"""Worker registry and heartbeat (``core.workers``).

A worker registers on boot, refreshes ``last_seen`` every ``interval_s`` together with
its current state (``running`` or ``reconnecting``), and marks itself ``exited`` on a
clean shutdown.  From the table alone another process can tell a live worker, a lost
one (``last_seen`` older than the stale bound: shown as ``lost``, ADR 0027), a
reconnecting one and an exited one.

:meth:`Heartbeat.steady_for` tells the worker's reaper how long the heartbeat has been
written without a failure: after an outage (a failed write) the reaper waits a whole stale
bound before it judges anyone, so every peer has renewed its own heartbeat by then
(ADR 0027).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
import structlog
from psycopg.types.json import Jsonb

from ..db import Database, connect_kwargs
from ..db._wrap import is_connection_error, wrap_errors
from ..runtime import RuntimeContext
from ..sql import query
from .sessions import SessionRecorder

__all__ = ["Heartbeat", "WorkerInfo"]

log = structlog.get_logger("spectral.heartbeat")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: uuid.UUID
    generation: int
    host: str
    pid: int
    version: str

    @classmethod
    def from_runtime(cls, rt: RuntimeContext) -> WorkerInfo:
        return cls(rt.instance_id, rt.generation, rt.host, rt.pid, rt.version)


class Heartbeat:
    """Registers a worker and keeps its ``last_seen`` fresh."""

    def __init__(
        self,
        db: Database,
        info: WorkerInfo,
        *,
        interval_s: float,
        state: Callable[[], str] = lambda: "running",
        sessions: SessionRecorder | None = None,
        metrics: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.db = db
        self.info = info
        self.interval_s = interval_s
        self._state = state
        #: the worker's metrics snapshot, written to core.workers.metrics with each beat
        #: (ADR 0029); None: the column is left as it is
        self._metrics = metrics
        self.last_written: str | None = None
        self._poked = anyio.Event()
        # A connection of its own: a pool starved by long handlers must never delay the
        # heartbeat, or the reapers would take a live worker's claims.
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._sessions = sessions
        #: monotonic time of the first write of the current run of successful writes; None
        #: after a failed write; minus infinity until the first failure (no outage seen)
        self._steady_since: float | None = float("-inf")

    def steady_for(self) -> float:
        """Seconds since the heartbeat has been written without a failure: 0 while it
        fails, infinite if it never failed since the worker started."""
        if self._steady_since is None:
            return 0.0
        return time.monotonic() - self._steady_since

    def _written(self) -> None:
        if self._steady_since is None:
            self._steady_since = time.monotonic()

    def poke(self) -> None:
        """Beat now (called on a state change, so other processes see it at once)."""
        self._poked.set()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            settings = self.db.settings
            with wrap_errors():
                self._conn = await psycopg.AsyncConnection.connect(
                    settings.require_database_url(),
                    connect_timeout=max(1, int(settings.database_connect_timeout_s)),
                    **connect_kwargs(tcp_timeout_s=settings.database_tcp_timeout_s),
                )
            if self._sessions is not None:
                await self._sessions.note(self._conn)
        return self._conn

    async def aclose(self) -> None:
        """Close the heartbeat's own connection (``mark_exited`` does it too)."""
        await self._drop_connection()

    async def __aenter__(self) -> Heartbeat:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
                await conn.close()

    async def register(self) -> None:
        """Insert (or re-insert) the worker's row (state ``running``)."""
        conn = await self._connection()
        with wrap_errors():
            await conn.execute(
                query("register_worker"),
                {
                    "id": self.info.id,
                    "generation": self.info.generation,
                    "host": self.info.host,
                    "pid": self.info.pid,
                    "version": self.info.version,
                },
            )
        self.last_written = "running"
        self._written()
        log.info("worker.registered", host=self.info.host, pid=self.info.pid)

    async def beat(self) -> str:
        """Write ``last_seen`` and the current state once; return the state written.

        If the row vanished (an operator deleted it), the worker registers again rather
        than letting every reaper take its claims.
        """
        state = self._state()
        snapshot = None if self._metrics is None else Jsonb(self._metrics())
        try:
            conn = await self._connection()
            with wrap_errors():
                cur = await conn.execute(
                    query("beat_worker"),
                    {"id": self.info.id, "state": state, "metrics": snapshot},
                )
                found = await cur.fetchone()
            if found is None:
                log.warning("worker.row_missing")
                await self.register()
        except BaseException:  # failed, timed out or cancelled: not steady any more
            self._steady_since = None
            raise
        if state != self.last_written:
            log.info("worker.state", state=state)
        self.last_written = state
        self._written()
        return state

    async def run(self) -> None:
        """Beat every ``interval_s`` until cancelled; database errors are retried."""
        while True:
            try:
                with anyio.fail_after(max(self.interval_s, 1.0)):
                    await self.beat()
            except Exception as exc:
                if not (is_connection_error(exc) or isinstance(exc, TimeoutError)):
                    raise
                log.warning("worker.heartbeat_failed", error_type=type(exc).__name__)
                await self._drop_connection()
            with anyio.move_on_after(self.interval_s):
                await self._poked.wait()
            self._poked = anyio.Event()

    async def mark_exited(self, timeout_s: float = 3.0) -> None:
        """Record a clean exit (shielded: survives cancellation; bounded by ``timeout_s``)
        and close the connection."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(timeout_s) as bound:
                try:
                    conn = await self._connection()
                    with wrap_errors():
                        await conn.execute(query("mark_worker_exited"), {"id": self.info.id})
                    self.last_written = "exited"
                    log.info("worker.state", state="exited")
                except Exception as exc:
                    log.warning("worker.mark_exited_failed", error_type=type(exc).__name__)
            if bound.cancelled_caught:
                log.warning("worker.mark_exited_failed", error_type="TimeoutError")
        await self._drop_connection()
