"""POST /api/decide end to end: decisions, client errors and hostile modules."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from spectral_core.modules import ModuleKey

from .conftest import KEY, Api, decide_body, wasm

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
#: the Content-Type of a raw (``content=``) JSON body
JSON = {"content-type": "application/json"}


def problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


async def assert_healthy(api: Api, client: httpx.AsyncClient) -> None:
    """The server still answers: a good decision and /health."""
    resp = await client.post("/api/decide", json=decide_body())
    assert resp.status_code == 200, resp.text
    assert resp.json()["decision"] == {"decision": "approve"}
    assert (await client.get("/health")).status_code == 200


async def test_decide_runs_the_pinned_module(api: Api, acme: httpx.AsyncClient) -> None:
    """An approved module decides from the input; the response carries hash and usage."""
    h, _ = await api.module("decision", KEY)
    resp = await acme.post("/api/decide", json=decide_body(inp={"risk": "high"}))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["decision"] == {"decision": "deny"}
    assert body["content_hash"] == h
    assert body["usage"]["fuel"] > 0 and body["usage"]["memory_bytes"] == 65536
    assert body["usage"]["wall_time_us"] >= 0
    assert "ratelimit" in resp.headers and "ratelimit-policy" in resp.headers
    # org in the body is accepted when it is the caller's own
    resp = await acme.post("/api/decide", json=decide_body(org="acme"))
    assert resp.json()["decision"] == {"decision": "approve"}


async def test_client_errors_are_problems_never_500(api: Api, acme: httpx.AsyncClient) -> None:
    """Malformed JSON 400, schema violations 422 naming the field, oversize 413, unknown
    module 404, unknown route 404, wrong method 405; all problem+json."""
    await api.module("decision", KEY)
    problem(await acme.post("/api/decide", content=b"{not json", headers=JSON), 400)
    problem(await acme.post("/api/decide", content=b"", headers=JSON), 400)
    body = problem(await acme.post("/api/decide", json={"domain": "credit"}), 422)
    assert body["field"] in {"action", "world_model_version", "input", "$"}
    body = problem(await acme.post("/api/decide", json=decide_body(inp=[1, 2])), 422)  # type: ignore[arg-type]
    assert body["field"] == "input"
    body = problem(await acme.post("/api/decide", json={**decide_body(), "extra": 1}), 422)
    body = problem(
        await acme.post(
            "/api/decide",
            json=decide_body(
                KeyModuleKey := ModuleKey(
                    org="acme", domain="has space", action="a", world_model_version="v"
                )
            ),
        ),
        422,
    )
    assert body["field"] == "domain" and KeyModuleKey
    big = b'{"input": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    problem(await acme.post("/api/decide", content=big, headers=JSON), 413)

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"x" * 65536

    problem(await acme.post("/api/decide", content=chunks(), headers=JSON), 413)
    problem(
        await acme.post(
            "/api/decide",
            json=decide_body(
                ModuleKey(org="acme", domain="nope", action="a", world_model_version="v1")
            ),
        ),
        404,
    )
    problem(await acme.get("/api/decide"), 405)
    problem(await acme.get("/api/nothing-here"), 404)
    problem(await acme.get("/version"), 404)
    deep = (
        b'{"domain":"credit","action":"approve","world_model_version":"v1","input":'
        + b'{"a":' * 5000
        + b"1"
        + b"}" * 5000
        + b"}"
    )
    assert (await acme.post("/api/decide", content=deep, headers=JSON)).status_code in {400, 422}
    for junk in (
        b"null",
        b"[]",
        b"1",
        b'"s"',
        b"\xff\xfe",
        b'{"input": {"\\ud800": 1}}',
        b'{"domain": 1, "action": null, "world_model_version": [], "input": {}}',
    ):
        resp = await acme.post("/api/decide", content=junk, headers=JSON)
        assert resp.status_code in {400, 422}, (junk, resp.status_code)
    await assert_healthy(api, acme)


HOSTILE = [
    # (module, status, problem slug, budget)
    ("infinite_loop", 422, "budget-exceeded", {"fuel", "deadline"}),
    ("memory_bomb", 422, "budget-exceeded", {"memory"}),
    ("big_memory", 422, "budget-exceeded", {"memory"}),
    ("huge_output", 422, "budget-exceeded", {"output"}),
    ("deep_recursion", 422, "module-trap", None),
    ("invalid_json", 422, "module-trap", None),
    ("trap", 422, "module-trap", None),
    ("bad_pointer", 422, "module-trap", None),
    ("with_import", 422, "module-refused", None),
    ("missing_export", 422, "module-trap", None),
]


async def test_decide_refusals_are_the_app_handlers_answers_with_the_rate_headers(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """POST /api/decide goes from the auth middleware straight to its endpoint, past
    Starlette's exception middleware and router (ADR 0046): its refusals are still the app
    handler's problem answers and carry the tenant's RateLimit headers like its 200s (the
    auth middleware sees them); the route's other methods are still 405 with Allow."""
    await api.module("decision", KEY)
    for resp, status, slug in (
        (
            await acme.post("/api/decide", content=b"{}", headers={"content-type": "text/plain"}),
            415,
            "unsupported-media-type",
        ),
        (await acme.post("/api/decide", json=decide_body(org="globex")), 404, "module-not-found"),
        (
            await acme.post("/api/decide", content=b"{not json", headers=JSON),
            400,
            "malformed-request",
        ),
    ):
        body = problem(resp, status)
        assert body["type"] == f"urn:spectral:problem:{slug}", body
        assert "ratelimit" in resp.headers and "ratelimit-policy" in resp.headers, resp.headers
    resp = await acme.get("/api/decide")
    problem(resp, 405)
    assert resp.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("name", "status", "slug", "budgets"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
async def test_hostile_module_is_contained(
    api: Api, acme: httpx.AsyncClient, name: str, status: int, slug: str, budgets: set[str] | None
) -> None:
    """Each hostile module gets its precise error (budget named), the server is unharmed
    and the next request is served normally."""
    await api.module("decision", KEY)
    bad = ModuleKey(org="acme", domain="hostile", action=name, world_model_version="v1")
    await api.module(name, bad)
    for _ in range(2):  # a second time: from the cache
        body = problem(await acme.post("/api/decide", json=decide_body(bad)), status)
        assert body["type"].endswith(slug)
        if budgets:
            assert body["budget"] in budgets
    await assert_healthy(api, acme)


async def test_hostile_modules_in_parallel_do_not_starve_good_ones(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """Infinite loops running in parallel with good decisions: every good decision
    succeeds and every loop is stopped by its budget."""
    await api.module("decision", KEY)
    loop = ModuleKey(org="acme", domain="hostile", action="loop", world_model_version="v1")
    await api.module("infinite_loop", loop)
    results: list[int] = []

    async def call(key: ModuleKey) -> None:
        results.append((await acme.post("/api/decide", json=decide_body(key))).status_code)

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(call, loop if i % 3 == 0 else KEY)
    assert results.count(200) == 20 and results.count(422) == 10
    await assert_healthy(api, acme)


async def test_concurrent_decisions_each_get_their_own_tenant_and_input(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """Decisions of two tenants sent at once, whose inline calls run back to back in shared
    batches (ADR 0018): each answer comes from the caller's own org's module and from its
    own input. acme's module decides from the input; beta's, under the same key names,
    echoes it, with a per-request id."""
    await api.module("decision", KEY)
    beta_key = ModuleKey(
        org="beta",
        domain=KEY.domain,
        action=KEY.action,
        world_model_version=KEY.world_model_version,
    )
    await api.module("echo", beta_key)
    answers: dict[int, tuple[int, object]] = {}

    async with api.client(await api.tenant("beta")) as beta:

        async def call(i: int) -> None:
            client, key = (acme, KEY) if i % 2 == 0 else (beta, beta_key)
            inp = {"id": i, "risk": "high" if i % 4 == 0 else "low"}
            resp = await client.post("/api/decide", json=decide_body(key, inp=inp))
            answers[i] = (resp.status_code, resp.json()["decision"])

        async with anyio.create_task_group() as tg:
            for i in range(60):
                tg.start_soon(call, i)

    for i, (status, decision) in answers.items():
        assert status == 200, (i, decision)
        if i % 2 == 0:  # acme: deny exactly the high-risk inputs
            assert decision == {"decision": "deny" if i % 4 == 0 else "approve"}, i
        else:  # beta: its own input back
            assert decision == {"id": i, "risk": "low"}, i
    assert len(answers) == 60


async def test_a_tenants_slow_decisions_wait_in_its_own_lane(api_factory: Any) -> None:
    """ADR 0040 through the route: with two sandbox threads and one per tenant, a noisy
    tenant's four decisions that run in threads until their deadline (300 ms each) hold one
    thread and queue for it, first in first out; another tenant's decision, sent while
    three of them wait, runs on the other thread and is answered while the noisy tenant
    still has at least two decisions to go.  (Without the route naming the tenant, or
    without lanes, it waits behind all four.)"""
    api = api_factory(
        api_sandbox_threads=2,
        sandbox_tenant_threads=1,
        sandbox_inline_fuel=0,  # every decision in a worker thread
        sandbox_fuel=10**12,  # the loops end at their deadline
        sandbox_deadline_ms=300,
    )
    lanes = api.server.server.config.app.state.services.runner.lanes  # type: ignore[union-attr]
    await api.module("decision", KEY)
    loop = ModuleKey(org="noisy", domain="credit", action="loop", world_model_version="v1")
    await api.module("infinite_loop", loop)
    done: list[str] = []

    async with (
        api.client(await api.tenant("acme")) as acme,
        api.client(await api.tenant("noisy")) as noisy,
    ):

        async def slow() -> None:
            resp = await noisy.post("/api/decide", json=decide_body(loop))
            assert resp.status_code == 422, resp.text  # stopped at its deadline
            done.append("noisy")

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(slow)
            with anyio.fail_after(10):
                while not (lanes.in_lane("noisy") == 1 and lanes.waiting("noisy") == 3):
                    await anyio.sleep(0.005)
            resp = await acme.post("/api/decide", json=decide_body())
            assert resp.status_code == 200, resp.text
            done.append("acme")
    assert done.index("acme") <= 1, done
    assert done.count("noisy") == 4


async def test_upload_refuses_modules_the_sandbox_refuses(api: Api) -> None:
    """The operator upload compiles first: a module with imports or junk bytes is 422."""
    async with api.client(await api.tenant("ops", operator=True)) as ops:
        body = problem(await ops.put("/api/modules/blobs", content=wasm("with_import")), 422)
        assert body["reason"] == "imports"
        problem(await ops.put("/api/modules/blobs", content=b"not wasm"), 422)
        problem(await ops.put("/api/modules/blobs", content=b""), 400)


async def test_deep_json_is_a_documented_4xx_never_a_500(api: Api, acme: httpx.AsyncClient) -> None:
    """An input nested past the JSON depth limit is refused with 400 before any module
    runs; a module wrapping an input at the limit (one level deeper) and a module
    answering 32,000 nested arrays are 422 budget-exceeded (json_depth); the server keeps
    answering."""

    def nest(depth: int) -> dict:
        doc: object = 1
        for _ in range(depth - 1):
            doc = [doc]
        return {"x": doc}  # ``depth`` containers including the input object

    await api.module("echo", KEY)
    assert (await acme.post("/api/decide", json=decide_body(inp=nest(128)))).status_code == 200
    body = problem(await acme.post("/api/decide", json=decide_body(inp=nest(129))), 400)
    assert body["limit"] == 128
    # built by hand: 900 levels are close to the recursion limit of Python's own encoders
    deep = b'{"domain":"credit","action":"approve","world_model_version":"v1","input":{"x":'
    deep += b"[" * 899 + b"1" + b"]" * 899 + b"}}"
    problem(
        await acme.post("/api/decide", content=deep, headers={"content-type": "application/json"}),
        400,
    )
    wrap_key = ModuleKey(org="acme", domain="credit", action="wrap", world_model_version="v1")
    await api.module("wrap", wrap_key)
    body = problem(await acme.post("/api/decide", json=decide_body(wrap_key, inp=nest(128))), 422)
    assert body["budget"] == "json_depth"
    deep_key = ModuleKey(org="acme", domain="credit", action="deep", world_model_version="v1")
    await api.module("deep_output", deep_key)
    body = problem(await acme.post("/api/decide", json=decide_body(deep_key)), 422)
    assert body["budget"] == "json_depth"
    resp = await acme.post("/api/decide", json=decide_body(inp={"still": "here"}))
    assert resp.json()["decision"] == {"still": "here"}
