"""``create_app(settings, db, ...)``: the Starlette application, wired to spectral_core.

The app owns no resources it did not get: the database is opened (and closed) by the
entrypoint; the lifespan starts and stops the sandbox's epoch ticker and the process's
registration in ``core.api_processes`` (its heartbeat tells the rate limiter how many API
processes share every tenant's limits, ADR 0032).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spectral_core import Settings
from spectral_core.db import Database, is_connection_error
from spectral_core.health import HealthProbe
from spectral_core.liveness import ApiRegistry, FleetView, WorkerInfo
from spectral_core.metrics import QueueStats
from spectral_core.metrics.exposition import QueueCollector
from spectral_core.modules import Keyring, ModuleCache, ModuleStore
from spectral_core.operator import OperatorSession, OperatorViews, RecentThrottles, resolve_session
from spectral_core.ratelimit import TenantLimits
from spectral_core.runtime import RuntimeContext
from spectral_core.sandbox import Budget
from spectral_core.sandbox.lanes import TenantLanes
from spectral_core.sandbox.wasm import WasmSandbox, self_test
from spectral_core.tenants import Authenticator, Principal

from .auth import PRINCIPAL_KEY, ApiAuthMiddleware, TenantLimiter
from .console import console_routes
from .errors import exception_handlers
from .observe import ApiMetrics, ObserveMiddleware
from .routes import (
    DecideEndpoint,
    DecideShortcut,
    decide_routes,
    health_routes,
    metrics_routes,
    module_routes,
    operator_routes,
)
from .runner import DecisionRunner

__all__ = ["Services", "build_services", "create_app"]

log = structlog.get_logger("spectral.api")


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the routes use, built once per app."""

    settings: Settings
    db: Database
    generation: int
    sandbox: WasmSandbox
    budget: Budget
    runner: DecisionRunner
    keyring: Keyring
    store: ModuleStore
    cache: ModuleCache
    authenticator: Authenticator
    limiter: TenantLimiter
    health: HealthProbe
    #: the API's instruments and the registry /metrics renders (ADR 0029)
    metrics: ApiMetrics
    #: the queue gauges read from PostgreSQL, cached
    queue_stats: QueueStats
    #: the operator console's reads (ADR 0038)
    operator: OperatorViews
    #: this process's recent 429s per tenant (the console's tenant view)
    throttles: RecentThrottles


def build_services(
    settings: Settings,
    db: Database,
    *,
    generation: int | None = None,
    sandbox: WasmSandbox | None = None,
    keyring: Keyring | None = None,
) -> Services:
    """Wire the core objects from settings.

    Raises:
        ConfigError: Invalid settings (operator keys, budgets, limits).
    """
    gen = settings.require_generation() if generation is None else generation
    budget = Budget(
        fuel=settings.sandbox_fuel,
        deadline_ms=settings.sandbox_deadline_ms,
        memory_bytes=settings.sandbox_memory_bytes,
        output_bytes=settings.sandbox_output_bytes,
        json_depth=settings.sandbox_json_depth,
    )
    sandbox = sandbox or WasmSandbox(
        default_budget=budget,
        max_threads=settings.api_sandbox_threads,
        binding=settings.sandbox_binding,
    )
    keyring = keyring if keyring is not None else Keyring.from_config(settings.operator_keys)
    store = ModuleStore(db)
    probe_sandbox = sandbox
    cache = ModuleCache(store, sandbox, keyring, approval_ttl_s=settings.api_approval_ttl_s)
    metrics = ApiMetrics(cache)
    queue_stats = QueueStats(
        db, cache_s=settings.metrics_cache_s, stale_after_s=settings.worker_stale_after_s
    )
    metrics.registry.register(QueueCollector(queue_stats))
    limits = TenantLimits(
        rate=settings.api_rate, burst=settings.api_burst, concurrency=settings.api_concurrency
    )
    throttles = RecentThrottles()
    return Services(
        settings=settings,
        db=db,
        generation=gen,
        sandbox=sandbox,
        budget=budget,
        runner=DecisionRunner(
            sandbox,
            inline_fuel=settings.sandbox_inline_fuel,
            max_batch=settings.sandbox_inline_batch,
            inline_ms=settings.sandbox_inline_ms,
            lanes=TenantLanes(settings.sandbox_tenant_threads),
        ),
        keyring=keyring,
        store=store,
        cache=cache,
        authenticator=Authenticator(db, ttl_s=settings.api_auth_ttl_s),
        limiter=TenantLimiter(limits),
        health=HealthProbe(
            settings,
            db,
            generation=gen,
            sandbox_check=lambda: self_test(probe_sandbox),
            operator_keys=len(keyring),
            cache_s=settings.api_health_cache_s,
        ),
        metrics=metrics,
        queue_stats=queue_stats,
        operator=OperatorViews(
            db,
            generation=gen,
            stale_after_s=settings.worker_stale_after_s,
            retention_s=settings.worker_retention_s,
            defaults=limits,
            throttles=throttles,
        ),
        throttles=throttles,
    )


