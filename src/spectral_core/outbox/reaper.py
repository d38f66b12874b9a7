"""The reaper: crash recovery within one generation.

Re-pends ``in_flight`` rows of *its own generation* whose claimer is no longer alive:
its ``core.workers`` row is missing, ``exited``, or its ``last_seen`` is older than
``stale_after_s``.  A live worker's heartbeat keeps its claims alive however long its
handler runs.  A row whose attempts reached the maximum becomes ``dead`` instead, so a
poison row that kills its worker every time ends visible rather than in a loop.
There is no cross-generation sweep: the generation is bound at construction.
"""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import structlog

from ..db import Database
from ..db._wrap import is_connection_error, wrap_errors
from ..sql import query

__all__ = ["Reaper"]

log = structlog.get_logger("spectral.reaper")


class Reaper:
    """Re-pends stale claims of one generation."""

    def __init__(self, generation: int, *, stale_after_s: float, max_attempts: int) -> None:
        self.generation = int(generation)
        self.stale_after_s = stale_after_s
        self.max_attempts = max_attempts

    async def reap(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
        """One pass; returns how many rows went back to ``pending`` and to ``dead``."""
        with wrap_errors():
            cur = await conn.execute(
                query("repend_stale"),
                {
                    "generation": self.generation,
                    "stale_after_s": self.stale_after_s,
                    "max_attempts": self.max_attempts,
                },
            )
            rows = await cur.fetchall()
        result = {"pending": 0, "dead": 0}
        for _id, status in rows:
            result[status] += 1
        if rows:
            log.warning("reaper.reaped", generation=self.generation, **result)
        return result

    async def run(self, db: Database, interval_s: float) -> None:
        """Reap every ``interval_s`` until cancelled; connection errors are retried."""
        while True:
            try:
                async with db.pool.connection() as conn:
                    await self.reap(conn)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                log.warning("reaper.db_unavailable", error_type=type(exc).__name__)
            await anyio.sleep(interval_s)
