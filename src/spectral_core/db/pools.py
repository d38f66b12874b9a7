"""Connection pools with explicit lifetimes.

``async with open_pools(settings) as db:`` opens the transaction pool for
``SPECTRAL_DATABASE_URL`` (waiting for it to be usable, so a misconfigured process fails
fast) and knows how to open the session connection used for LISTEN
(``SPECTRAL_DATABASE_SESSION_URL``).  Nothing opens at import or in a constructor.

What the pool does through an outage or a failover (ADR 0024):

- every connection carries TCP keepalives and ``tcp_user_timeout`` (a peer that stopped
  answering is detected within ``SPECTRAL_DATABASE_TCP_TIMEOUT_S``) and a
  ``connect_timeout``;
- a reconnection attempt never waits longer than ``SPECTRAL_RECONNECT_BACKOFF_CAP_S``
  between tries: psycopg_pool's own backoff (1, 2, 4 ... s) is cut off by
  ``reconnect_timeout`` = the cap, and ``reconnect_failed`` starts a fresh attempt at
  once (``pool.check()``), for as long as the pool is open;
- a connection is checked at checkout without a round trip: when the server has already
  closed it (restart, failover) the socket is readable, and only then is it probed; a
  dead one makes the pool verify all its idle connections at once;
- a read-only session (a standby, ``default_transaction_read_only``) is refused at
  connect and discarded at checkout: for spectral it is an outage, never a database.
"""

from __future__ import annotations

import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg.rows import tuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from ..errors import ConnectionLost
from ..settings import Settings
from ..sql import query
from ._wrap import ReadOnlySession, explain_connect_error, wrap_errors

__all__ = [
    "DEFAULT_TCP_TIMEOUT_S",
    "POOL_CLOSE_TIMEOUT_S",
    "Database",
    "connect_kwargs",
    "connect_session",
    "is_pooled",
    "is_read_only",
    "open_pool",
    "open_pools",
    "tcp_options",
    "wait_ready",
]

log = structlog.get_logger("spectral.db")

#: a peer that stopped answering is declared dead after about this long
DEFAULT_TCP_TIMEOUT_S = 10.0

#: Closing a pool waits at most this long for its background connectors (a dead or frozen
#: server would otherwise hold a stopping process for psycopg's default of 5 s).
POOL_CLOSE_TIMEOUT_S = 0.5


def tcp_options(tcp_timeout_s: float = DEFAULT_TCP_TIMEOUT_S) -> dict[str, Any]:
    """libpq options that detect a dead peer (partition, vanished host) within about
    ``tcp_timeout_s``, instead of the kernel's default of ~15 minutes: keepalive probes
    after ``t/2`` idle seconds, 3 probes ``t/6`` apart, and ``tcp_user_timeout`` for data
    left unacknowledged."""
    idle = max(1, round(tcp_timeout_s / 2))
    interval = max(1, round(tcp_timeout_s / 6))
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": max(1000, round(tcp_timeout_s * 1000)),
    }


def connect_kwargs(*, tcp_timeout_s: float = DEFAULT_TCP_TIMEOUT_S) -> dict[str, Any]:
    """psycopg connection options for the main URL.

    No server-side prepared statements (``prepare_threshold=None``), on a direct connection
    as behind a transaction pooler: one configuration that works both ways (ADR 0041; the
    hot statements are calls of SQL functions, whose plans the server caches anyway).
    """
    return {
        "autocommit": True,
        "prepare_threshold": None,
        **tcp_options(tcp_timeout_s),
    }


