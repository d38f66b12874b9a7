"""spectral_core: deployment generations, the transactional outbox and its idempotency
ledger, worker heartbeats and forward-only migrations on PostgreSQL.

Framework-agnostic: nothing here imports a web framework or an entrypoint package.
"""

from .db import Database, open_pools
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
from .generations import allocate_generation, allocate_generation_async, require_generation_async
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
from .settings import Settings, package_version

__version__ = package_version()

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
