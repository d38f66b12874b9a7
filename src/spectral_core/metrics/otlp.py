"""Push a worker's counters over OTLP/HTTP when ``SPECTRAL_OTLP_ENDPOINT`` is set (ADR 0029).

The workers have no HTTP surface; their counters reach Prometheus through
``core.workers.metrics`` and the API's ``/metrics``.  Where a collector is configured they
are also pushed there: an OpenTelemetry SDK ``MeterProvider`` with observable counters whose
callbacks read :class:`~spectral_core.metrics.worker.WorkerStats` at export time (every
``export_interval_s``), so nothing is done per event.  Needs the ``otel`` extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import structlog

from ..errors import ConfigError
from ..settings import Settings
from .worker import WorkerStats

__all__ = ["push_worker_metrics", "pushing_worker_metrics"]

log = structlog.get_logger("spectral.metrics")

#: (instrument name, HandlerStats attribute, description)
_COUNTERS = (
    ("spectral.worker.events.handled", "handled", "Handler calls whose effect committed"),
    ("spectral.worker.handler.failures", "failed", "Handler calls that raised when run alone"),
    ("spectral.worker.events.retried", "retried", "Rows re-pended after the handler failed"),
    ("spectral.worker.events.dead", "dead", "Rows that ended dead after the handler failed"),
)


def push_worker_metrics(
    settings: Settings,
    stats: WorkerStats,
    *,
    worker_id: str,
    service_name: str = "spectral-workers",
    export_interval_s: float = 15.0,
) -> Callable[[], None]:
    """Start exporting ``stats`` to ``SPECTRAL_OTLP_ENDPOINT``; return the shutdown function
    (a last export, then stop).  Without an endpoint: nothing, and a no-op shutdown.

    Raises:
        ConfigError: an endpoint is set but the ``otel`` extra is not installed.
    """
    if not settings.otlp_endpoint:
        return lambda: None
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        raise ConfigError(
            "SPECTRAL_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed: "
            "install spectral[otel]",
            field="otlp_endpoint",
        ) from None
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/metrics"
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, timeout=5),
        export_interval_millis=export_interval_s * 1000,
        export_timeout_millis=5000,
    )
    resource = Resource.create(
        {
            "service.name": settings.otlp_service_name or service_name,
            "service.version": settings.running_version,
            "service.instance.id": worker_id,
        }
    )
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("spectral")

    def per_handler(attribute: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(getattr(h, attribute), {"handler": name})
                for name, h in list(stats.handlers.items())
            ]

        return observe

    for name, attribute, description in _COUNTERS:
        meter.create_observable_counter(
            name, callbacks=[per_handler(attribute)], unit="1", description=description
        )

    def claims(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(sum(stats.claims.counts))]

    meter.create_observable_counter(
        "spectral.worker.claims", callbacks=[claims], unit="1", description="Non-empty claims"
    )

    def claimed_rows(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(stats.claims.sum)]

    meter.create_observable_counter(
        "spectral.worker.claimed.rows",
        callbacks=[claimed_rows],
        unit="1",
        description="Rows claimed",
    )
    log.info("metrics.otlp_push", interval_s=export_interval_s)

    def shutdown(*_: Any) -> None:
        provider.shutdown()

    return shutdown


@asynccontextmanager
async def pushing_worker_metrics(
    settings: Settings, stats: WorkerStats, *, worker_id: str
) -> AsyncIterator[None]:
    """:func:`push_worker_metrics` for the life of a ``with`` block; the last export runs
    in a thread at its end (bounded by the exporter's 5 s timeout), off the event loop."""
    shutdown = push_worker_metrics(settings, stats, worker_id=worker_id)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutdown)
