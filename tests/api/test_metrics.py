"""``GET /metrics`` on a real spectral-api (issue 17.1, ADR 0029): operator auth, the
Prometheus text format parsed with prometheus_client's own parser, decision outcomes,
latency, sandbox usage, 429s by limit kind, module cache counters, the queue gauges read
from PostgreSQL and the workers' snapshots; and no tenant string as a label."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb

from spectral_core import tracing
from spectral_core.metrics import WorkerStats
from spectral_core.modules import ModuleKey
from spectral_core.ratelimit import TenantLimits

from ..docs.test_metrics_docs import documented
from .conftest import KEY, Api, decide_body

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), parsed by prometheus_client."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(api: Api, token: str | None) -> httpx.Response:
    async with api.client(token) as client:
        return await client.get("/metrics")


async def test_metrics_needs_an_operator_key(api: Api) -> None:
    """No key: 401; a tenant's key: 403; an operator's key: 200 in the Prometheus text
    format (the body is what prometheus_client renders)."""
    assert (await scrape(api, None)).status_code == 401
    assert (await scrape(api, await api.tenant("acme"))).status_code == 403
    resp = await scrape(api, await api.tenant("ops", operator=True))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=")
    assert ("spectral_queue_stats_up", ()) in samples(resp.text)


async def test_metrics_without_auth_when_configured(api_factory: Any) -> None:
    """SPECTRAL_METRICS_AUTH=none serves /metrics without a key (a private scrape port)."""
    api = api_factory(metrics_auth="none")
    resp = await scrape(api, None)
    assert resp.status_code == 200
    assert samples(resp.text)[("spectral_queue_stats_up", ())] == 1


async def test_decisions_latency_sandbox_limits_and_cache_are_counted(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """Three good decisions, a missing module and a malformed body are counted by outcome
    (ok, module-not-found, malformed-request) with one latency observation each; the
    sandbox fuel and wall time of the three; a tenant over its rate adds 429s of kind
    rate; the module cache shows one load and the later hits.  No label carries a tenant
    or module name."""
    await api.module("decision", KEY)
    for _ in range(3):
        assert (await acme.post("/api/decide", json=decide_body())).status_code == 200
    missing = ModuleKey(org="acme", domain="credit", action="nope", world_model_version="v1")
    assert (await acme.post("/api/decide", json=decide_body(missing))).status_code == 404
    bad = await acme.post(
        "/api/decide", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    limited = api.client(
        await api.tenant("noisyco", limits=TenantLimits(rate=1, burst=1, concurrency=64))
    )
    async with limited:
        codes = [
            (await limited.post("/api/decide", json=decide_body())).status_code for _ in range(4)
        ]
    assert codes.count(429) >= 2
    text = (await scrape(api, await api.tenant("ops", operator=True))).text
    got = samples(text)
    assert got[("spectral_decisions_total", (("outcome", "ok"),))] == 3
    assert got[("spectral_decisions_total", (("outcome", "module-not-found"),))] >= 1
    assert got[("spectral_decisions_total", (("outcome", "malformed-request"),))] == 1
    assert got[("spectral_decisions_total", (("outcome", "rate-limited"),))] == codes.count(429)
    assert got[("spectral_rate_limited_total", (("kind", "rate"),))] == codes.count(429)
    total = sum(v for (n, _), v in got.items() if n == "spectral_decisions_total")
    assert got[("spectral_decide_duration_seconds_count", ())] == total
    assert got[("spectral_sandbox_fuel_consumed_count", ())] == 3
    assert got[("spectral_sandbox_fuel_consumed_sum", ())] > 0
    assert got[("spectral_sandbox_wall_seconds_count", ())] == 3
    assert got[("spectral_module_cache_loads_total", ())] == 1
    assert got[("spectral_module_cache_hits_total", ())] == 2
    for tenant_string in ("acme", "noisyco", "credit", "approve"):
        assert tenant_string not in text


def lab(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


async def test_queue_gauges_and_worker_snapshots_come_from_postgresql(api_factory: Any) -> None:
    """Rows and workers written straight into the database appear in the next scrape:
    outbox rows by generation and status with the oldest pending age, a stranded
    generation (live work, no worker) that stops being stranded when a worker appears, and
    that worker's counters and histograms from its snapshot in core.workers, under its id
    and generation."""
    api = api_factory(metrics_cache_s=0)
    g = str(api.settings.generation)
    api.sql(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, created_at) "
        "SELECT %s, 't.x', '{}', 'k' || i, now() - interval '30 seconds' "
        "FROM generate_series(1, 4) AS i",
        (api.settings.generation,),
    )
    token = await api.tenant("ops", operator=True)
    got = samples((await scrape(api, token)).text)
    assert got[("spectral_generation_stranded", lab(generation=g))] == 1
    assert got[("spectral_outbox_rows", lab(generation=g, status="pending"))] == 4
    assert got[("spectral_outbox_oldest_pending_age_seconds", lab(generation=g))] >= 29
    stats = WorkerStats()
    h = stats.handler("workers.platform.record")
    h.handled, h.failed, h.retried = 7, 2, 1
    for d in (0.002, 0.002, 0.3):
        h.duration.observe(d)
    stats.claims.observe(100)
    wid = str(uuid.uuid4())
    api.sql(
        "INSERT INTO core.workers (id, generation, state, host, pid, version, reconnects, "
        "metrics) VALUES (%s, %s, 'running', 'h', 1, 'v', 3, %s)",
        (wid, api.settings.generation, Jsonb(stats.snapshot())),
    )
    got = samples((await scrape(api, token)).text)
    assert got[("spectral_generation_stranded", lab(generation=g))] == 0
    assert got[("spectral_workers", lab(generation=g, state="running"))] == 1
    assert got[("spectral_workers", lab(generation=g, state="lost"))] == 0
    assert got[("spectral_worker_oldest_heartbeat_age_seconds", lab(generation=g))] < 60
    w = {"generation": g, "worker": wid}
    hl = {**w, "handler": "workers.platform.record"}
    assert got[("spectral_worker_reconnects_total", lab(**w))] == 3
    assert got[("spectral_worker_events_handled_total", lab(**hl))] == 7
    assert got[("spectral_worker_handler_failures_total", lab(**hl))] == 2
    assert got[("spectral_worker_events_retried_total", lab(**hl))] == 1
    assert got[("spectral_worker_events_dead_total", lab(**hl))] == 0
    assert got[("spectral_worker_handler_duration_seconds_count", lab(**hl))] == 3
    assert got[("spectral_worker_handler_duration_seconds_bucket", lab(**hl, le="0.0025"))] == 2
    assert got[("spectral_worker_handler_duration_seconds_bucket", lab(**hl, le="+Inf"))] == 3
    assert got[("spectral_worker_claim_batch_rows_bucket", lab(**w, le="100.0"))] == 1
    # the answering API process registered itself (ADR 0032); a lost peer is shown lost
    assert got[("spectral_api_processes", lab(generation=g, state="running"))] == 1
    api.sql(
        "INSERT INTO core.api_processes (id, generation, state, host, pid, version, last_seen) "
        "VALUES (%s, %s, 'running', 'h', 2, 'v', now() - interval '1 hour')",
        (str(uuid.uuid4()), api.settings.generation),
    )
    got = samples((await scrape(api, token)).text)
    assert got[("spectral_api_processes", lab(generation=g, state="lost"))] == 1
    assert got[("spectral_api_processes", lab(generation=g, state="running"))] == 1
    # every family served is documented in docs/reference/metrics.md
    served = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in text_string_to_metric_families((await scrape(api, token)).text)
        if f.name.startswith("spectral_")
    }
    assert served <= documented(), sorted(served - documented())


async def test_decide_is_a_server_span_with_the_sandbox_call_inside(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """With an SDK provider (the in-memory exporter), POST /api/decide is a SERVER span
    joined to the caller's traceparent, with its status code, and the sandbox call is a
    child span; /health is a span too; without the provider nothing is recorded."""
    await api.module("decision", KEY)
    assert (await acme.post("/api/decide", json=decide_body())).status_code == 200
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_provider(provider)
    try:
        caller = "0af7651916cd43dd8448eb211c80319c"
        resp = await acme.post(
            "/api/decide",
            json=decide_body(),
            headers={"traceparent": f"00-{caller}-b7ad6b7169203331-01"},
        )
        assert resp.status_code == 200
        assert (await acme.get("/health")).status_code == 200
        # the server ends a request's span after the response went out: wait for it
        deadline = time.monotonic() + 5
        while len(spans.get_finished_spans()) < 3 and time.monotonic() < deadline:
            await anyio.sleep(0.02)
    finally:
        tracing.use_provider(None)
        provider.shutdown()
    by_name = {s.name: s for s in spans.get_finished_spans()}
    server, sandbox = by_name["POST /api/decide"], by_name["sandbox.run"]
    assert server.kind == trace.SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == caller
    assert server.parent is not None and server.parent.span_id == 0xB7AD6B7169203331
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert sandbox.parent is not None and sandbox.parent.span_id == server.context.span_id
    assert "GET /health" in by_name
    assert len(spans.get_finished_spans()) == 3


async def test_a_sampled_out_decide_starts_no_sandbox_span(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """With the parent-based sampler the docs recommend (ADR 0044) and a caller whose
    traceparent says "not sampled", the request's span is not recorded and the sandbox
    call opens no span at all (the sampler is never asked for one: it would drop it);
    nothing is exported.  A sampled caller on the same provider still gets both spans."""
    await api.module("decision", KEY)
    offered: list[str] = []

    class Noting(ParentBased):
        def should_sample(
            self, parent_context: Any, trace_id: int, name: str, *a: Any, **k: Any
        ) -> Any:
            offered.append(name)
            return super().should_sample(parent_context, trace_id, name, *a, **k)

    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=Noting(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_provider(provider)
    try:
        caller = "0af7651916cd43dd8448eb211c80319c"
        resp = await acme.post(
            "/api/decide",
            json=decide_body(),
            headers={"traceparent": f"00-{caller}-b7ad6b7169203331-00"},
        )
        assert resp.status_code == 200
        await anyio.sleep(0.2)
        assert offered == ["POST /api/decide"]
        assert spans.get_finished_spans() == ()
        resp = await acme.post(
            "/api/decide",
            json=decide_body(),
            headers={"traceparent": f"00-{caller}-b7ad6b7169203331-01"},
        )
        assert resp.status_code == 200
        deadline = time.monotonic() + 5
        while len(spans.get_finished_spans()) < 2 and time.monotonic() < deadline:
            await anyio.sleep(0.02)
    finally:
        tracing.use_provider(None)
        provider.shutdown()
    assert sorted(s.name for s in spans.get_finished_spans()) == ["POST /api/decide", "sandbox.run"]
