"""Connection pools with explicit lifetimes.

``async with open_pools(settings) as db:`` opens the transaction pool for
``SPECTRAL_DATABASE_URL`` (waiting for it to be usable, so a misconfigured process fails
fast) and knows how to open the session connection used for LISTEN
(``SPECTRAL_DATABASE_SESSION_URL``).  Nothing opens at import or in a constructor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from ..errors import ConnectionLost
from ..settings import Settings
from ._wrap import wrap_errors

__all__ = ["POOL_CLOSE_TIMEOUT_S", "Database", "connect_kwargs", "connect_session", "open_pools"]

#: Closing a pool waits at most this long for its background connectors (a dead or frozen
#: server would otherwise hold a stopping process for psycopg's default of 5 s).
POOL_CLOSE_TIMEOUT_S = 0.5


#: Detect half-open connections (network partition, dead server) within about 30 s
#: instead of the kernel's default of ~15 minutes.
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def connect_kwargs(*, transaction_pooler: bool) -> dict[str, Any]:
    """psycopg connection options for the main URL.

    Through a transaction pooler no server-side prepared statement may be created
    (``prepare_threshold=None``); on a direct connection hot statements are prepared
    after their first execution.
    """
    return {
        "autocommit": True,
        "prepare_threshold": None if transaction_pooler else 1,
        **KEEPALIVE,
    }


def _configure_json(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    set_json_loads(msgspec.json.decode, conn)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    _configure_json(conn)


@dataclass(frozen=True, slots=True)
class Database:
    """The opened database resources of one process."""

    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    settings: Settings

    async def connect_session(self) -> psycopg.AsyncConnection[Any]:
        """Open a new session-mode connection (for LISTEN); the caller closes it."""
        return await connect_session(self.settings)


async def connect_session(settings: Settings) -> psycopg.AsyncConnection[Any]:
    """Open an autocommit connection to the session URL.

    Raises:
        ConnectionLost: the server cannot be reached.
    """
    url = settings.session_url or settings.require_database_url()
    with wrap_errors():
        conn = await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=max(1, int(settings.database_connect_timeout_s)),
            **KEEPALIVE,
        )
    _configure_json(conn)
    return conn


@asynccontextmanager
async def open_pools(settings: Settings, *, wait: bool = True) -> AsyncIterator[Database]:
    """Open the pool for ``settings.database_url`` and close it on exit.

    Args:
        settings: process settings.
        wait: wait (up to ``database_connect_timeout_s``) until ``database_pool_min``
            connections are open, so a wrong URL fails at boot.

    Raises:
        ConfigError: no database URL is configured.
        ConnectionLost: the server could not be reached in time.
    """
    url = settings.require_database_url()
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        url,
        min_size=max(settings.database_pool_min, 1 if wait else 0),
        max_size=max(settings.database_pool_max, settings.database_pool_min, 1),
        kwargs=connect_kwargs(transaction_pooler=settings.database_transaction_pooler),
        configure=_configure,
        open=False,
        timeout=settings.database_connect_timeout_s,
        reconnect_timeout=settings.outage_limit_s,
        name="spectral",
    )
    await pool.open(wait=False)
    try:
        if wait:
            try:
                await pool.wait(timeout=settings.database_connect_timeout_s)
            except Exception as exc:
                raise ConnectionLost(
                    "database unreachable at boot", timeout_s=settings.database_connect_timeout_s
                ) from exc
        yield Database(pool=pool, settings=settings)
    finally:
        await pool.close(timeout=POOL_CLOSE_TIMEOUT_S)
