"""The one place where driver errors become spectral errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.errors
import psycopg_pool

from ..errors import ConnectionLost, DatabaseError

__all__ = ["is_connection_error", "translate", "wrap_errors"]

# SQLSTATE classes that mean "the connection or server went away".
_CONNECTION_CLASSES = ("08", "57P")


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the connection or the server is gone."""
    if isinstance(exc, ConnectionLost | psycopg.OperationalError | psycopg_pool.PoolTimeout):
        if isinstance(exc, psycopg.Error) and exc.sqlstate:
            return exc.sqlstate.startswith(_CONNECTION_CLASSES)
        return True
    return isinstance(exc, psycopg.InterfaceError | OSError)


def translate(exc: BaseException) -> DatabaseError:
    """Map a driver error to the library's hierarchy (the original is kept as cause)."""
    if isinstance(exc, DatabaseError):
        return exc
    state = getattr(exc, "sqlstate", None)
    if is_connection_error(exc):
        err: DatabaseError = ConnectionLost(
            f"database connection lost: {_first_line(exc)}", sqlstate=state
        )
    else:
        err = DatabaseError(f"database error: {_first_line(exc)}", sqlstate=state)
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
