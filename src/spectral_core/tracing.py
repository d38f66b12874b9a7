"""Traces with OpenTelemetry (ADR 0029): a no-op unless an SDK is configured.

Only ``opentelemetry-api`` is a dependency of ``spectral_core``.  :func:`tracer` returns
``None`` while no SDK tracer provider is installed, and every instrumented path checks that
once (per request, per batch, per turn) and then runs exactly the code it ran before, so
tracing costs nothing measurable when it is off.  With a provider installed (by
:func:`configure` from ``SPECTRAL_OTLP_ENDPOINT``, by the embedding service, or by a test
through :func:`use_provider`):

- :func:`current_traceparent` gives the W3C ``traceparent`` of the active span, which
  ``publish`` stores in the outbox row (``core.outbox.trace_parent``);
- :func:`context_from` turns a stored ``traceparent`` back into a parent context, so a
  handler's span is a child of the publisher's span (one trace from an HTTP request to the
  handler and on to the World Agent turn it starts).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .errors import ConfigError
from .settings import Settings, package_version

__all__ = [
    "SpanKind",
    "Tracer",
    "add_trace_id",
    "configure",
    "context_from",
    "context_from_headers",
    "current_traceparent",
    "handler_span",
    "leaf_tracer",
    "maybe_span",
    "tracer",
    "use_provider",
]

log = structlog.get_logger("spectral.tracing")

_propagator = TraceContextTextMapPropagator()
_NOOP_PROVIDERS = (ProxyTracerProvider, NoOpTracerProvider)
#: a provider set by :func:`use_provider` (tests, embedding services): wins over the global
_override: TracerProvider | None = None
_cached: tuple[TracerProvider, Tracer] | None = None
#: while no provider is installed, how long :func:`tracer` keeps answering None before it
#: looks again (seconds)
RECHECK_S = 1.0
_none_until = -math.inf


def use_provider(provider: TracerProvider | None) -> None:
    """Use ``provider`` for spectral's spans instead of the global one (None: back to the
    global provider), from the next :func:`tracer` call on.  Tests use it with the SDK's
    in-memory exporter, since the global provider can be set only once per process."""
    global _override, _cached, _none_until
    _override = provider
    _cached = None
    _none_until = -math.inf


def tracer() -> Tracer | None:
    """spectral's tracer, or None when no SDK is configured (tracing is off).

    The answer is kept: a provider found once is used until :func:`use_provider` changes
    it (the global provider can be set only once per process), and "none" is looked up
    again after :data:`RECHECK_S` (``get_tracer_provider`` reads the environment while no
    provider is set: microseconds, on every request), so a global provider installed by
    an embedding service after start-up applies within that time.
    """
    global _cached, _none_until
    cached = _cached
    if cached is not None:
        return cached[1]
    now = time.monotonic()
    if now < _none_until:
        return None
    provider = _override or trace.get_tracer_provider()
    if isinstance(provider, _NOOP_PROVIDERS):
        _none_until = now + RECHECK_S
        return None
    found = provider.get_tracer("spectral", package_version())
    _cached = (provider, found)
    return found


def leaf_tracer() -> Tracer | None:
    """spectral's tracer for a leaf span (one that publishes nothing under it, such as the
    sandbox call), or None when tracing is off or the current span is not recorded: a
    parent-based sampler would drop the leaf too, so it is not started at all (ADR 0044)."""
    spans = tracer()
    if spans is None or not trace.get_current_span().is_recording():
        return None
    return spans


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active span; None when there is none (or it is not
    valid: no SDK)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from(traceparent: str | None) -> Context | None:
    """The parent context a stored ``traceparent`` names (None: start a new trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """The parent context of an incoming request's ``traceparent`` / ``tracestate``."""
    return _propagator.extract(headers)


def handler_span(spans: Tracer, handler: str, event: Any) -> AbstractContextManager[Span]:
    """The span of one handler call: a child of the span that published the event (its
    stored ``traceparent``), or the root of a new trace when none was stored.

    The span is made current either way, so a row the handler publishes carries the
    sampling decision on (W3C ``traceparent`` flags); its attributes are built only when
    the sampler recorded it (ADR 0043: a sampled-out span costs its creation and nothing
    more)."""
    span = spans.start_span(
        f"handle {handler}", context=context_from(event.trace_parent), kind=SpanKind.CONSUMER
    )
    if span.is_recording():
        span.set_attributes(
            {
                "messaging.system": "spectral.outbox",
                "messaging.operation.type": "process",
                "messaging.destination.name": event.topic,
                "messaging.message.id": str(event.id),
                "spectral.handler": handler,
                "spectral.generation": event.generation,
                "spectral.attempt": event.attempts,
            }
        )
    return trace.use_span(span, end_on_exit=True)


def maybe_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span named ``name`` made current for the ``with`` block, or nothing when tracing
    is off (for paths that are not per-event: a World Agent turn, a model or tool call)."""
    spans = tracer()
    if spans is None:
        return nullcontext()
    return spans.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def add_trace_id(logger: Any, name: str, event_dict: Any) -> Any:
    """structlog processor: ``trace_id`` (and ``span_id``) of the active span, if it is
    recorded (a sampled-out span's id names no trace the collector will ever have)."""
    span = trace.get_current_span()
    if span.is_recording():
        ctx = span.get_span_context()
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


def _check_sampler_arg(environ: Mapping[str, str]) -> None:
    """Refuse a ratio sampler's ``OTEL_TRACES_SAMPLER_ARG`` that is not a number in [0, 1]."""
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG")
    if name not in _RATIO_SAMPLERS or arg is None:
        return
    try:
        ratio = float(arg)
    except ValueError:
        ratio = math.nan
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1 for {name}",
            field="OTEL_TRACES_SAMPLER_ARG",
        )


def configure(settings: Settings, *, service_name: str) -> Callable[[], None]:
    """Install the SDK with an OTLP/HTTP exporter when ``SPECTRAL_OTLP_ENDPOINT`` is set;
    return the shutdown function (flushes the spans still queued).  Without an endpoint
    nothing is installed and tracing stays a no-op.

    The SDK's own environment variables apply (ADR 0043): the sampler from
    ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default ``parentbased_always_on``:
    every trace; production: ``parentbased_traceidratio``) and the batch processor's
    ``OTEL_BSP_*`` sizes.

    Raises:
        ConfigError: an endpoint is set but the ``otel`` extra is not installed, or a
            ratio sampler's ``OTEL_TRACES_SAMPLER_ARG`` is not a number in [0, 1] (the SDK
            would warn and record every trace).
    """
    if not settings.otlp_endpoint:
        return lambda: None
    _check_sampler_arg(os.environ)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "SPECTRAL_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed: "
            "install spectral[otel]",
            field="otlp_endpoint",
        ) from None
    resource = Resource.create(
        {
            "service.name": settings.otlp_service_name or service_name,
            "service.version": settings.running_version,
        }
    )
    provider = SdkTracerProvider(resource=resource)
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    use_provider(_override)  # tracer() looks again now, not after RECHECK_S
    log.info("tracing.configured", service=service_name, sampler=provider.sampler.get_description())
    return provider.shutdown
