"""Database access: pools, the session connection, driver-error translation."""

from ._wrap import is_connection_error, wrap_errors
from .pools import Database, connect_kwargs, connect_session, open_pools

__all__ = [
    "Database",
    "connect_kwargs",
    "connect_session",
    "is_connection_error",
    "open_pools",
    "wrap_errors",
]
