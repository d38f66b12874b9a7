"""The operator console's API (issue 18, ADR 0038), over real HTTP against a real server
on a real PostgreSQL: sessions, the read endpoints, the audited actions, and who may use
them (operator Bearer key or console session: yes; tenant key: 403; nothing: 401)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from spectral_api.routes import operator_routes
from spectral_core.generations import allocate_generation

from .conftest import KEY, Api, decide_body

pytestmark = pytest.mark.anyio

#: every (method, path) of the operator API, from the router's own list: a new route is
#: checked below without being named here
ROUTES = [
    (method, route.path.replace("{approval_id}", "1"))
    for route in operator_routes()
    for method in sorted(getattr(route, "methods", ()) or ())
    if method != "HEAD"
]
LOGIN = ("POST", "/api/operator/session")


def _body_for(method: str, path: str, generation: int = 1) -> dict[str, Any] | None:
    if method != "POST":
        return None
    if path.endswith("/redrive"):
        return {"generation": generation, "all": True}
    return {}


async def _login(api: Api, token: str) -> tuple[str, str, httpx.Response]:
    """Log in with ``token``; returns ``(session id, csrf, response)``."""
    async with api.client() as c:
        r = await c.post("/api/operator/session", json={"token": token})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    found = re.match(r"spectral_session=([A-Za-z0-9_-]+);", cookie)
    assert found, cookie
    return found.group(1), r.json()["csrf"], r


def _session_client(api: Api, sid: str, csrf: str | None = None) -> httpx.AsyncClient:
    headers = {"Cookie": f"spectral_session={sid}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30)


def _dead_row(api: Api, generation: int, topic: str = "t.dead", payload: Any = None) -> int:
    rows = api.sql(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
        "attempts, last_error, finished_at) VALUES (%s, %s, %s, md5(random()::text), 'dead', "
        "10, 'boom', now()) RETURNING id",
        (generation, topic, json.dumps(payload if payload is not None else {"n": 1})),
    )
    return int(rows[0][0])


def _status(api: Api, row_id: int) -> str:
    return str(api.sql("SELECT status FROM core.outbox WHERE id = %s", (row_id,))[0][0])


def _audit_count(api: Api) -> int:
    return int(api.sql("SELECT count(*) FROM core.operator_audit")[0][0])


def _new_generation(api: Api) -> int:
    import psycopg

    with psycopg.connect(api.db_url, autocommit=True) as c:
        return allocate_generation(c, "test-2")


# -- who may call -----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_tenant_key_is_refused_on_every_operator_route(
    api: Api, method: str, path: str
) -> None:
    """A tenant key gets 403 on every operator route (as Bearer, and in the login body),
    and nothing is written: no session, no audit row, no re-driven row."""
    dead = _dead_row(api, api.settings.require_generation())
    token = await api.tenant("acme")
    async with api.client(token) as c:
        if (method, path) == LOGIN:
            r = await c.post(path, json={"token": token})
        else:
            r = await c.request(method, path, json=_body_for(method, path))
    assert r.status_code == 403, (method, path, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "set-cookie" not in r.headers
    assert api.sql("SELECT count(*) FROM core.operator_sessions")[0][0] == 0
    assert _audit_count(api) == 0
    assert _status(api, dead) == "dead"


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_no_credential_is_401_on_every_operator_route(
    api: Api, method: str, path: str
) -> None:
    """Without a credential (or with an unknown key / session) every operator route
    answers 401 and changes nothing."""
    dead = _dead_row(api, api.settings.require_generation())
    async with api.client() as c:
        if (method, path) == LOGIN:
            r = await c.post(path, json={"token": "sk_acme_" + "A" * 43})
        else:
            r = await c.request(method, path, json=_body_for(method, path))
            bogus = await c.request(
                method,
                path,
                json=_body_for(method, path),
                headers={"Cookie": "spectral_session=" + "B" * 43, "X-CSRF-Token": "x"},
            )
            assert bogus.status_code == 401, (method, path, bogus.text)
    assert r.status_code == 401, (method, path, r.text)
    assert _audit_count(api) == 0
    assert _status(api, dead) == "dead"


# -- sessions ---------------------------------------------------------------------------


async def test_login_sets_an_httponly_strict_cookie_and_never_echoes_the_token(api: Api) -> None:
    """Login with an operator key: 200 with the key id (not the token), a CSRF value and
    the expiry; the cookie is HttpOnly, SameSite=Strict, Path=/api/; only the session id's
    hash is stored; GET /api/operator/session on the cookie returns the same CSRF."""
    token = await api.tenant("ops", operator=True)
    sid, csrf, r = await _login(api, token)
    body = r.json()
    assert body["operator"].startswith("key_") and token not in r.text
    cookie = r.headers["set-cookie"]
    for part in ("HttpOnly", "SameSite=Strict", "Path=/api/", "Max-Age=28800"):
        assert part in cookie
    assert "Secure" not in cookie  # plain http and SPECTRAL_CONSOLE_COOKIE_SECURE off
    stored = api.sql("SELECT id_sha256, expires_at - created_at FROM core.operator_sessions")
    assert len(stored) == 1 and sid.encode() not in bytes(stored[0][0])
    assert abs(stored[0][1].total_seconds() - 8 * 3600) < 5
    async with _session_client(api, sid) as c:
        again = await c.get("/api/operator/session")
    assert again.status_code == 200
    assert again.json()["csrf"] == csrf and again.json()["operator"] == body["operator"]
    async with api.client() as c:
        assert (await c.get("/api/operator/session")).status_code == 401


async def test_secure_cookie_setting(api_factory: Any) -> None:
    """SPECTRAL_CONSOLE_COOKIE_SECURE marks the cookie Secure (TLS ended by a proxy)."""
    api = api_factory(console_cookie_secure=True)
    _, _, r = await _login(api, await api.tenant("ops", operator=True))
    assert "Secure" in r.headers["set-cookie"]


async def test_bad_login_body_is_400(api: Api) -> None:
    """A login body that is not {"token": str} is a 400; nothing is stored."""
    async with api.client() as c:
        for body in ('{"tok": "x"}', "not json", '{"token": 5}'):
            r = await c.post(
                "/api/operator/session",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 400, (body, r.text)
    assert api.sql("SELECT count(*) FROM core.operator_sessions")[0][0] == 0


async def test_session_expires(api: Api) -> None:
    """A session past its expiry is refused (401) on every route, though its row is still
    there: the lookup itself checks the expiry."""
    sid, csrf, _ = await _login(api, await api.tenant("ops", operator=True))
    async with _session_client(api, sid, csrf) as c:
        assert (await c.get("/api/operator/generations")).status_code == 200
        api.sql("UPDATE core.operator_sessions SET expires_at = now() - interval '1 second'")
        assert (await c.get("/api/operator/generations")).status_code == 401
        assert (await c.get("/api/operator/session")).status_code == 401


async def test_logout_deletes_the_session_and_clears_the_cookie(api: Api) -> None:
    """Logout (with its CSRF header): 204, the cookie cleared (Max-Age=0), the row deleted,
    and the old cookie no longer works."""
    sid, csrf, _ = await _login(api, await api.tenant("ops", operator=True))
    async with _session_client(api, sid, csrf) as c:
        r = await c.post("/api/operator/session/logout")
        assert r.status_code == 204
        assert "Max-Age=0" in r.headers["set-cookie"]
        assert api.sql("SELECT count(*) FROM core.operator_sessions")[0][0] == 0
        assert (await c.get("/api/operator/overview")).status_code == 401


async def test_revoking_the_operator_key_ends_its_sessions(api: Api) -> None:
    """A session lives only as long as its operator key: revoked key, 401 at once."""
    token = await api.tenant("ops", operator=True)
    sid, _, r = await _login(api, token)
    api.sql("UPDATE core.api_keys SET revoked_at = now() WHERE id = %s", (r.json()["operator"],))
    async with _session_client(api, sid) as c:
        assert (await c.get("/api/operator/overview")).status_code == 401


async def test_cookie_is_only_accepted_under_api_operator(api: Api) -> None:
    """The console's cookie is no credential for the other /api routes (decide, modules)."""
    sid, csrf, _ = await _login(api, await api.tenant("ops", operator=True))
    async with _session_client(api, sid, csrf) as c:
        assert (await c.get("/api/modules")).status_code == 401
        assert (await c.post("/api/decide", json=decide_body())).status_code == 401


