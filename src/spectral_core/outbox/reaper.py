"""The reaper: crash recovery within one generation (ADR 0027).

Re-pends ``in_flight`` rows of *its own generation* whose claimer is no longer alive:
its ``core.workers`` row is missing, ``exited``, or its ``last_seen`` is older than
``stale_after_s``.  A live worker's heartbeat keeps its claims alive however long its
handler runs.  A row whose attempts reached the maximum becomes ``dead`` instead, so a
poison row that kills its worker every time ends visible rather than in a loop.
There is no cross-generation sweep: the generation is bound at construction.

The locking rule: the reaper never waits for a lock another worker holds.  It skips
locked rows (``FOR UPDATE SKIP LOCKED``), and each pass runs in one transaction with a
short ``lock_timeout`` so that no other lock can hold it either.  A row stays locked while
a live transaction works on it, so a frozen or cut-off worker's open handler transaction
would keep its rows forever; that is why a worker declared lost also loses its server
sessions: before re-pending, the reaper terminates the backends that worker recorded in
``core.worker_sessions`` (its transactions roll back, its locks go) and waits briefly for
them to end.

Run by a worker (``worker_id`` given), the reaper never takes its own worker's claims and
judges nobody unless its own heartbeat is fresh; with the worker's :class:`Heartbeat` it
also waits until the heartbeat has beaten without a failure for a whole stale bound, so
after an outage every peer has had the time to renew its heartbeat before it is judged.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import structlog

from ..db import Database
from ..db._wrap import is_connection_error, wrap_errors
from ..errors import DatabaseError
from ..liveness import Heartbeat
from ..sql import query

__all__ = ["LOCK_TIMEOUT_MS", "TERMINATE_WAIT_MS", "Reaper"]

log = structlog.get_logger("spectral.reaper")

#: the longest a reaper statement waits for any lock (rows are skipped, never waited for)
LOCK_TIMEOUT_MS = 1000
#: how long the reaper waits for each terminated session of a lost worker to end
TERMINATE_WAIT_MS = 1000


class Reaper:
    """Re-pends stale claims of one generation."""

    def __init__(
        self,
        generation: int,
        *,
        stale_after_s: float,
        max_attempts: int,
        worker_id: uuid.UUID | None = None,
        heartbeat_interval_s: float | None = None,
        retention_s: float | None = None,
    ) -> None:
        """
        Args:
            generation: the only generation whose rows this reaper touches.
            stale_after_s: a claimer whose heartbeat is older than this is lost.
            max_attempts: a reaped row at this many attempts becomes ``dead``.
            worker_id: the worker running this reaper: its claims are never taken, and
                nobody is judged while its own heartbeat is not fresh.  None (tools,
                tests): no such guard.
            heartbeat_interval_s: the worker's heartbeat interval; the judge's own
                heartbeat counts as fresh within ``stale_after_s - interval`` (at least one
                interval), so a pass delayed by an outage judges nobody.
            retention_s: prune ``core.workers`` rows not seen for this long (every
                generation); None: no pruning.
        """
        self.generation = int(generation)
        self.stale_after_s = stale_after_s
        self.max_attempts = max_attempts
        self.worker_id = worker_id
        interval = heartbeat_interval_s if heartbeat_interval_s is not None else 0.0
        self.self_fresh_s = max(stale_after_s - interval, interval)
        self.retention_s = retention_s

    def _params(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "stale_after_s": self.stale_after_s,
            "max_attempts": self.max_attempts,
            "me": self.worker_id,
            "self_fresh_s": self.self_fresh_s,
            "wait_ms": TERMINATE_WAIT_MS,
            "retention_s": self.retention_s,
        }

    async def reap(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
        """One pass; returns how many rows went back to ``pending`` and to ``dead``.

        Terminates the recorded sessions of lost workers first, then re-pends what is not
        locked, then prunes old worker rows (when a retention is set).

        Raises:
            DatabaseError: a statement failed (e.g. a lock wait reached the lock timeout);
                the pass is rolled back whole.
        """
        params = self._params()
        with wrap_errors():
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}")
                cur = await conn.execute(query("terminate_lost_sessions"), params)
                ended = await cur.fetchall()
                cur = await conn.execute(query("repend_stale"), params)
                rows = await cur.fetchall()
                pruned = 0
                if self.retention_s is not None:
                    cur = await conn.execute(query("prune_workers"), params)
                    pruned = (await cur.fetchone() or (0,))[0]
        for worker, pid, done in ended:
            log.warning("reaper.session_terminated", worker=str(worker), pid=pid, ended=done)
        result = {"pending": 0, "dead": 0}
        for _id, status in rows:
            result[status] += 1
        if rows:
            log.warning("reaper.reaped", generation=self.generation, **result)
        if pruned:
            log.info("reaper.workers_pruned", n=pruned, retention_s=self.retention_s)
        return result

    async def run(
        self, db: Database, interval_s: float, *, heartbeat: Heartbeat | None = None
    ) -> None:
        """Reap every ``interval_s`` until cancelled; database errors are retried.

        With ``heartbeat``, a pass runs only once it has beaten without a failure for
        ``stale_after_s`` (ADR 0027).
        """
        while True:
            if heartbeat is None or heartbeat.steady_for() >= self.stale_after_s:
                try:
                    async with db.pool.connection() as conn:
                        await self.reap(conn)
                except Exception as exc:
                    if is_connection_error(exc):
                        log.warning("reaper.db_unavailable", error_type=type(exc).__name__)
                    elif isinstance(exc, DatabaseError):
                        # a lock timeout or a cancelled statement: this pass is rolled
                        # back whole, the next one tries again
                        log.warning(
                            "reaper.db_error",
                            error=exc.message,
                            sqlstate=getattr(exc, "sqlstate", None),
                        )
                    else:
                        raise
            await anyio.sleep(interval_s)
