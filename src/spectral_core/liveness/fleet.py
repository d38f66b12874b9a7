"""The API processes of the fleet (``core.api_processes``, ADR 0032).

Every ``spectral-api`` process registers on boot, refreshes ``last_seen`` every heartbeat
interval and marks itself ``exited`` on a clean shutdown, with the workers' rules: a row
whose ``last_seen`` is older than ``SPECTRAL_WORKER_STALE_AFTER_S`` is shown as ``lost``,
and rows not seen for ``SPECTRAL_WORKER_RETENTION_S`` are pruned (by the API processes
themselves, at registration and then about once a minute).

The same heartbeat statement returns how many API processes of the whole fleet (every
generation) are live and this process's rank among them (ordered by id): the
:class:`FleetView` that the rate limiter divides every tenant's limits by.  It is learned
in the background, never on a request's path.  When the database cannot be reached the
last view is kept (the process goes on enforcing its last share).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
import structlog

from ..db import Database, connect_kwargs
from ..db._wrap import is_connection_error, wrap_errors
from ..errors import DatabaseError
from ..sql import query
from .heartbeat import WorkerInfo

__all__ = ["ApiRegistry", "FleetView"]

log = structlog.get_logger("spectral.fleet")

#: beats between two retention prunes
_PRUNE_EVERY = 30


@dataclass(frozen=True, slots=True)
class FleetView:
    """What one API process knows of the fleet: ``live`` processes (itself included,
    at least 1) and its ``rank`` among them (0-based, by id)."""

    live: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.live < 1 or not 0 <= self.rank < self.live:
            raise ValueError(f"bad fleet view: live={self.live} rank={self.rank}")


class ApiRegistry:
    """Registers one API process, keeps it fresh and learns the fleet's size.

    Args:
        db: The process's database (its settings give the URL and the timeouts).
        info: Who this process is.
        interval_s: Heartbeat interval.
        stale_after_s: A peer not seen for this long is not counted.
        retention_s: Rows not seen for this long are pruned.
        on_view: Called with the new :class:`FleetView` whenever it changes.
    """

    def __init__(
        self,
        db: Database,
        info: WorkerInfo,
        *,
        interval_s: float,
        stale_after_s: float,
        retention_s: float,
        on_view: Callable[[FleetView], None] = lambda view: None,
    ) -> None:
        self.db = db
        self.info = info
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s
        self.retention_s = retention_s
        self.view = FleetView()
        self._on_view = on_view
        self._beats = 0
        # a connection of its own: a pool busy with requests must not delay the heartbeat
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            settings = self.db.settings
            with wrap_errors():
                self._conn = await psycopg.AsyncConnection.connect(
                    settings.require_database_url(),
                    connect_timeout=max(1, int(settings.database_connect_timeout_s)),
                    **connect_kwargs(tcp_timeout_s=settings.database_tcp_timeout_s),
                )
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
                await conn.close()

    async def register(self) -> None:
        """Insert (or re-insert) this process's row, prune old rows, learn the fleet."""
        conn = await self._connection()
        with wrap_errors():
            await conn.execute(
                query("register_api_process"),
                {
                    "id": self.info.id,
                    "generation": self.info.generation,
                    "host": self.info.host,
                    "pid": self.info.pid,
                    "version": self.info.version,
                },
            )
        log.info("api.registered", host=self.info.host, pid=self.info.pid)
        await self.prune()
        await self.beat()

    async def prune(self) -> int:
        """Delete rows of API processes not seen within the retention."""
        conn = await self._connection()
        with wrap_errors():
            cur = await conn.execute(
                query("prune_api_processes"),
                {"retention_s": self.retention_s, "me": self.info.id},
            )
            row = await cur.fetchone()
        pruned = int(row[0]) if row else 0
        if pruned:
            log.info("api.processes_pruned", n=pruned, retention_s=self.retention_s)
        return pruned

    async def beat(self) -> FleetView:
        """Write ``last_seen`` once and learn the fleet; return the view."""
        conn = await self._connection()
        with wrap_errors():
            cur = await conn.execute(
                query("beat_api_process"),
                {"id": self.info.id, "stale_after_s": self.stale_after_s},
            )
            row = await cur.fetchone()
        assert row is not None
        found, live, rank = (int(v) for v in row)
        if not found:
            log.warning("api.row_missing")
            await self.register()
            return self.view
        self._set(FleetView(live=live, rank=rank))
        return self.view

    def _set(self, view: FleetView) -> None:
        if view != self.view:
            log.info("api.fleet", live=view.live, rank=view.rank)
            self.view = view
            self._on_view(view)

    async def run(self) -> None:
        """Beat every ``interval_s`` until cancelled; database errors of any kind are
        logged (``api.heartbeat_failed``) and retried, the last view kept meanwhile: the
        registry never stops the server."""
        while True:
            with anyio.move_on_after(self.interval_s):
                await anyio.sleep_forever()
            try:
                with anyio.fail_after(max(self.interval_s, 1.0)):
                    await self.beat()
                    self._beats += 1
                    if self._beats % _PRUNE_EVERY == 0:
                        await self.prune()
            except Exception as exc:
                # any database error (not only a lost connection: a canceled statement, a
                # failover's read-only session) keeps the last view; the server goes on
                if not (is_connection_error(exc) or isinstance(exc, (TimeoutError, DatabaseError))):
                    raise
                log.warning("api.heartbeat_failed", error_type=type(exc).__name__)
                await self._drop_connection()

    async def mark_exited(self, timeout_s: float = 3.0) -> None:
        """Record a clean exit (shielded, bounded) and close the connection.  Call it once
        :meth:`run` has ended: they share the registry's connection."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(timeout_s) as bound:
                try:
                    conn = await self._connection()
                    with wrap_errors():
                        await conn.execute(query("mark_api_process_exited"), {"id": self.info.id})
                    log.info("api.exited")
                except Exception as exc:  # noqa: BLE001 - the row goes stale instead
                    log.warning("api.mark_exited_failed", error_type=type(exc).__name__)
            if bound.cancelled_caught:
                log.warning("api.mark_exited_failed", error_type="TimeoutError")
        await self._drop_connection()
