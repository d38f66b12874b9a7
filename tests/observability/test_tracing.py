"""Traces (issue 17.2, ADR 0029): one trace from an HTTP request through publish, the
outbox handler and the World Agent turn, recorded by the OpenTelemetry SDK's in-memory
exporter; and nothing at all while no SDK is configured."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
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
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from spectral_api.observe import ApiMetrics, ObserveMiddleware
from spectral_core import (
    Consumer,
    ConsumerConfig,
    Event,
    HandlerRegistry,
    Publisher,
    Settings,
    tracing,
)
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


class _DropAll(Sampler):
    """A sampler that records nothing (as ``OTEL_TRACES_SAMPLER=always_off`` or a ratio's
    sampled-out share) and notes what each span offered it."""

    def __init__(self) -> None:
        self.offered: list[tuple[str, Any, int | None]] = []

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        self.offered.append((name, attributes, parent.trace_id if parent.is_valid else None))
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "DropAll"


async def test_a_sampled_out_handler_span_builds_no_attributes_and_logs_no_trace_id(
    settings: Settings, db: Database, conn: psycopg.Connection[Any], db_url: str
) -> None:
    """With a sampler that drops everything (ADR 0043): the rows published inside a
    sampled-out span carry its traceparent with the not-sampled flag (the decision travels
    on); the consumer's handler spans are offered to the sampler with that parent and with
    no attributes (they are built only for a recorded span), the exporter receives
    nothing, and the handler's log lines carry no trace_id (it names no trace)."""
    sampler = _DropAll()
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_provider(provider)
    out = io.StringIO()
    buffer = io.BytesIO()
    out.buffer = buffer  # type: ignore[misc]
    generation = settings.generation or 0
    handled: list[int] = []
    try:
        configure_logging(fmt="json", level="info", stream=out)
        log = structlog.get_logger("test.sampled_out")
        tracer = tracing.tracer()
        assert tracer is not None
        pub = Publisher(generation)
        with tracer.start_as_current_span("request") as request:
            assert not request.is_recording()
            parented = [pub.publish(conn, "t.sampled", {"i": i}) for i in range(3)]
        pub.publish(conn, "t.sampled", {"i": 3})
        request_trace = request.get_span_context().trace_id
        stored = rows(
            db_url,
            "SELECT trace_parent FROM core.outbox WHERE id = ANY(%s) ORDER BY id",
            (parented,),
        )
        prefix = f"00-{request_trace:032x}-{request.get_span_context().span_id:016x}-"
        assert [r[0][: len(prefix)] for r in stored] == [prefix] * 3
        assert all(int(r[0][len(prefix) :], 16) & 0x01 == 0 for r in stored)  # not sampled

        async def handler(event: Event, c: Any) -> None:
            log.info("handled", event_id=event.id)
            handled.append(event.id)

        registry = HandlerRegistry()
        registry.register("test.sampled_out", "t.sampled", handler)
        consumer = Consumer(
            db,
            generation=generation,
            worker_id=uuid.uuid4(),
            registry=registry,
            config=ConsumerConfig(batch_size=10, lanes=1, poll_interval_s=0.05),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            await wait_for(lambda: len(handled) == 4)
            consumer.stop()
        lines = [msgspec.json.decode(line) for line in buffer.getvalue().splitlines()]
        mine = [line for line in lines if line.get("event") == "handled"]
        assert len(mine) == 4
        assert all("trace_id" not in line and "span_id" not in line for line in mine), mine
    finally:
        structlog.reset_defaults()
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_spectral", False)]:
            root.removeHandler(h)
        tracing.use_provider(None)
        provider.shutdown()
    offered = [o for o in sampler.offered if o[0] == "handle test.sampled_out"]
    assert len(offered) == 4
    assert all(not attributes for _, attributes, _ in offered), offered
    assert sorted(p is not None for _, _, p in offered) == [False, True, True, True]
    assert {p for _, _, p in offered if p is not None} == {request_trace}
    assert spans.get_finished_spans() == ()


def test_configure_takes_the_sampler_from_the_otel_environment_variables() -> None:
    """``configure`` (SPECTRAL_OTLP_ENDPOINT) installs the sampler that the standard
    OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG name (the production recommendation of
    docs/reference/metrics.md, ADR 0043), and refuses a ratio outside [0, 1] with a
    ConfigError naming the variable (the SDK would warn and record every trace).  In fresh
    processes: the global provider can be set only once per process."""
    script = """
from opentelemetry import trace
from spectral_core import Settings, tracing
from spectral_core.errors import ConfigError
try:
    tracing.configure(Settings(otlp_endpoint="http://127.0.0.1:9/"), service_name="t")
except ConfigError as exc:
    print("refused:", exc)
else:
    print("sampler:", trace.get_tracer_provider().sampler.get_description())
"""
    cases = {
        "0.25": "sampler: ParentBased{root:TraceIdRatioBased{0.25}",
        "2": "refused: OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1",
        "one-in-ten": "refused: OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1",
    }
    for arg, expected in cases.items():
        env = {
            **os.environ,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": arg,
        }
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
        )
        last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        assert last.startswith(expected), (arg, out.stdout, out.stderr[-2000:])
