"""The API's process metrics and request spans (ADR 0029), as one pure ASGI middleware.

:class:`ApiMetrics` holds the API's instruments in a registry of its own (one per app, so
several apps in one process never mix counters).  :class:`ObserveMiddleware` sits outermost
and, per request, only looks at what it sends: for ``/api/decide`` the outcome (``ok`` or
the problem type of a 4xx/5xx answer) and the latency; for any ``/api/*`` answer 429 the
limit that refused it (the ``RateLimit`` header's policy).  Neither tenant nor key ever
becomes a label.  With tracing on it also opens the request's server span, parented on an
incoming ``traceparent``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spectral_core.metrics.exposition import cumulative_buckets
from spectral_core.metrics.worker import Histogram as MiniHistogram
from spectral_core.modules import ModuleCache
from spectral_core.tracing import SpanKind, context_from_headers, tracer

__all__ = ["ApiMetrics", "ObserveMiddleware"]

DECIDE_PATH: Final = "/api/decide"
#: decide latency, seconds
DECIDE_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
#: sandbox fuel per call (the default budget is 10 million)
FUEL_BUCKETS: Final = (1e3, 1e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7, 1e8, 1e9)
#: sandbox wall time per call, seconds (the default deadline is 100 ms)
WALL_BUCKETS_S: Final = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
_SLUG: Final = re.compile(rb'"type":"urn:spectral:problem:([a-z-]{1,40})"')
_POLICY: Final = re.compile(rb'^"([a-z]{1,20})"')
#: distinct outcome labels kept; beyond it "other" (the problem types are our own, but a
#: bound makes the label set bounded by construction)
_MAX_OUTCOMES: Final = 64
_LIMIT_KINDS: Final = frozenset({"rate", "concurrency"})
_STATUS_SLUGS: Final = {404: "not-found", 405: "method-not-allowed"}


class _CacheCollector(Collector):
    """The module cache's hit and load counters, read at scrape time (no work per request)."""

    def __init__(self, cache: ModuleCache) -> None:
        self.cache = cache

    def collect(self) -> list[Metric]:
        hits = CounterMetricFamily(
            "spectral_module_cache_hits",
            "Decisions whose compiled module was already in the module cache",
            value=self.cache.hits,
        )
        loads = CounterMetricFamily(
            "spectral_module_cache_loads",
            "Modules read from the store, verified and compiled into the module cache",
            value=self.cache.loads,
        )
        return [hits, loads]


class ApiMetrics:
    """The API's instruments, in a registry of their own.

    The counts and histograms are plain integers and
    :class:`~spectral_core.metrics.worker.Histogram` buckets rendered by a collector at scrape
    time, rather than ``prometheus_client``'s ``Counter`` / ``Histogram``, which take a lock
    per increment (three histogram observations per decision; figures in
    docs/performance.md).  Every update and every scrape runs on the event loop's thread, so
    nothing needs a lock.
    """

    def __init__(self, cache: ModuleCache | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        if cache is not None:
            self.registry.register(_CacheCollector(cache))
        #: decide answers by outcome (at most _MAX_OUTCOMES distinct, then "other")
        self.decisions: dict[str, int] = {"ok": 0}
        self.decide_seconds = MiniHistogram(DECIDE_BUCKETS_S)
        self.fuel = MiniHistogram(FUEL_BUCKETS)
        self.wall_seconds = MiniHistogram(WALL_BUCKETS_S)
        #: 429s by limit kind (rate / concurrency / other)
        self.limited: dict[str, int] = {}
        self.registry.register(_ApiCollector(self))

    def decided(self, outcome: str, seconds: float) -> None:
        decisions = self.decisions
        if outcome in decisions:
            decisions[outcome] += 1
        elif len(decisions) < _MAX_OUTCOMES:
            decisions[outcome] = 1
        else:
            decisions["other"] = decisions.get("other", 0) + 1
        self.decide_seconds.observe(seconds)

    def rate_limited(self, kind: str) -> None:
        self.limited[kind] = self.limited.get(kind, 0) + 1

    def sandbox_usage(self, fuel: int, wall_time_us: int) -> None:
        self.fuel.observe(fuel)
        self.wall_seconds.observe(wall_time_us / 1e6)


class _ApiCollector(Collector):
    """Renders :class:`ApiMetrics` as Prometheus families at scrape time."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        decisions = CounterMetricFamily(
            "spectral_decisions",
            "POST /api/decide answers by outcome: ok, or the problem type of the refusal "
            "(e.g. rate-limited, module-not-found, budget-exceeded)",
            labels=["outcome"],
        )
        for outcome, n in sorted(m.decisions.items()):
            decisions.add_metric([outcome], n)
        limited = CounterMetricFamily(
            "spectral_rate_limited",
            "/api/* requests refused with 429, by the limit that refused them (rate, concurrency)",
            labels=["kind"],
        )
        for kind, n in sorted(m.limited.items()):
            limited.add_metric([kind], n)
        yield decisions
        yield limited
        for name, doc, h in (
            (
                "spectral_decide_duration_seconds",
                "POST /api/decide latency, from the request's arrival to its last byte sent",
                m.decide_seconds,
            ),
            (
                "spectral_sandbox_fuel_consumed",
                "Sandbox fuel spent by one decision (instantiation included)",
                m.fuel,
            ),
            (
                "spectral_sandbox_wall_seconds",
                "Sandbox wall time of one decision (instantiation included)",
                m.wall_seconds,
            ),
        ):
            family = HistogramMetricFamily(name, doc)
            family.add_metric([], cumulative_buckets(h.bounds, h.counts), h.sum)
            yield family


def _header(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return bytes(value)
    return None


class ObserveMiddleware:
    """Decision outcomes and latency, 429s by limit kind, and (tracing on) the request's
    server span.

    Args:
        app: The wrapped application.
        metrics: Where to count.
    """

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        spans = tracer()
        if spans is None:
            if scope["path"].startswith("/api/"):
                await self._observe(scope, receive, send)
            else:  # /health, /metrics: nothing to count
                await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in (b"traceparent", b"tracestate")
        }
        path = scope["path"]
        method = scope["method"]
        name = f"{method} {path}" if path in (DECIDE_PATH, "/health", "/metrics") else method
        with spans.start_as_current_span(
            name,
            context=context_from_headers(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            status = await self._observe(scope, receive, send)
            span.set_attribute("http.response.status_code", status)

    async def _observe(self, scope: Scope, receive: Receive, send: Send) -> int:
        path: str = scope["path"]
        if not path.startswith("/api/"):
            status_only = 500

            async def note(message: Message) -> None:
                nonlocal status_only
                if message["type"] == "http.response.start":
                    status_only = message["status"]
                await send(message)

            await self.app(scope, receive, note)
            return status_only
        decide = path == DECIDE_PATH
        started = time.perf_counter()
        status = 500
        outcome: str | None = None

        async def watch(message: Message) -> None:
            nonlocal status, outcome
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 429:
                    value = _header(message.get("headers", ()), b"ratelimit") or b""
                    policy = _POLICY.match(value)
                    kind = policy.group(1).decode() if policy else "other"
                    if kind not in _LIMIT_KINDS:
                        kind = "other"
                    self.metrics.rate_limited(kind)
            elif outcome is None and status >= 400 and decide:
                found = _SLUG.search(message.get("body", b""))
                if found:
                    outcome = found.group(1).decode()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if decide:
                if status < 400:
                    outcome = "ok"
                elif outcome is None:
                    outcome = _STATUS_SLUGS.get(status, f"http-{status}")
                self.metrics.decided(outcome, time.perf_counter() - started)
        return status
