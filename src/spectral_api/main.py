"""The API process: boot checks like the workers, then uvicorn serving the app.

Exit codes: 0 clean shutdown; 3 cannot start (bad settings, operator keys, generation
missing or never allocated: a supervisor must not restart it); 1 anything else (database
unreachable at boot, the server failed).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
from collections.abc import Sequence
from types import FrameType

import anyio
import structlog
import uvicorn

from spectral_core import Settings
from spectral_core.boot import booted, event_loop_options, freeze_startup_heap, run_process
from spectral_core.lifetime import LINGER_S, ShutdownPlan, arm_hard_exit, watch_parent
from spectral_core.modules import Keyring

from .app import create_app
from .server import server_config

log = structlog.get_logger("spectral.api")


async def run(settings: Settings, keyring: Keyring) -> int:
    """Open the pools, verify the generation, bind the runtime, serve until SIGTERM.

    The process's body (called once by :func:`main`): it arms hard exits.
    """
    plan = ShutdownPlan(settings.shutdown_grace_s)
    async with booted(settings, process="api") as (db, rt):
        generation = rt.generation
        app = create_app(settings, db, generation=generation, keyring=keyring, runtime=rt)
        # requests in flight get the work part of the grace, then they are cancelled;
        # uvicorn only passes it to asyncio.timeout, so a float is fine
        config = server_config(app, settings, timeout_graceful_shutdown=plan.work_s)
        server = _Server(config, plan, settings.parent_pid)
        freeze_startup_heap()  # what exists now lives as long as the process (ADR 0039)
        # uvicorn handles SIGTERM gracefully, then re-raises it against the handler that
        # was installed before it: make that one a no-op so a clean stop exits 0.
        signal.signal(signal.SIGTERM, _ignore_after_shutdown)
        log.info("api.serving", host=settings.api_host, port=settings.api_port)
        await server.serve()
        # the lifespan logged api.stopped; closing the pool is bounded, and whatever else
        # is left (executor threads, exit handlers) must not keep the process alive
        code = 0 if server.started else 1
        arm_hard_exit(LINGER_S, code=code, reason="still running after api.stopped")
        if not server.started:
            log.error("api.failed", error="the server did not start (port in use?)")
            return 1
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, plus the hard exit armed on the first SIGTERM/SIGINT and the
    parent watch (a dead supervisor is a SIGTERM)."""

    def __init__(self, config: uvicorn.Config, plan: ShutdownPlan, parent_pid: int | None) -> None:
        super().__init__(config)
        self.plan = plan
        self.parent_pid = parent_pid

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's signal handlers are in place here (serve() installs them first)
        await super().startup(sockets)
        watch_parent(self.parent_pid, process="api")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info("api.stopping", signal=signal.Signals(sig).name, grace_s=self.plan.grace_s)
            arm_hard_exit(self.plan.hard_exit_s, code=1, reason="stop exceeded the grace period")
        super().handle_exit(sig, frame)


def _ignore_after_shutdown(signum: int, frame: object) -> None:
    """Installed only while uvicorn serves; uvicorn's own handler runs first."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spectral-api",
        description="spectral decision API (settings from SPECTRAL_* variables)",
    )
    p.add_argument("--host", default=None, help="override SPECTRAL_API_HOST")
    p.add_argument("--port", type=int, default=None, help="override SPECTRAL_API_PORT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entrypoint ``spectral-api``."""
    args = _parser().parse_args(argv)
    overrides = {
        k: v for k, v in (("api_host", args.host), ("api_port", args.port)) if v is not None
    }

    def start(settings: Settings) -> int:
        keyring = Keyring.from_config(settings.operator_keys)
        return anyio.run(
            run, settings, keyring, backend="asyncio", backend_options=event_loop_options(settings)
        )

    return run_process("api", os.environ, start, **overrides)
