"""The HTTP tier at its edges (issue 16): operator route ids, rate quota on refusals,
content types, oversize heads, slow and idle clients, the connection cap."""

from __future__ import annotations

import anyio
import anyio.abc
import msgspec
import pytest

from spectral_core.ratelimit import TenantLimits

from .conftest import KEY, Api, decide_body
from .test_decide import problem

pytestmark = pytest.mark.anyio


async def test_approval_id_with_unicode_digits_is_404_and_revokes_nothing(api: Api) -> None:
    """An approval id is ASCII digits only: Arabic-Indic "١" (which int() reads as 1) and a
    superscript "²" (a digit to str.isdigit() that int() refuses) are 404s, and approval 1
    stays live."""
    _, aid = await api.module("decision", KEY)
    assert aid == 1
    async with api.client(await api.tenant("ops", operator=True)) as ops:
        for raw in ("\u0661", "\u00b2", "\uff11", "1\u0661"):
            problem(await ops.post(f"/api/modules/approvals/{raw}/revoke"), 404)
    assert api.sql("SELECT revoked_at FROM core.module_approvals WHERE id = 1") == [(None,)]


async def open_raw(api: Api) -> tuple[anyio.abc.SocketStream, str]:
    """A raw TCP connection to the API and its ``host:port``."""
    host, port = api.base_url.removeprefix("http://").split(":")
    return await anyio.connect_tcp(host, int(port)), f"{host}:{port}"


async def read_response(stream: anyio.abc.SocketStream, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    data = b""
    with anyio.move_on_after(timeout):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            pass
    return data


def decide_request(token: str, body: bytes, *, length: int | None = None) -> bytes:
    """The head of a ``POST /api/decide`` with a JSON body of ``length`` bytes."""
    return (
        b"POST /api/decide HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length)
    )


async def test_request_refused_by_the_concurrency_cap_costs_no_rate_quota(api: Api) -> None:
    """A request refused (429) by the tenant's concurrency cap does not consume a rate
    token: with a burst of 2 and one request in flight, three refusals later the second
    token is still there and the next request is served."""
    await api.module("decision", KEY)
    token = await api.tenant("acme", limits=TenantLimits(rate=0.01, burst=2, concurrency=1))
    body = msgspec.json.encode(decide_body()).ljust(200)
    stream, _ = await open_raw(api)
    async with stream, api.client(token) as acme:
        # the first request takes the only slot and waits for the rest of its body
        await stream.send(decide_request(token, body) + body[:10])
        await anyio.sleep(1.0)
        for _ in range(3):
            resp = await acme.post("/api/decide", json=decide_body())
            problem(resp, 429)
            assert resp.headers["ratelimit-policy"].startswith('"concurrency";q=1')
        await stream.send(body[10:])
        assert (await read_response(stream, timeout=3)).startswith(b"HTTP/1.1 200 ")
        resp = await acme.post("/api/decide", json=decide_body())
        assert resp.status_code == 200, resp.text


async def test_json_routes_require_a_json_content_type(api: Api) -> None:
    """The JSON routes refuse a body that is not declared ``application/json`` (missing,
    ``text/plain``, form-encoded) with a 415 problem, before deciding or storing anything;
    the media type is case-insensitive and may carry parameters."""
    h, aid = await api.module("decision", KEY)
    body = msgspec.json.encode(decide_body())
    async with (
        api.client(await api.tenant("acme")) as acme,
        api.client(await api.tenant("ops", operator=True)) as ops,
    ):
        for headers in (
            {},
            {"content-type": "text/plain"},
            {"content-type": "application/x-www-form-urlencoded"},
            {"content-type": "application/jsonx"},
        ):
            resp = await acme.post("/api/decide", content=body, headers=headers)
            assert problem(resp, 415)["type"].endswith("unsupported-media-type")
        for media in ("application/json", "Application/JSON; charset=utf-8"):
            resp = await acme.post("/api/decide", content=body, headers={"content-type": media})
            assert resp.status_code == 200, resp.text
        plain = {"content-type": "text/plain"}
        pin = {
            "org": KEY.org,
            "domain": "credit",
            "action": "other",
            "world_model_version": "v1",
            "content_hash": h,
        }
        problem(
            await ops.post("/api/modules/pins", content=msgspec.json.encode(pin), headers=plain),
            415,
        )
        problem(await ops.post("/api/modules/approvals", content=b"{}", headers=plain), 415)
        problem(
            await ops.post(
                f"/api/modules/approvals/{aid}/revoke", content=b'{"reason": "x"}', headers=plain
            ),
            415,
        )
    assert api.sql("SELECT count(*) FROM core.module_pins") == [(1,)]
    assert api.sql("SELECT revoked_at FROM core.module_approvals") == [(None,)]
