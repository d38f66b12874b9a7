"""The API process: boot checks like the workers, then uvicorn serving the app.

Exit codes: 0 clean shutdown; 3 cannot start (bad settings, operator keys, generation
missing or never allocated: a supervisor must not restart it); 1 anything else (database
unreachable at boot, the server failed).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import anyio
import structlog
import uvicorn

from spectral_core import (
    RuntimeContext,
    Settings,
    bind_runtime,
    open_pools,
    require_generation_async,
)
from spectral_core.errors import EXIT_CANNOT_START, SpectralError
from spectral_core.logging import configure_logging
from spectral_core.modules import Keyring

from .app import create_app

log = structlog.get_logger("spectral.api")


async def run(settings: Settings, keyring: Keyring) -> int:
    """Open the pools, verify the generation, bind the runtime, serve until SIGTERM."""
    generation = settings.require_generation()
    async with open_pools(settings) as db:
        async with db.pool.connection() as conn:
            await require_generation_async(conn, generation)
        rt = bind_runtime(RuntimeContext(generation=generation, version=settings.running_version))
        structlog.contextvars.bind_contextvars(process="api", generation=generation,
                                               instance_id=str(rt.instance_id))
        app = create_app(settings, db, generation=generation, keyring=keyring)
        config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                                lifespan="on", log_config=None, access_log=False,
                                server_header=False, timeout_graceful_shutdown=10)
        server = uvicorn.Server(config)
        # uvicorn handles SIGTERM gracefully, then re-raises it against the handler that
        # was installed before it: make that one a no-op so a clean stop exits 0.
        signal.signal(signal.SIGTERM, _ignore_after_shutdown)
        log.info("api.serving", host=settings.api_host, port=settings.api_port)
        await server.serve()
        if not server.started:
            log.error("api.failed", error="the server did not start (port in use?)")
            return 1
    return 0


def _ignore_after_shutdown(signum: int, frame: object) -> None:
    """Installed only while uvicorn serves; uvicorn's own handler runs first."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spectral-api", description="spectral decision API "
                                "(settings from SPECTRAL_* variables)")
    p.add_argument("--host", default=None, help="override SPECTRAL_API_HOST")
    p.add_argument("--port", type=int, default=None, help="override SPECTRAL_API_PORT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entrypoint ``spectral-api``."""
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in (("api_host", args.host), ("api_port", args.port))
                 if v is not None}
    try:
        settings = Settings.from_env(os.environ, **overrides)
    except SpectralError as exc:
        print(f"spectral-api: cannot start: {exc.message}", file=sys.stderr)
        return EXIT_CANNOT_START
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    try:
        settings.require_generation()
        settings.require_database_url()
        keyring = Keyring.from_config(settings.operator_keys)
        return anyio.run(run, settings, keyring, backend="asyncio")
    except SpectralError as exc:
        cannot = exc.exit_code == EXIT_CANNOT_START
        log.error("api.cannot_start" if cannot else "api.failed", error=exc.message,
                  error_type=type(exc).__name__)
        print(f"spectral-api: {'cannot start' if cannot else 'error'}: {exc.message}",
              file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
