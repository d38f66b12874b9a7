"""Exporting over OTLP/HTTP when SPECTRAL_OTLP_ENDPOINT is set (ADR 0029): the workers'
counters and the spans reach a real HTTP collector endpoint, decoded with the OTLP
protobuf messages."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from spectral_core import Settings
from spectral_core.metrics import WorkerStats
from spectral_core.metrics.otlp import push_worker_metrics

SRC = Path(__file__).resolve().parents[2] / "src"


class _Collector:
    """A stand-in OTLP/HTTP collector: records each POST (path, body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((self.path, body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    c.thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


def test_worker_counters_are_pushed_to_the_configured_collector(collector: _Collector) -> None:
    """With an endpoint, the worker's per-handler counters are exported periodically to
    <endpoint>/v1/metrics with the worker id as service.instance.id; without one nothing
    is started."""
    assert push_worker_metrics(Settings(), WorkerStats(), worker_id="w")() is None
    stats = WorkerStats()
    stats.handler("workers.platform.record").handled = 5
    stats.handler("workers.platform.record").dead = 1
    stats.claims.observe(5)
    shutdown = push_worker_metrics(
        Settings(otlp_endpoint=collector.url),
        stats,
        worker_id="worker-1",
        export_interval_s=0.2,
    )
    try:
        deadline = time.monotonic() + 20
        while not collector.posts:
            assert time.monotonic() < deadline, "nothing exported"
            time.sleep(0.05)
    finally:
        shutdown()
    path, body = collector.posts[0]
    assert path == "/v1/metrics"
    request = ExportMetricsServiceRequest.FromString(body)
    [resource] = request.resource_metrics
    attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert attrs["service.name"] == "spectral-workers"
    assert attrs["service.instance.id"] == "worker-1"
    points = {
        (m.name, tuple((a.key, a.value.string_value) for a in p.attributes)): p.as_int
        or p.as_double
        for scope in resource.scope_metrics
        for m in scope.metrics
        for p in m.sum.data_points
    }
    handler = (("handler", "workers.platform.record"),)
    assert points[("spectral.worker.events.handled", handler)] == 5
    assert points[("spectral.worker.events.dead", handler)] == 1
    assert points[("spectral.worker.claimed.rows", ())] == 5


def test_spans_are_exported_to_the_configured_collector(collector: _Collector) -> None:
    """In a fresh process (the global tracer provider is set once per process),
    tracing.configure installs the SDK for SPECTRAL_OTLP_ENDPOINT: a span made through
    spectral's tracer reaches <endpoint>/v1/traces when the process shuts tracing down."""
    script = (
        "from spectral_core import Settings, tracing\n"
        f"stop = tracing.configure(Settings(otlp_endpoint={collector.url!r}), "
        "service_name='spectral-test')\n"
        "t = tracing.tracer()\n"
        "assert t is not None\n"
        "with t.start_as_current_span('probe'):\n"
        "    assert tracing.current_traceparent() is not None\n"
        "stop()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    [(path, body)] = [p for p in collector.posts if p[0] == "/v1/traces"]
    request = ExportTraceServiceRequest.FromString(body)
    names = [s.name for r in request.resource_spans for sc in r.scope_spans for s in sc.spans]
    assert names == ["probe"]
