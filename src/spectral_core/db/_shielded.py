"""Final writes that must survive cancellation (shutdown releases)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import psycopg
import structlog

from .pools import Database

__all__ = ["release_shielded"]

log = structlog.get_logger("spectral.db")


async def release_shielded(
    db: Database,
    release: Callable[[psycopg.AsyncConnection[Any]], Awaitable[int]],
    *,
    event: str,
    timeout_s: float = 5.0,
) -> int:
    """Run ``release(conn)`` on a pool connection, shielded from cancellation and bounded by
    ``timeout_s``; log ``<event>.released`` / ``<event>.release_failed``; return the count
    (0 when it could not run: the reaper recovers those rows later)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(timeout_s):
        try:
            async with db.pool.connection(timeout=max(timeout_s - 1, timeout_s / 2)) as conn:
                n = await release(conn)
            if n:
                log.info(f"{event}.released", n=n)
            return n
        except Exception as exc:
            log.warning(f"{event}.release_failed", error_type=type(exc).__name__)
    return 0
