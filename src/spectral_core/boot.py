"""Process boot shared by the entrypoints (``spectral-api``, ``spectral-workers``).

:func:`booted` opens the pools (failing fast), verifies that the configured generation
was allocated, binds the runtime and the log context.  :func:`run_process` maps failures
to exit codes: 3 (:data:`~spectral_core.errors.EXIT_CANNOT_START`) for bad settings or an
unallocated generation, so a supervisor never restarts it; 1 for anything else the
library raises (database unreachable at boot or for longer than the outage limit).
The environment is passed in by the entrypoint: this module never reads ``os.environ``.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict

from .db import Database, open_pools
from .db.budget import check_budget
from .errors import EXIT_CANNOT_START, ConfigError, SpectralError
from .generations import require_generation_async
from .logging import configure_logging
from .runtime import RuntimeContext, bind_runtime
from .settings import Settings
from .tracing import configure as configure_tracing

__all__ = [
    "YOUNG_THRESHOLD",
    "booted",
    "event_loop_options",
    "freeze_startup_heap",
    "multi_host_urls_without_read_write",
    "run_process",
]

log = structlog.get_logger("spectral.boot")


#: the young generation's collection threshold of a process that calls
#: :func:`freeze_startup_heap` (CPython's default is 700; ADR 0046)
YOUNG_THRESHOLD: Final = 10_000


def freeze_startup_heap() -> None:
    """Collect once, then move everything the process holds now out of the garbage
    collector's sight (``gc.freeze``), and collect the young generation less often.

    For a process entrypoint, once its long-lived objects are built (imported modules,
    settings, pools, the app): they live as long as the process, and a full collection no
    longer scans them (in ``spectral-api`` one took about 30 ms every few thousand
    requests, and its passes over the whole heap cost the decide path more than that:
    ADR 0039).  Objects made later are collected as before, the young generation once
    :data:`YOUNG_THRESHOLD` container objects more were made than freed: under load the
    requests in flight hold about a thousand, so at CPython's default of 700 a young
    collection walked them every few dozen requests (ADR 0046).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@asynccontextmanager
async def booted(
    settings: Settings, *, process: str
) -> AsyncIterator[tuple[Database, RuntimeContext]]:
    """Open the pools, verify the generation, bind the runtime and the log context.

    Raises:
        ConfigError: The settings need more connections than
            SPECTRAL_DATABASE_MAX_CONNECTIONS (ADR 0035).
        GenerationError: SPECTRAL_GENERATION is missing or was never allocated.
        ConnectionLost: the database is unreachable (after the bounded boot wait).
    """
    generation = settings.require_generation()
    if process in ("api", "workers"):
        # before any connection: a process over its connection budget never opens one
        needs = check_budget(settings, "api" if process == "api" else "workers")
        log.debug("database.connections", **needs.as_dict())
    if settings.database_transaction_pooler:
        log.warning(
            "settings.deprecated",
            setting="SPECTRAL_DATABASE_TRANSACTION_POOLER",
            detail="ignored: spectral works unchanged directly and through a transaction "
            "pooler (no prepared statements; a pooled connection is detected); remove it",
        )
    for field in multi_host_urls_without_read_write(settings):
        log.warning(
            "database.url_may_pick_a_standby",
            setting=f"SPECTRAL_{field.upper()}",
            fix="add target_session_attrs=read-write to the URL",
            detail="the URL names several hosts without target_session_attrs=read-write, "
            "so a connection may land on a standby (read-only): spectral then waits "
            "for a writable server instead of using it",
        )
    # the OpenTelemetry SDK, only when SPECTRAL_OTLP_ENDPOINT is set (ADR 0029)
    shutdown_tracing = configure_tracing(settings, service_name=f"spectral-{process}")
    try:
        async with open_pools(settings) as db:
            async with db.pool.connection() as conn:
                await require_generation_async(conn, generation)
            rt = bind_runtime(
                RuntimeContext(generation=generation, version=settings.running_version)
            )
            structlog.contextvars.bind_contextvars(
                process=process, generation=generation, instance_id=str(rt.instance_id)
            )
            yield db, rt
    finally:
        shutdown_tracing()


def multi_host_urls_without_read_write(settings: Settings) -> list[str]:
    """The settings fields whose URL names several hosts but do not ask libpq for
    a writable one (``target_session_attrs=read-write`` or ``primary``)."""
    out: list[str] = []
    for field in ("database_url", "database_session_url", "agent_database_url"):
        url = getattr(settings, field)
        if not url:
            continue
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            continue  # connecting reports a malformed URL with its own error
        hosts = str(params.get("host") or params.get("hostaddr") or "")
        if "," not in hosts:
            continue
        if str(params.get("target_session_attrs", "any")) not in ("read-write", "primary"):
            out.append(field)
    return out


def event_loop_options(settings: Settings) -> dict[str, Any]:
    """``backend_options`` for ``anyio.run(..., backend="asyncio")`` per ``event_loop``.

    ``auto`` runs on uvloop when it is installed (it ships with the ``api`` and ``workers``
    extras), else on the standard asyncio loop; both are anyio's asyncio backend.

    Raises:
        ConfigError: ``SPECTRAL_EVENT_LOOP=uvloop`` but uvloop is not installed.
    """
    if settings.event_loop == "asyncio":
        return {"use_uvloop": False}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if settings.event_loop == "uvloop":
            raise ConfigError(
                "SPECTRAL_EVENT_LOOP=uvloop but uvloop is not installed "
                "(pip install 'spectral[workers]' or 'spectral[api]')"
            ) from None
        return {"use_uvloop": False}
    return {"use_uvloop": True}


def _first_spectral_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The library error a task-group failure carries (else the group itself)."""
    matched: BaseException | None = group.subgroup(lambda e: isinstance(e, SpectralError))
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched if matched is not None else group


def run_process(
    name: str, environ: Mapping[str, str], start: Callable[[Settings], int], **overrides: Any
) -> int:
    """Build the settings, configure logging, run ``start(settings)``; return an exit code."""
    log = structlog.get_logger(f"spectral.{name}")
    try:
        settings = Settings.from_env(environ, **overrides)
    except SpectralError as exc:
        print(f"spectral-{name}: cannot start: {exc.message}", file=sys.stderr)
        return EXIT_CANNOT_START
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    try:
        settings.require_generation()
        settings.require_database_url()
        try:
            return start(settings)
        except BaseExceptionGroup as group:  # task groups wrap what a component raised
            raise _first_spectral_error(group) from group
    except SpectralError as exc:
        cannot = exc.exit_code == EXIT_CANNOT_START
        log.error(
            f"{name}.cannot_start" if cannot else f"{name}.failed",
            error=exc.message,
            error_type=type(exc).__name__,
        )
        what = "cannot start" if cannot else "error"
        print(f"spectral-{name}: {what}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