async def test_post_with_cookie_needs_the_csrf_header(api: Api) -> None:
    """A cookie-authenticated POST without (or with a wrong) X-CSRF-Token is 403 and
    changes nothing: the dead row stays dead, the approval stays live, no audit row."""
    gen = api.settings.require_generation()
    dead = _dead_row(api, gen)
    _, approval = await api.module("decision", KEY)
    sid, csrf, _ = await _login(api, await api.tenant("ops", operator=True))
    for header in (None, "wrong", csrf[:-1]):
        async with _session_client(api, sid, header) as c:
            r1 = await c.post("/api/operator/dead/redrive", json={"generation": gen, "all": True})
            r2 = await c.post(f"/api/operator/approvals/{approval}/revoke", json={})
            r3 = await c.post("/api/operator/session/logout")
        assert (r1.status_code, r2.status_code, r3.status_code) == (403, 403, 403)
    assert _status(api, dead) == "dead"
    assert api.sql("SELECT revoked_at FROM core.module_approvals")[0][0] is None
    assert api.sql("SELECT count(*) FROM core.operator_sessions")[0][0] == 1
    assert _audit_count(api) == 0
    async with _session_client(api, sid, csrf) as c:
        ok = await c.post("/api/operator/dead/redrive", json={"generation": gen, "ids": [dead]})
    assert ok.status_code == 200 and ok.json()["redriven"] == 1