def _configure_json(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    set_json_loads(msgspec.json.decode, conn)


def _reported_read_only(conn: psycopg.AsyncConnection[Any]) -> bool | None:
    """What the server reported at connect (PostgreSQL 14+ sends ``in_hot_standby`` and
    ``default_transaction_read_only``, and updates them on promotion); ``None`` when it
    reported neither (an older server, or a pooler that does not pass them on)."""
    standby = conn.info.parameter_status("in_hot_standby")
    read_only = conn.info.parameter_status("default_transaction_read_only")
    if standby is None and read_only is None:
        return None
    return standby == "on" or read_only == "on"


async def is_pooled(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when ``conn`` goes through a pooler: the backend running its statements is not
    the process the server announced at connect (a pooler announces its own id, ADR 0041).

    Raises:
        DatabaseError: the query failed.
    """
    with wrap_errors():
        cur = await conn.execute(query("backend_pid"))
        row = await cur.fetchone()
    return row is None or int(row[0]) != conn.info.backend_pid


async def is_read_only(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when the session cannot write: a standby in recovery, or a read-only default."""
    reported = _reported_read_only(conn)
    if reported is not None:
        return reported
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(query("read_only_session"))
    row = await cur.fetchone()
    return bool(row and row[0])


def _has_input(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when the idle connection's socket is readable: the server sent something
    unasked (the FATAL of a shutdown followed by EOF, a parameter change on promotion) or
    the kernel reports an error on it (a dead peer)."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


async def _check_at_checkout(
    pool: AsyncConnectionPool[Any], conn: psycopg.AsyncConnection[Any]
) -> None:
    """The pool's ``check``: no round trip unless the socket says something happened."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection is closed")
    if _has_input(conn):
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            log.info("database.connection_dead", pool=pool.name)
            # it most likely shares its fate with every idle connection (restart,
            # failover): verify them all now rather than one checkout at a time
            if not pool.closed:
                await pool.check()
            raise
    if _reported_read_only(conn):
        await conn.close()
        raise ReadOnlySession("the server turned read-only")


async def _refuse_read_only(conn: psycopg.AsyncConnection[Any]) -> None:
    if await is_read_only(conn):
        await conn.close()
        raise ReadOnlySession(
            "the server is read-only (a standby or default_transaction_read_only=on): "
            "not used until it takes writes"
        )


async def _retry_now(pool: AsyncConnectionPool[Any]) -> None:
    """``reconnect_failed``: the attempt gave up after the backoff cap; start a new one
    (its first try is immediate) so the pool keeps trying at least every cap seconds.
    How long a process rides out an outage is the consumer's ``outage_limit_s``."""
    if not pool.closed:
        await pool.check()


def _pool_options(settings: Settings) -> dict[str, Any]:
    """The outage behaviour shared by every pool of a process (see the module doc)."""
    return {
        "timeout": settings.database_connect_timeout_s,
        "reconnect_timeout": settings.reconnect_backoff_cap_s,
        "reconnect_failed": _retry_now,
    }


def open_pool(
    url: str,
    settings: Settings,
    *,
    kwargs: dict[str, Any],
    min_size: int,
    max_size: int,
    name: str,
    configure: Any = None,
) -> AsyncConnectionPool[Any]:
    """An unopened pool with spectral's outage behaviour (``await pool.open()`` it)."""
    pool: AsyncConnectionPool[Any]

    async def configured(conn: psycopg.AsyncConnection[Any]) -> None:
        if configure is not None:
            await configure(conn)
        await _refuse_read_only(conn)

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        await _check_at_checkout(pool, conn)

    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={
            "connect_timeout": max(1, round(settings.database_connect_timeout_s)),
            **tcp_options(settings.database_tcp_timeout_s),
            **kwargs,
        },
        configure=configured,
        check=check,
        open=False,
        name=name,
        **_pool_options(settings),
    )
    return pool


async def wait_ready(pool: AsyncConnectionPool[Any], settings: Settings, *, what: str) -> None:
    """Wait until the pool holds ``min_size`` connections; fail with the cause named.

    Raises:
        ConnectionLost: not ready within ``database_connect_timeout_s``; the message says
            why the last connection attempt failed and which setting fixes it.
    """
    try:
        await pool.wait(timeout=settings.database_connect_timeout_s)
    except Exception as exc:
        cause = await _diagnose(pool)
        raise ConnectionLost(
            f"{what} unreachable at boot" + (f": {cause}" if cause else ""),
            timeout_s=settings.database_connect_timeout_s,
        ) from exc


async def _diagnose(pool: AsyncConnectionPool[Any]) -> str | None:
    """One connection attempt with the pool's own options, to name the failure."""
    kwargs = dict(pool.kwargs) if isinstance(pool.kwargs, dict) else {}
    kwargs["connect_timeout"] = min(int(kwargs.get("connect_timeout", 3)), 3)
    try:
        conn = await psycopg.AsyncConnection.connect(str(pool.conninfo), **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return explain_connect_error(exc)
    try:
        if await is_read_only(conn):
            return (
                "the server is read-only (a standby, or default_transaction_read_only=on); "
                "with several hosts add target_session_attrs=read-write to the URL"
            )
    except Exception as exc:  # noqa: BLE001
        return explain_connect_error(exc)
    finally:
        await conn.close()
    return None


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
            connect_timeout=max(1, round(settings.database_connect_timeout_s)),
            **tcp_options(settings.database_tcp_timeout_s),
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
    pool = open_pool(
        url,
        settings,
        kwargs=connect_kwargs(
            tcp_timeout_s=settings.database_tcp_timeout_s,
        ),
        min_size=max(settings.database_pool_min, 1 if wait else 0),
        max_size=max(settings.database_pool_max, settings.database_pool_min, 1),
        name="spectral",
        configure=_configure_json_async,
    )
    await pool.open(wait=False)
    try:
        if wait:
            await wait_ready(pool, settings, what="database")
        yield Database(pool=pool, settings=settings)
    finally:
        await pool.close(timeout=POOL_CLOSE_TIMEOUT_S)


async def _configure_json_async(conn: psycopg.AsyncConnection[Any]) -> None:
    _configure_json(conn)
