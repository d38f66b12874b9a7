"""The one place where driver errors become spectral errors.

Two kinds of failure look alike to a client and are handled alike: the connection or
server went away, and the server cannot take writes (a standby after a failover, a
session with ``default_transaction_read_only``).  Both are an outage that workers ride
out (:func:`is_connection_error`).  Errors whose cause is a misconfiguration in front of
the database (a transaction pooler) carry the setting or pooler option that fixes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.errors
import psycopg_pool

from ..errors import ConnectionLost, DatabaseError, DatabaseReadOnly

__all__ = [
    "ReadOnlySession",
    "explain_connect_error",
    "is_connection_error",
    "is_read_only_error",
    "pooler_hint",
    "translate",
    "wrap_errors",
]

# SQLSTATE classes that mean "the connection or server went away".
_CONNECTION_CLASSES = ("08", "57P")
#: read_only_sql_transaction: a write (or LISTEN) on a standby or a read-only session
_READ_ONLY = "25006"
#: psycopg's server-side prepared statements, lost or doubled behind a transaction pooler
_PREPARED = ("26000", "42P05")

#: spectral's connections never prepare statements (ADR 0041): only a handler's own
#: ``prepare=True`` does
POOLER_SETTING_HINT = (
    "a statement was prepared (`prepare=True`) on a connection that goes through a "
    "transaction pooler such as PgBouncer in transaction mode: do not prepare statements there"
)
OPTIONS_HINT = (
    "the server or pooler refused the `options` startup parameter: the checkpointer sets "
    "search_path through it, so point SPECTRAL_AGENT_DATABASE_URL at a direct or "
    "session-mode connection (PgBouncer: a database entry with pool_mode=session); "
    "adding `options` to PgBouncer's ignore_startup_parameters silences the refusal but "
    "drops the search_path the checkpointer needs"
)


class ReadOnlySession(psycopg.OperationalError):
    """The server accepted the connection but cannot take writes (raised by the pools)."""


def is_read_only_error(exc: BaseException) -> bool:
    """True when ``exc`` means the server cannot take writes (a standby, a read-only
    session)."""
    if isinstance(exc, ReadOnlySession | DatabaseReadOnly):
        return True
    return isinstance(exc, psycopg.Error) and exc.sqlstate == _READ_ONLY


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the connection or the server is gone, or the server cannot
    take writes right now (a read-only session is an outage, never a database)."""
    if is_read_only_error(exc):
        return True
    if isinstance(exc, ConnectionLost | psycopg.OperationalError | psycopg_pool.PoolTimeout):
        if isinstance(exc, psycopg.Error) and exc.sqlstate:
            return exc.sqlstate.startswith(_CONNECTION_CLASSES)
        return True
    return isinstance(exc, psycopg.InterfaceError | OSError)


def pooler_hint(exc: BaseException) -> str | None:
    """The setting or pooler option that fixes ``exc``, when it is a known
    misconfiguration in front of the database."""
    text = str(exc)
    state = getattr(exc, "sqlstate", None)
    if state in _PREPARED and '"_pg3_' in text:
        return POOLER_SETTING_HINT
    if "unsupported startup parameter" in text and "options" in text:
        return OPTIONS_HINT
    return None


def explain_connect_error(exc: BaseException) -> str:
    """A one-line, secret-free reason a connection attempt failed, with the fix when known."""
    line = _first_line(exc)
    if "connection failed:" in line:
        # libpq repeats the address; keep the server's own words
        line = line.split("connection failed:", 1)[1].strip() or line
    hint = pooler_hint(exc)
    return f"{line} ({hint})" if hint else line


def translate(exc: BaseException) -> DatabaseError:
    """Map a driver error to the library's hierarchy (the original is kept as cause)."""
    if isinstance(exc, DatabaseError):
        return exc
    state = getattr(exc, "sqlstate", None)
    hint = pooler_hint(exc)
    suffix = f" ({hint})" if hint else ""
    if is_read_only_error(exc):
        err: DatabaseError = DatabaseReadOnly(
            f"database is read-only (a standby or a read-only session): {_first_line(exc)}",
            sqlstate=state,
        )
    elif is_connection_error(exc):
        err = ConnectionLost(
            f"database connection lost: {_first_line(exc)}{suffix}", sqlstate=state
        )
    else:
        err = DatabaseError(f"database error: {_first_line(exc)}{suffix}", sqlstate=state)
    err.__cause__ = exc
    return err


@contextmanager
def wrap_errors() -> Iterator[None]:
    """Translate ``psycopg`` / pool errors raised inside the block."""
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        raise translate(exc) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