async def test_a_csrf_token_works_only_for_its_own_session(api: Api) -> None:
    """The CSRF token is bound to its session: two sessions of the same operator key have
    different tokens, and one session's token with the other's cookie is 403 and changes
    nothing (no re-drive, no audit row)."""
    gen = api.settings.require_generation()
    dead = _dead_row(api, gen)
    token = await api.tenant("ops", operator=True)
    sid_a, csrf_a, _ = await _login(api, token)
    sid_b, csrf_b, _ = await _login(api, token)
    assert sid_a != sid_b and csrf_a != csrf_b
    async with _session_client(api, sid_b, csrf_a) as c:
        r = await c.post("/api/operator/dead/redrive", json={"generation": gen, "ids": [dead]})
    assert r.status_code == 403
    assert _status(api, dead) == "dead" and _audit_count(api) == 0


async def test_login_never_adopts_the_session_id_the_browser_sent(api: Api) -> None:
    """Session fixation: a login that arrives with a session cookie (one planted by
    someone else, or the browser's previous session) gets a new random id; the planted
    id is no credential."""
    token = await api.tenant("ops", operator=True)
    old_sid, _, _ = await _login(api, token)
    for planted in ("A" * 43, old_sid):
        async with api.client() as c:
            r = await c.post(
                "/api/operator/session",
                json={"token": token},
                headers={"Cookie": f"spectral_session={planted}"},
            )
        assert r.status_code == 200
        found = re.match(r"spectral_session=([A-Za-z0-9_-]+);", r.headers["set-cookie"])
        assert found and found.group(1) not in (planted, old_sid)
    async with _session_client(api, "A" * 43) as c:
        assert (await c.get("/api/operator/session")).status_code == 401


# -- reads ------------------------------------------------------------------------------


async def _both_ways(api: Api, path: str) -> dict[str, Any]:
    """GET ``path`` with a Bearer operator key and with a console session: the same 200."""
    token = await api.tenant("ops", operator=True)
    async with api.client(token) as c:
        r = await c.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    sid, _, _ = await _login(api, token)
    async with _session_client(api, sid) as c:
        r2 = await c.get(path)
    assert r2.status_code == 200, r2.text
    assert r2.json().keys() == r.json().keys()
    body: dict[str, Any] = r.json()
    return body


async def test_overview(api: Api) -> None:
    """Overview: version, generation, the /health document and the deploy go/no-go."""
    body = await _both_ways(api, "/api/operator/overview")
    assert body["generation"] == api.settings.generation
    assert body["health"]["releaseId"] == str(api.settings.generation)
    assert "database:reachable" in body["health"]["checks"]
    assert isinstance(body["deploy"]["go"], bool) and isinstance(body["deploy"]["reasons"], list)


