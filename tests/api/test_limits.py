"""Per-tenant rate limits and concurrency caps under parallel load."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from spectral_core.modules import ModuleKey
from spectral_core.ratelimit import TenantLimits

from .conftest import Api, decide_body
from .test_decide import problem

pytestmark = pytest.mark.anyio


def key(org: str) -> ModuleKey:
    return ModuleKey(org=org, domain="credit", action="approve", world_model_version="v1")


async def test_many_tenants_in_parallel_all_served(api: Api) -> None:
    """Many decisions in parallel from several tenants all succeed with the right
    tenant's module (no cross-talk)."""
    orgs = ["a1", "b2", "c3", "d4"]
    clients = {}
    for org in orgs:
        await api.module("echo", key(org))
        clients[org] = api.client(await api.tenant(org))
    results: list[tuple[str, int, object]] = []

    async def call(org: str, i: int) -> None:
        resp = await clients[org].post(
            "/api/decide", json=decide_body(key(org), inp={"org": org, "i": i})
        )
        results.append((org, resp.status_code, resp.json().get("decision")))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            for org in orgs:
                tg.start_soon(call, org, i)
    for c in clients.values():
        await c.aclose()
    assert len(results) == 200
    assert all(status == 200 for _, status, _ in results)
    assert all(decision["org"] == org for org, _, decision in results)  # type: ignore[index]


async def test_flooding_tenant_is_limited_while_another_is_served(api: Api) -> None:
    """A tenant over its rate gets 429 with Retry-After and RateLimit headers, while
    another tenant sending at the same time is served every time."""
    await api.module("decision", key("noisy"))
    await api.module("decision", key("quiet"))
    noisy = api.client(
        await api.tenant("noisy", limits=TenantLimits(rate=5, burst=5, concurrency=64))
    )
    quiet = api.client(
        await api.tenant("quiet", limits=TenantLimits(rate=100, burst=100, concurrency=64))
    )
    noisy_codes: list[int] = []
    quiet_codes: list[int] = []
    limited: list[httpx.Response] = []

    async def flood() -> None:
        resp = await noisy.post("/api/decide", json=decide_body(key("noisy")))
        noisy_codes.append(resp.status_code)
        if resp.status_code == 429:
            limited.append(resp)

    async def calm() -> None:
        resp = await quiet.post("/api/decide", json=decide_body(key("quiet")))
        quiet_codes.append(resp.status_code)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(60):
            tg.start_soon(flood)
            if i % 3 == 0:
                tg.start_soon(calm)
    elapsed = time.monotonic() - started
    await noisy.aclose()
    await quiet.aclose()
    assert quiet_codes == [200] * 20
    # GCRA: at most burst + rate * elapsed admitted (+1 for rounding)
    admitted = noisy_codes.count(200)
    assert 5 <= admitted <= 5 + 5 * elapsed + 1
    assert noisy_codes.count(429) == 60 - admitted
    resp = limited[0]
    body = problem(resp, 429)
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["ratelimit-policy"].startswith('"rate";q=5')
    assert resp.headers["ratelimit"].startswith('"rate";r=0')
    assert body["retry_after"] > 0


async def test_concurrency_cap_refuses_excess_in_flight(api: Api) -> None:
    """With a concurrency cap of 1, a second request while a slow one is in flight is
    refused with 429 (policy concurrency); the slot is released afterwards."""
    slow = key("slowco")
    await api.module("infinite_loop", slow)  # runs until its 100 ms deadline / fuel
    token = await api.tenant("slowco", limits=TenantLimits(rate=1000, burst=1000, concurrency=1))
    codes: list[int] = []
    policies: list[str] = []
    async with api.client(token) as client:

        async def call() -> None:
            resp = await client.post("/api/decide", json=decide_body(slow))
            codes.append(resp.status_code)
            if resp.status_code == 429:
                policies.append(resp.headers["ratelimit-policy"])

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(call)
        assert 429 in codes and 422 in codes
        assert all(p.startswith('"concurrency";q=1') for p in policies)
        # after the burst, the slot is free again
        assert (await client.post("/api/decide", json=decide_body(slow))).status_code == 422
