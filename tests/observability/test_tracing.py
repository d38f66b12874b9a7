"""Traces (issue 17.2, ADR 0029): one trace from an HTTP request through publish, the
outbox handler and the World Agent turn, recorded by the OpenTelemetry SDK's in-memory
exporter; and nothing at all while no SDK is configured."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import structlog
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from spectral_api.observe import ApiMetrics, ObserveMiddleware
from spectral_core import Publisher, Settings, tracing
from spectral_core.db import Database
from spectral_core.errors import ConfigError
from spectral_core.logging import configure_logging
from spectral_core.testing import write_script

from ..agent.helpers import agent_settings, rows, running_agent, wait_for
from ..api.conftest import free_port

pytestmark = pytest.mark.anyio

ONE_TOOL_THEN_DECIDE = [
    {"tool_calls": [{"name": "write_fact", "args": {"key": "price", "value": 10}}]},
    {"content": {"action": "hold"}},
]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider with the in-memory exporter, for spectral's spans only
    (the global provider can be set once per process; ``use_provider`` is undone)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_provider(provider)
    try:
        yield spans
    finally:
        tracing.use_provider(None)
        provider.shutdown()


class _Server:
    """A service that embeds spectral_core: a Starlette app behind spectral-api's
    ObserveMiddleware whose route publishes a world.observe event, served by uvicorn."""

    def __init__(self, db_url: str, generation: int) -> None:
        self.port = free_port()
        publisher = Publisher(generation)

        async def observe(request: Request) -> JSONResponse:
            body = await request.json()
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                event_id = await publisher.publish_async(
                    conn,
                    "world.observe",
                    {"org": "acme", "domain": "alpha", "observation": body},
                    idempotency_key="traced-1",
                )
                await conn.commit()
            return JSONResponse({"id": event_id})

        app = Starlette(
            routes=[Route("/observe", observe, methods=["POST"])],
            middleware=[Middleware(ObserveMiddleware, metrics=ApiMetrics())],
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_covers_request_publish_handler_and_agent_turn(
    exporter: InMemorySpanExporter,
    settings: Settings,
    db: Database,
    db_url: str,
    tmp_path: Path,
) -> None:
    """The request's server span is current when the route publishes, so the outbox row
    stores its traceparent; the consumer runs the observe handler in a child span of it;
    the handler stores its own traceparent on the turn, and the turn's span (with its
    model and tool call spans) is a child of the handler's: one trace end to end."""
    s = agent_settings(settings)
    script = write_script(tmp_path / "s.json", ONE_TOOL_THEN_DECIDE)
    with _Server(db_url, s.generation or 0) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            # an incoming W3C context: the server span joins the caller's trace
            caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
            r = await client.post(
                "/observe",
                json={"price": 10},
                headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
            )
            assert r.status_code == 200
    [(stored,)] = rows(
        db_url, "SELECT trace_parent FROM core.outbox WHERE id = %s", (r.json()["id"],)
    )
    assert stored is not None and stored.startswith(f"00-{caller_trace}-")
    async with running_agent(s, db, script):
        await wait_for(lambda: rows(db_url, "SELECT 1 FROM agent.turns WHERE status = 'done'"))
        await wait_for(lambda: any(sp.name == "agent.turn" for sp in exporter.get_finished_spans()))
    spans = exporter.get_finished_spans()
    server = _by_name(spans, "POST")
    handler = _by_name(spans, "handle workers.world_agent.observe")
    turn = _by_name(spans, "agent.turn")
    models = [sp for sp in spans if sp.name == "agent.model_call"]
    tool = _by_name(spans, "agent.tool_call write_fact")
    assert server.kind == trace.SpanKind.SERVER
    assert handler.kind == trace.SpanKind.CONSUMER
    assert stored == f"00-{caller_trace}-{server.context.span_id:016x}-01"
    assert _parent_of(handler) == server.context.span_id
    assert _parent_of(turn) == handler.context.span_id
    assert len(models) == 2 and {_parent_of(m) for m in models} == {turn.context.span_id}
    assert _parent_of(tool) == turn.context.span_id
    for sp in (server, handler, turn, tool, *models):
        assert f"{sp.context.trace_id:032x}" == caller_trace
    assert handler.attributes is not None
    assert handler.attributes["messaging.destination.name"] == "world.observe"
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200


async def test_without_an_sdk_nothing_is_traced_or_stored(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """No SDK configured (the default): spectral has no tracer, a publish stores no
    traceparent even inside an API span, and the handler path runs without spans."""
    assert tracing.tracer() is None
    tracer = trace.get_tracer("test")  # the API's no-op tracer
    with tracer.start_as_current_span("outer"):
        assert tracing.current_traceparent() is None
        event_id = Publisher(settings.generation or 0).publish(conn, "t.x", {})
    assert rows(db_url, "SELECT trace_parent FROM core.outbox WHERE id = %s", (event_id,)) == [
        (None,)
    ]


def test_log_lines_carry_the_trace_id_of_the_active_span(exporter: InMemorySpanExporter) -> None:
    """The JSON log lines of the entrypoints' logging carry trace_id and span_id while a
    span is active, and neither outside one."""
    out = io.StringIO()
    buffer = io.BytesIO()
    out.buffer = buffer  # type: ignore[misc]
    try:
        configure_logging(fmt="json", level="info", stream=out)
        log = structlog.get_logger("test.trace")
        spans = tracing.tracer()
        assert spans is not None
        with spans.start_as_current_span("work") as span:
            log.info("inside")
        log.info("outside")
        lines = [msgspec.json.decode(line) for line in buffer.getvalue().splitlines()]
        inside, outside = lines
        assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
        assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
        assert "trace_id" not in outside and "span_id" not in outside
    finally:
        structlog.reset_defaults()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_spectral", False)]:
            root.removeHandler(handler)


def test_a_malformed_otlp_endpoint_is_a_config_error_naming_the_setting() -> None:
    """SPECTRAL_OTLP_ENDPOINT must be an http(s) URL: anything else is refused when the
    settings are built (exit 3 at boot), naming the setting and not echoing the value."""
    with pytest.raises(ConfigError, match="SPECTRAL_OTLP_ENDPOINT") as info:
        Settings(otlp_endpoint="tracing-host:9999")
    assert "tracing-host" not in str(info.value)
    assert Settings(otlp_endpoint="http://collector:4318").otlp_endpoint


def test_a_global_provider_installed_after_start_up_is_used() -> None:
    """``tracer()`` keeps its "no SDK" answer for ``RECHECK_S`` (the lookup reads the
    environment on every call: it ran twice per decision), so a global provider that an
    embedding service installs after start-up is used within that time; ``configure``
    (``SPECTRAL_OTLP_ENDPOINT``) applies at once.  In fresh processes: the global provider
    can be set only once per process."""
    script = """
import time
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from spectral_core import Settings, tracing
assert tracing.tracer() is None
if MODE == "global":
    trace.set_tracer_provider(TracerProvider())
    deadline = time.monotonic() + tracing.RECHECK_S + 1
    while tracing.tracer() is None:
        assert time.monotonic() < deadline, "the global provider was never used"
        time.sleep(0.01)
else:
    tracing.configure(Settings(otlp_endpoint="http://127.0.0.1:9/"), service_name="t")
    assert tracing.tracer() is not None
print("ok")
"""
    for mode in ("global", "configure"):
        out = subprocess.run(
            [sys.executable, "-c", f"MODE = {mode!r}\n{script}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.strip().endswith("ok"), (mode, out.stderr[-2000:])