async def test_generations_show_counts_and_verdicts(api: Api) -> None:
    """Generations: newest first; counts of pending/in-flight/dead rows, the oldest
    pending age; the API's own generation is running; an older one with pending rows and
    no live worker is stranded (and the overview's deploy verdict says no-go)."""
    cur = api.settings.require_generation()
    older = cur  # allocated first
    newer = _new_generation(api)
    api.sql(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, created_at) "
        "VALUES (%s, 't', '{}', 'k1', now() - interval '30 seconds')",
        (older,),
    )
    _dead_row(api, older)
    # a live worker of the newer generation makes it the running one
    api.sql(
        "INSERT INTO core.workers (id, generation, state, host, pid, version) "
        "VALUES (gen_random_uuid(), %s, 'running', 'h', 1, 'v')",
        (newer,),
    )
    body = await _both_ways(api, "/api/operator/generations")
    gens = {g["generation"]: g for g in body["generations"]}
    assert [g["generation"] for g in body["generations"]] == sorted(gens, reverse=True)
    assert body["current"] == newer
    assert gens[newer]["verdict"] == "running" and gens[newer]["workers_live"] == 1
    old = gens[older]
    assert old["verdict"] == "stranded"
    assert old["counts"]["pending"] == 1 and old["counts"]["dead"] == 1
    assert old["oldest_pending_age_s"] >= 29
    assert isinstance(old["handled_per_s"], float)
    token = await api.tenant("ops2", operator=True)
    async with api.client(token) as c:
        deploy = (await c.get("/api/operator/overview")).json()["deploy"]
    assert deploy["go"] is False
    assert any(f"generation {older} is stranded" in r for r in deploy["reasons"])


async def test_workers_mark_lost_ones(api: Api) -> None:
    """Workers: each with role, state, heartbeat age and reconnects; a worker whose
    heartbeat is older than the stale bound is lost; the API process lists itself;
    ?generation filters; a bad generation is 400."""
    gen = api.settings.require_generation()
    api.sql(
        "INSERT INTO core.workers (id, generation, state, host, pid, version, last_seen, "
        "reconnects) VALUES (gen_random_uuid(), %s, 'running', 'h1', 11, 'v', "
        "now() - interval '60 seconds', 2), (gen_random_uuid(), %s, 'running', 'h2', 12, "
        "'v', now(), 0)",
        (gen, gen),
    )
    body = await _both_ways(api, f"/api/operator/workers?generation={gen}")
    workers = [w for w in body["workers"] if w["role"] == "worker"]
    by_host = {w["host"]: w for w in workers}
    assert by_host["h1"]["lost"] is True and by_host["h1"]["state"] == "lost"
    assert by_host["h1"]["heartbeat_age_s"] >= 59 and by_host["h1"]["reconnects"] == 2
    assert by_host["h2"]["lost"] is False and by_host["h2"]["state"] == "running"
    assert any(w["role"] == "api" for w in body["workers"])
    token = await api.tenant("ops2", operator=True)
    async with api.client(token) as c:
        assert (await c.get("/api/operator/workers?generation=999")).json()["workers"] == []
        for bad in ("x", "-1", "0", "²", "1" * 19):
            r = await c.get(f"/api/operator/workers?generation={bad}")
            assert r.status_code == 400, bad


async def test_dead_rows_of_one_generation(api: Api) -> None:
    """Dead rows: only the asked generation's, with topic, attempts, last error and a
    payload preview cut to 200 characters; generation is required (400 without)."""
    gen = api.settings.require_generation()
    other = _new_generation(api)
    mine = _dead_row(api, gen, payload={"text": "x" * 1000})
    _dead_row(api, other)
    body = await _both_ways(api, f"/api/operator/dead?generation={gen}")
    assert [r["id"] for r in body["rows"]] == [mine]
    row = body["rows"][0]
    assert row["topic"] == "t.dead" and row["attempts"] == 10 and row["last_error"] == "boom"
    assert len(row["payload_preview"]) == 200 and row["payload_preview"].startswith('{"text"')
    token = await api.tenant("ops2", operator=True)
    async with api.client(token) as c:
        assert (await c.get("/api/operator/dead")).status_code == 400
        assert (await c.get(f"/api/operator/dead?generation={gen}&limit=0")).status_code == 400
        assert (await c.get(f"/api/operator/dead?generation={gen}&limit=5000")).status_code == 400


