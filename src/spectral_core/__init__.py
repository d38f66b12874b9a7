"""spectral_core: deployment generations, the transactional outbox and its idempotency
ledger, worker heartbeats and forward-only migrations on PostgreSQL.

Framework-agnostic: nothing here imports a web framework or an entrypoint package.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    ConnectionLost,
    DatabaseError,
    GenerationError,
    MigrationError,
    OutboxError,
    PayloadError,
    SpectralError,
)

if TYPE_CHECKING:
    from .db import Database, open_pools
    from .generations import (
        allocate_generation,
        allocate_generation_async,
        require_generation_async,
    )
    from .liveness import Heartbeat, WorkerInfo
    from .migrate import run_migrations
    from .outbox import (
        Consumer,
        ConsumerConfig,
        Event,
        EventIn,
        Handler,
        HandlerRegistry,
        Publisher,
        Reaper,
        publish,
        publish_async,
        publish_many,
        publish_many_async,
    )
    from .runtime import RuntimeContext, bind_runtime, current_runtime
    from .settings import Settings

    __version__: str

# The names below are imported on first use (PEP 562), so that a light part of the package
# (the compat lint, `spectral lint`) does not import the database layer (psycopg) with it.
_LAZY = {
    "Database": "db",
    "open_pools": "db",
    "allocate_generation": "generations",
    "allocate_generation_async": "generations",
    "require_generation_async": "generations",
    "Heartbeat": "liveness",
    "WorkerInfo": "liveness",
    "run_migrations": "migrate",
    "Consumer": "outbox",
    "ConsumerConfig": "outbox",
    "Event": "outbox",
    "EventIn": "outbox",
    "Handler": "outbox",
    "HandlerRegistry": "outbox",
    "Publisher": "outbox",
    "Reaper": "outbox",
    "publish": "outbox",
    "publish_async": "outbox",
    "publish_many": "outbox",
    "publish_many_async": "outbox",
    "RuntimeContext": "runtime",
    "bind_runtime": "runtime",
    "current_runtime": "runtime",
    "Settings": "settings",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from .settings import package_version

        value: Any = package_version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ConfigError",
    "ConnectionLost",
    "Consumer",
    "ConsumerConfig",
    "Database",
    "DatabaseError",
    "Event",
    "EventIn",
    "GenerationError",
    "Handler",
    "HandlerRegistry",
    "Heartbeat",
    "MigrationError",
    "OutboxError",
    "PayloadError",
    "Publisher",
    "Reaper",
    "RuntimeContext",
    "Settings",
    "SpectralError",
    "WorkerInfo",
    "__version__",
    "allocate_generation",
    "allocate_generation_async",
    "bind_runtime",
    "current_runtime",
    "open_pools",
    "publish",
    "publish_async",
    "publish_many",
    "publish_many_async",
    "require_generation_async",
    "run_migrations",
]
