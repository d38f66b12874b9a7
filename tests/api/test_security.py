"""Tampering, forged/replayed/expired/revoked approvals, authentication and tenant isolation."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from spectral_core.modules import ModuleKey, sign_approval

from .conftest import KEY, Api, decide_body, wasm
from .test_decide import problem

pytestmark = pytest.mark.anyio


async def test_tampered_blob_is_refused_and_logged(api: Api, acme: httpx.AsyncClient) -> None:
    """Bytes changed directly in the database (immutability triggers disabled, as an
    attacker with DB access would) no longer hash to their address: 403, logged loudly."""
    await api.module("decision", KEY)
    api.sql("ALTER TABLE core.module_blobs DISABLE TRIGGER USER")
    api.sql("UPDATE core.module_blobs SET bytes = %s", (wasm("echo"),))
    with structlog.testing.capture_logs() as logs:
        body = problem(await acme.post("/api/decide", json=decide_body()), 403)
    assert body["type"].endswith("module-tampered")
    assert any(e["event"] == "module.tampered" and e["log_level"] == "error" for e in logs)


async def test_forged_signature_is_refused(api: Api, acme: httpx.AsyncClient) -> None:
    """An approval row with a forged signature (inserted directly) does not verify: 403."""
    h, _ = await api.module("decision", KEY, approve=False)
    genuine = sign_approval(api.operator, h, KEY, int(time.time()) + 3600)
    forged = base64.b64encode(bytes(64)).decode()
    api.sql(
        "INSERT INTO core.module_approvals (key_id, content_hash, org, domain, action, "
        "world_model_version, expires_at, signature) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            genuine.key_id,
            h,
            KEY.org,
            KEY.domain,
            KEY.action,
            KEY.world_model_version,
            genuine.expires_at,
            forged,
        ),
    )
    body = problem(await acme.post("/api/decide", json=decide_body()), 403)
    assert body["reason"] == "bad_signature"


async def test_approval_replayed_for_another_key_is_refused(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """A genuine approval for key A, replayed as the approval of key B pinned to the same
    bytes, is refused for B (and still works for A); the API refuses to store it too."""
    h, _ = await api.module("decision", KEY)
    other = ModuleKey(org="acme", domain="credit", action="refund", world_model_version="v1")
    await api.module("decision", other, approve=False)
    api.sql(
        "INSERT INTO core.module_approvals (key_id, content_hash, org, domain, action, "
        "world_model_version, expires_at, signature) SELECT key_id, content_hash, org, "
        "domain, 'refund', world_model_version, expires_at, signature "
        "FROM core.module_approvals"
    )
    body = problem(await acme.post("/api/decide", json=decide_body(other)), 403)
    assert body["reason"] == "bad_signature"
    assert (await acme.post("/api/decide", json=decide_body())).status_code == 200
    genuine = sign_approval(api.operator, h, KEY, int(time.time()) + 3600)
    replay = {
        "key_id": genuine.key_id,
        "content_hash": h,
        "expires_at": genuine.expires_at,
        "signature": genuine.signature,
        "key": {"org": "acme", "domain": "credit", "action": "refund", "world_model_version": "v1"},
    }
    async with api.client(await api.tenant("ops", operator=True)) as ops:
        body = problem(await ops.post("/api/modules/approvals", json=replay), 403)
        assert body["reason"] == "bad_signature"


async def test_expired_approval_is_refused(api: Api, acme: httpx.AsyncClient) -> None:
    """An approval whose expiry has passed is refused (403, reason expired)."""
    await api.module("decision", KEY, ttl=-10)
    body = problem(await acme.post("/api/decide", json=decide_body()), 403)
    assert body["reason"] == "expired"


async def test_unapproved_module_is_refused(api: Api, acme: httpx.AsyncClient) -> None:
    """A pinned module without any approval is refused (403, reason missing)."""
    await api.module("decision", KEY, approve=False)
    body = problem(await acme.post("/api/decide", json=decide_body()), 403)
    assert body["reason"] == "missing"


async def test_unknown_operator_key_is_refused(api: Api, acme: httpx.AsyncClient) -> None:
    """An approval signed by a key that is not in SPECTRAL_OPERATOR_KEYS never verifies:
    refused at decide time (inserted directly) and by the approval route."""
    stranger = Ed25519PrivateKey.generate()
    h, _ = await api.module("decision", KEY, signer=stranger)
    body = problem(await acme.post("/api/decide", json=decide_body()), 403)
    assert body["reason"] == "unknown_key"
    a = sign_approval(stranger, h, KEY, int(time.time()) + 60)
    async with api.client(await api.tenant("ops", operator=True)) as ops:
        body = problem(
            await ops.post(
                "/api/modules/approvals",
                content=__import__("msgspec").json.encode(a),
                headers={"content-type": "application/json"},
            ),
            403,
        )
        assert body["reason"] == "unknown_key"


async def test_revocation_stops_execution_within_one_second(
    api: Api, acme: httpx.AsyncClient
) -> None:
    """A module served from the cache stops running within 1 s of its approval being
    revoked through the operator API."""
    _, aid = await api.module("decision", KEY)
    for _ in range(5):
        assert (await acme.post("/api/decide", json=decide_body())).status_code == 200
    async with api.client(await api.tenant("ops", operator=True)) as ops:
        resp = await ops.post(f"/api/modules/approvals/{aid}/revoke", json={"reason": "test"})
        assert resp.status_code == 200 and resp.json()["already_revoked"] is False
        revoked_at = time.monotonic()
        resp = await ops.post(f"/api/modules/approvals/{aid}/revoke")
        assert resp.json()["already_revoked"] is True
        problem(await ops.post("/api/modules/approvals/999999/revoke"), 404)
        problem(await ops.post("/api/modules/approvals/abc/revoke"), 404)
    while True:
        resp = await acme.post("/api/decide", json=decide_body())
        elapsed = time.monotonic() - revoked_at
        if resp.status_code == 403:
            assert resp.json()["reason"] == "revoked"
            break
        assert resp.status_code == 200
        assert elapsed < 1.0, "revocation not effective within 1 s"
    assert elapsed < 1.0


async def test_revocation_through_the_script_route_is_audited(api: Api) -> None:
    """A revoke made with an operator Bearer key on ``/api/modules/approvals/{id}/revoke``
    (the scripts' route) is audited like the console's: one ``core.operator_audit`` row
    naming the key, in the revoke's transaction; a refused revoke (no such approval)
    writes none."""
    _, aid = await api.module("decision", KEY)
    async with api.client(await api.tenant("ops", operator=True)) as ops:
        problem(await ops.post("/api/modules/approvals/999999/revoke"), 404)
        assert api.sql("SELECT count(*) FROM core.operator_audit")[0][0] == 0
        resp = await ops.post(f"/api/modules/approvals/{aid}/revoke", json={"reason": "leak"})
        assert resp.status_code == 200 and resp.json()["already_revoked"] is False
    rows = api.sql("SELECT action, target, detail->>'reason' FROM core.operator_audit")
    assert rows == [("approval.revoke", f"approval {aid}", "leak")]


async def test_revocation_reaches_every_process(api_factory, settings) -> None:  # type: ignore[no-untyped-def]
    """Two API processes on one database: a revocation made through one stops the cached
    module on the other within 1 s too."""
    first = api_factory()
    second = api_factory(operator_keys=first.settings.operator_keys)
    second.operator = first.operator
    _, aid = await first.module("decision", KEY)
    token = await first.tenant("acme")
    async with first.client(token) as a, second.client(token) as b:
        assert (await a.post("/api/decide", json=decide_body())).status_code == 200
        assert (await b.post("/api/decide", json=decide_body())).status_code == 200
        async with first.client(await first.tenant("ops", operator=True)) as ops:
            assert (await ops.post(f"/api/modules/approvals/{aid}/revoke")).status_code == 200
        t0 = time.monotonic()
        while (await b.post("/api/decide", json=decide_body())).status_code == 200:
            assert time.monotonic() - t0 < 1.0
        assert (await a.post("/api/decide", json=decide_body())).status_code == 403


async def test_missing_bad_and_revoked_keys_are_401(api: Api) -> None:
    """/api/* needs a valid bearer key: missing, malformed, unknown and revoked keys are 401
    with WWW-Authenticate, and the bodies are identical."""
    token = await api.tenant("acme")
    bodies = []
    async with api.client() as anon:
        for headers in (
            {},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer sk_acme_" + "A" * 43},
            {"Authorization": "Bearer " + "x" * 5000},
        ):
            resp = await anon.post("/api/decide", json=decide_body(), headers=headers)
            bodies.append(problem(resp, 401))
            assert resp.headers["www-authenticate"].startswith("Bearer")
        resp = await anon.get("/api/modules", headers={"Authorization": "Bearer nope"})
        problem(resp, 401)
    assert all(b == bodies[0] for b in bodies)
    key_id = api.sql("SELECT id FROM core.api_keys")[0][0]
    api.sql("UPDATE core.api_keys SET revoked_at = now() WHERE id = %s", (key_id,))
    time.sleep(api.settings.api_auth_ttl_s)
    async with api.client(token) as client:
        problem(await client.post("/api/decide", json=decide_body()), 401)


async def test_tenant_reaches_only_its_own_org(api: Api) -> None:
    """Org B cannot run org A's module, with or without naming org A: the 404 is
    byte-identical to the one for a module that does not exist."""
    await api.module("decision", KEY)  # acme's module
    async with (
        api.client(await api.tenant("globex")) as globex,
        api.client(await api.tenant("acme")) as acme,
    ):
        assert (await acme.post("/api/decide", json=decide_body())).status_code == 200
        theirs = await globex.post("/api/decide", json=decide_body())
        named = await globex.post("/api/decide", json=decide_body(org="acme"))
        missing = await globex.post(
            "/api/decide",
            json=decide_body(
                ModuleKey(org="globex", domain="nothing", action="x", world_model_version="v1")
            ),
        )
        assert theirs.status_code == named.status_code == missing.status_code == 404
        assert theirs.content == named.content == missing.content
        assert b"acme" not in theirs.content


async def test_tenant_key_cannot_use_operator_routes(api: Api) -> None:
    """A tenant key gets 403 on every operator route; nothing is written."""
    async with api.client(await api.tenant("acme")) as acme:
        problem(await acme.get("/api/modules"), 403)
        problem(await acme.put("/api/modules/blobs", content=wasm("decision")), 403)
        problem(await acme.post("/api/modules/pins", json={}), 403)
        problem(await acme.post("/api/modules/approvals", json={}), 403)
        problem(await acme.post("/api/modules/approvals/1/revoke"), 403)
    assert api.sql("SELECT count(*) FROM core.module_blobs") == [(0,)]


async def test_operator_flow_over_http(api: Api) -> None:
    """Operator API: upload, pin (idempotent; conflict 409), approve (signed offline),
    list; then the tenant decides (a new approval is seen within the verdict TTL)."""
    async with (
        api.client(await api.tenant("ops", operator=True)) as ops,
        api.client(await api.tenant("acme")) as acme,
    ):
        resp = await ops.put("/api/modules/blobs", content=wasm("decision"))
        assert resp.status_code == 201, resp.text
        h = resp.json()["content_hash"]
        other = (await ops.put("/api/modules/blobs", content=wasm("echo"))).json()["content_hash"]
        pin = {
            "org": "acme",
            "domain": "credit",
            "action": "approve",
            "world_model_version": "v1",
            "content_hash": h,
        }
        assert (await ops.post("/api/modules/pins", json=pin)).status_code == 201
        assert (await ops.post("/api/modules/pins", json=pin)).status_code == 200
        problem(await ops.post("/api/modules/pins", json={**pin, "content_hash": other}), 409)
        problem(
            await ops.post(
                "/api/modules/pins", json={**pin, "content_hash": "0" * 64, "action": "x"}
            ),
            404,
        )
        problem(await ops.post("/api/modules/pins", json={**pin, "content_hash": "xyz"}), 422)
        problem(await acme.post("/api/decide", json=decide_body()), 403)
        a = sign_approval(api.operator, h, KEY, int(time.time()) + 600)
        import msgspec

        resp = await ops.post(
            "/api/modules/approvals",
            content=msgspec.json.encode(a),
            headers={"content-type": "application/json"},
        )
        assert resp.status_code == 201, resp.text
        listing = (await ops.get("/api/modules", params={"org": "acme"})).json()
        assert [m["content_hash"] for m in listing["modules"]] == [h]
        assert listing["modules"][0]["live_approvals"] == 1
        assert "signature" not in listing["approvals"][0]
        time.sleep(api.settings.api_approval_ttl_s)  # the "missing" verdict was cached
        assert (await acme.post("/api/decide", json=decide_body())).status_code == 200


async def test_no_operator_keys_is_said_once_for_what_it_is(api_factory) -> None:  # type: ignore[no-untyped-def]
    """With SPECTRAL_OPERATOR_KEYS empty, a decision is refused (403 `no_operator_keys`,
    the message naming the setting), and the log says so once at warning level: it used to
    log every request at error level as a "forged or foreign approval"."""
    api = api_factory(operator_keys="")
    await api.module("decision", KEY)
    async with api.client(await api.tenant("acme")) as acme:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                body = problem(await acme.post("/api/decide", json=decide_body()), 403)
                assert body["reason"] == "no_operator_keys"
                assert "SPECTRAL_OPERATOR_KEYS" in body["detail"]
                time.sleep(api.settings.api_approval_ttl_s + 0.1)  # past the verdict cache
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    said = [e for e in logs if e["event"] == "module.no_operator_keys"]
    assert len(said) == 1 and said[0]["log_level"] == "warning"