async def test_modules_show_approvals_and_the_approve_command(api: Api) -> None:
    """Modules: each pin with its hash and approvals (signer, expiry, state); a pin with no
    active approval carries the exact `spectral modules approve` command."""
    h, aid = await api.module("decision", KEY)
    other = KEY.__class__(org="acme", domain="credit", action="deny", world_model_version="v1")
    h2, _ = await api.module("decision", other, approve=False)
    body = await _both_ways(api, "/api/operator/modules")
    pins = {p["action"]: p for p in body["pins"]}
    assert body["truncated"] is False
    approved = pins["approve"]
    assert approved["hash"] == h and approved["approve_command"] is None
    assert approved["approvals"][0]["id"] == aid
    assert approved["approvals"][0]["state"] == "active"
    assert approved["approvals"][0]["signer"]
    expires = datetime.fromisoformat(approved["approvals"][0]["expires_at"])
    assert 3500 < expires.timestamp() - time.time() <= 3600
    assert pins["deny"]["approve_command"] == (
        "spectral modules approve --org acme --domain credit --action deny "
        f"--world-model-version v1 {h2}"
    )


async def test_tenants_show_keys_limits_and_recent_429s(api_factory: Any) -> None:
    """Tenants: effective limits (overrides or defaults), key ids and prefixes (never a
    token), and the 429s this process answered the tenant recently, by limit."""
    from spectral_core.ratelimit import TenantLimits

    api = api_factory()
    token = await api.tenant("slow", limits=TenantLimits(rate=1.0, burst=1, concurrency=4))
    async with api.client(token) as c:
        codes = [(await c.post("/api/decide", json=decide_body())).status_code for _ in range(10)]
    assert codes.count(429) >= 1  # burst 1 at 1/s: ten requests cannot all pass
    body = await _both_ways(api, "/api/operator/tenants")
    tenants = {t["org"]: t for t in body["tenants"]}
    assert body["truncated"] is False
    slow = tenants["slow"]
    assert slow["limits"] == {"rate_per_s": 1.0, "burst": 1, "concurrency": 4, "overridden": True}
    assert slow["recent_429"]["by_kind"]["rate"] == codes.count(429)
    assert slow["recent_429"]["total"] == codes.count(429)
    assert slow["keys"][0]["prefix"] == "sk_slow_" and token not in json.dumps(body)
    ops = tenants["ops"]
    assert ops["limits"]["rate_per_s"] == api.settings.api_rate
    assert ops["keys"][0]["operator"] is True and ops["recent_429"]["total"] == 0


def _dead_turn(api: Api, generation: int, thread: str) -> None:
    api.sql(
        "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, "
        "observation, status, attempts, last_error, finished_at) "
        "VALUES (%s, %s, 'acme', 'credit', %s, '{}', 'dead', 5, 'model refused', now())",
        (thread, generation, thread),
    )


async def test_agent_turns_by_status_and_dead_reasons(api: Api) -> None:
    """World Agent: turns by status and each dead turn of the generation with its reason."""
    gen = api.settings.require_generation()
    _dead_turn(api, gen, "acme:credit:1")
    body = await _both_ways(api, f"/api/operator/agent?generation={gen}")
    assert body["by_status"]["dead"] == 1
    assert body["dead"][0]["id"] == "acme:credit:1"
    assert body["dead"][0]["reason"] == "model refused"


# -- actions ----------------------------------------------------------------------------