class AccessLog:
    """One canonical log line per request (``api.request``), no bodies, no secrets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            who = scope.get(PRINCIPAL_KEY)
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if isinstance(who, Principal):
                fields["tenant"] = who.org
                fields["key_id"] = who.key_id
            if status >= 500:
                log.error("api.request", **fields)
            elif scope["path"] != "/health":
                log.info("api.request", **fields)


#: how long the API's last registry write (``exited``) may take at shutdown
FINAL_WRITE_S = 1.0


def create_app(
    settings: Settings,
    db: Database,
    *,
    generation: int | None = None,
    sandbox: WasmSandbox | None = None,
    keyring: Keyring | None = None,
    access_log: bool = True,
    runtime: RuntimeContext | None = None,
) -> Starlette:
    """The spectral API application.

    Args:
        settings: Process settings.
        db: The opened database (the caller owns it).
        generation: The verified running generation (default: ``settings.generation``).
        sandbox: A sandbox to use (default: one built from the settings' budget).
        keyring: Trusted operator keys (default: ``SPECTRAL_OPERATOR_KEYS``).
        access_log: Emit one ``api.request`` line per request.
        runtime: This process's identity in the API registry (default: a new one).

    Raises:
        ConfigError: Invalid settings.
    """
    services = build_services(settings, db, generation=generation, sandbox=sandbox, keyring=keyring)

    rt = runtime or RuntimeContext(generation=services.generation, version=settings.running_version)

    def on_view(view: FleetView) -> None:
        services.limiter.set_fleet(view.live, view.rank)

    registry = ApiRegistry(
        db,
        WorkerInfo.from_runtime(rt),
        interval_s=settings.heartbeat_interval_s,
        stale_after_s=settings.worker_stale_after_s,
        retention_s=settings.worker_retention_s,
        on_view=on_view,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            try:
                with anyio.fail_after(max(1.0, settings.database_connect_timeout_s)):
                    await registry.register()
            except Exception as exc:
                if not (is_connection_error(exc) or isinstance(exc, TimeoutError)):
                    raise
                # serve on the last (single-process) share; the heartbeat keeps trying
                log.warning("api.register_failed", error_type=type(exc).__name__)
            tg.start_soon(registry.run)
            services.sandbox.start()
            log.info(
                "api.started",
                generation=services.generation,
                operator_keys=len(services.keyring),
                version=settings.running_version,
                event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            )
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                services.sandbox.stop()
        # the heartbeat has ended (the task group joined it): a beat cancelled in flight
        # may have closed the registry's connection, never while the final write uses it.
        # The last write before the "stopped" line, bounded: with the database gone it
        # gives up and the row goes lost (ADR 0022: nothing after "stopped")
        await registry.mark_exited(timeout_s=FINAL_WRITE_S)
        log.info("api.stopped")

    async def sessions(session_id: str) -> OperatorSession | None:
        return await resolve_session(db, session_id)

    decide = DecideEndpoint()
    middleware = [
        Middleware(
            ApiAuthMiddleware,
            authenticator=services.authenticator,
            limiter=services.limiter,
            sessions=sessions,
            throttles=services.throttles,
        ),
        # innermost: POST /api/decide past Starlette's exception middleware and router
        Middleware(DecideShortcut, endpoint=decide),
    ]
    if access_log:
        middleware.insert(0, Middleware(AccessLog))
    # outermost: it sees every answer, the 429s of the auth middleware included
    middleware.insert(0, Middleware(ObserveMiddleware, metrics=services.metrics))
    # the hottest route first: the router tries routes in order (its other methods: 405)
    app = Starlette(
        routes=[
            *decide_routes(decide),
            *health_routes(),
            *metrics_routes(),
            *module_routes(),
            *operator_routes(),
            *console_routes(settings),
        ],
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.registry = registry
    return app