async def test_redrive_stays_within_its_generation(api: Api) -> None:
    """Re-drive by ids re-pends only the named dead rows of the named generation: an id of
    another generation is ignored and not counted; `all` re-pends every dead row of that
    generation and none of another."""
    gen = api.settings.require_generation()
    other = _new_generation(api)
    a, b, c_ = _dead_row(api, gen), _dead_row(api, gen), _dead_row(api, gen)
    foreign = _dead_row(api, other)
    token = await api.tenant("ops", operator=True)
    async with api.client(token) as c:
        r = await c.post(
            "/api/operator/dead/redrive", json={"generation": gen, "ids": [a, foreign]}
        )
        assert r.status_code == 200 and r.json()["redriven"] == 1 and r.json()["ids"] == [a]
        assert _status(api, a) == "pending" and _status(api, foreign) == "dead"
        assert _status(api, b) == "dead"
        r = await c.post("/api/operator/dead/redrive", json={"generation": gen, "all": True})
        assert r.json()["redriven"] == 2
    assert _status(api, b) == _status(api, c_) == "pending"
    assert _status(api, foreign) == "dead"


@pytest.mark.parametrize(
    "body",
    [
        {"generation": 1},
        {"generation": 1, "ids": []},
        {"generation": 1, "ids": [1], "all": True},
        {"generation": 1, "ids": ["x"]},
        {"generation": 0, "all": True},
        {"generation": 424242, "all": True},
        {"generation": 1, "all": True, "extra": 1},
        {"ids": [1]},
    ],
)
async def test_bad_redrive_is_400_and_changes_nothing(api: Api, body: dict[str, Any]) -> None:
    """A malformed re-drive (no selection, both, empty, wrong types, unknown generation,
    unknown field) is a 400 problem; no row moves and no audit row is written."""
    gen = api.settings.require_generation()
    assert gen == 1
    dead = _dead_row(api, gen)
    token = await api.tenant("ops", operator=True)
    async with api.client(token) as c:
        r = await c.post("/api/operator/dead/redrive", json=body)
        t = await c.post("/api/operator/agent/redrive", json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert t.status_code == 400 or body.get("ids") == ["x"], t.text  # thread ids are strings
    assert _status(api, dead) == "dead"
    assert _audit_count(api) == (0 if t.status_code == 400 else 1)


async def test_revoke_stops_decide_within_a_second(api: Api, acme: httpx.AsyncClient) -> None:
    """Revoking an approval from the console: /api/decide answers 403 for that pin within
    1 s (the approval cache's bound), and the action is audited."""
    _, aid = await api.module("decision", KEY)
    assert (await acme.post("/api/decide", json=decide_body())).status_code == 200
    sid, csrf, login = await _login(api, await api.tenant("ops", operator=True))
    async with _session_client(api, sid, csrf) as c:
        r = await c.post(f"/api/operator/approvals/{aid}/revoke", json={})
    assert r.status_code == 200 and r.json()["revoked"] == aid
    revoked_at = time.monotonic()
    while True:
        status = (await acme.post("/api/decide", json=decide_body())).status_code
        if status == 403:
            break
        assert time.monotonic() - revoked_at < 1.0, "decide still allowed 1 s after revoke"
    entry = api.sql("SELECT key_id, action, target FROM core.operator_audit")
    assert entry == [(login.json()["operator"], "approval.revoke", f"approval {aid}")]
    async with api.client(await api.tenant("ops2", operator=True)) as c:
        assert (await c.post("/api/operator/approvals/999999/revoke")).status_code == 404
        assert (await c.post("/api/operator/approvals/x1/revoke")).status_code == 404
    assert _audit_count(api) == 1


async def test_agent_redrive_within_generation(api: Api) -> None:
    """Agent re-drive puts the named dead turns of the generation back to pending (a
    turn of another generation is left alone), audited."""
    gen = api.settings.require_generation()
    other = _new_generation(api)
    _dead_turn(api, gen, "acme:credit:1")
    _dead_turn(api, other, "acme:credit:2")
    async with api.client(await api.tenant("ops", operator=True)) as c:
        r = await c.post(
            "/api/operator/agent/redrive",
            json={"generation": gen, "ids": ["acme:credit:1", "acme:credit:2"]},
        )
    assert r.status_code == 200 and r.json()["redriven"] == 1
    status = dict(api.sql("SELECT thread_id, status FROM agent.turns"))
    assert status == {"acme:credit:1": "pending", "acme:credit:2": "dead"}
    assert api.sql("SELECT action FROM core.operator_audit") == [("agent.redrive",)]


async def test_audit_lists_every_action_newest_first(api: Api) -> None:
    """Each action writes one audit row in its own transaction (who: the operator key id,
    what, when, target, detail); GET /api/operator/audit lists them newest first."""
    gen = api.settings.require_generation()
    dead = _dead_row(api, gen)
    _, aid = await api.module("decision", KEY)
    _dead_turn(api, gen, "acme:credit:9")
    token = await api.tenant("ops", operator=True)
    sid, csrf, login = await _login(api, token)
    async with _session_client(api, sid, csrf) as c:
        await c.post("/api/operator/dead/redrive", json={"generation": gen, "ids": [dead]})
        await c.post(f"/api/operator/approvals/{aid}/revoke", json={"reason": "bad rule"})
        await c.post("/api/operator/agent/redrive", json={"generation": gen, "all": True})
    body = await _both_ways(api, "/api/operator/audit?limit=10")
    entries = body["entries"]
    assert [e["action"] for e in entries] == ["agent.redrive", "approval.revoke", "outbox.redrive"]
    assert all(e["operator"] == login.json()["operator"] for e in entries)
    assert entries[1]["target"] == f"approval {aid}"
    assert entries[1]["detail"]["reason"] == "bad rule"
    assert entries[2]["detail"]["ids"] == [dead] and entries[2]["detail"]["redriven"] == 1
    assert all(e["at"] for e in entries)
    assert token not in json.dumps(body)


async def test_an_action_and_its_audit_row_commit_together(api: Api) -> None:
    """When the audit row cannot be written, the action does not happen either: the
    dead row stays dead and the approval stays live (one transaction)."""
    gen = api.settings.require_generation()
    dead = _dead_row(api, gen)
    _, aid = await api.module("decision", KEY)
    api.sql("ALTER TABLE core.operator_audit ADD CONSTRAINT refuse CHECK (false) NOT VALID")
    async with api.client(await api.tenant("ops", operator=True)) as c:
        r1 = await c.post("/api/operator/dead/redrive", json={"generation": gen, "ids": [dead]})
        r2 = await c.post(f"/api/operator/approvals/{aid}/revoke", json={})
    assert r1.status_code >= 500 and r2.status_code >= 500
    assert _status(api, dead) == "dead"
    assert api.sql("SELECT revoked_at FROM core.module_approvals")[0][0] is None


async def test_tokens_and_session_ids_never_reach_the_logs(api_factory: Any) -> None:
    """With the access log on, neither the operator key, nor the session id, nor the CSRF
    token appears in any log line of a login, reads, an action and a logout."""
    import structlog

    api = api_factory()
    api.server.stop()  # restart with the access log on
    from .conftest import ServerThread

    server = ServerThread(api.settings, api.server.keyring, access_log=True)
    token = await api.tenant("ops", operator=True)
    with structlog.testing.capture_logs() as logs:
        server.start()
        try:
            sid, csrf, _ = await _login(api, token)
            async with _session_client(api, sid, csrf) as c:
                await c.get("/api/operator/overview")
                await c.post(
                    "/api/operator/dead/redrive",
                    json={"generation": api.settings.generation, "all": True},
                )
                await c.post("/api/operator/session/logout")
        finally:
            server.stop()
    text = json.dumps(logs, default=str)
    assert "operator.redrive" in text and "api.request" in text
    for secret in (token, sid, csrf):
        assert secret not in text


async def test_modules_listing_is_bounded_per_pin(api: Api) -> None:
    """A pin approved many times over shows only its 20 newest approvals (bounded reads),
    newest included."""
    import psycopg

    from spectral_core.modules import add_approval, sign_approval

    h, first = await api.module("decision", KEY)
    async with await psycopg.AsyncConnection.connect(api.db_url, autocommit=True) as c:
        ids = [
            await add_approval(c, sign_approval(api.operator, h, KEY, int(time.time()) + 600 + n))
            for n in range(24)
        ]
    async with api.client(await api.tenant("ops", operator=True)) as c:
        (pin,) = (await c.get("/api/operator/modules")).json()["pins"]
    shown = [a["id"] for a in pin["approvals"]]
    assert len(shown) == 20 and max(ids) in shown and first not in shown
