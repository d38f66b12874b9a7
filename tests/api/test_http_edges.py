"""The HTTP tier at its edges (issue 16): operator route ids, rate quota on refusals,
content types, oversize heads, slow and idle clients, the connection cap."""

from __future__ import annotations

from collections.abc import Callable

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


async def closed_within(stream: anyio.abc.SocketStream, seconds: float) -> tuple[bool, bytes]:
    """``(closed, data)``: whether the server closed the connection within ``seconds``, and
    what it sent before."""
    data = b""
    with anyio.move_on_after(seconds):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return True, data
    return False, data


def problem_reply(raw: bytes, status: int) -> dict[str, object]:
    """The problem+json body of a raw HTTP/1.1 reply with ``status`` and Connection: close."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), raw[:300]
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    doc = msgspec.json.decode(body)
    assert doc["status"] == status and doc["title"] and doc["type"].startswith("urn:spectral")
    return doc  # type: ignore[no-any-return]


async def send_and_read(api: Api, payload: bytes, timeout: float = 30) -> bytes:
    """Send ``payload`` (possibly huge: sending stops when the server closes) while reading
    the reply."""
    stream, _ = await open_raw(api)
    reply = b""
    async with stream:

        async def send() -> None:
            view = memoryview(payload)
            try:
                for i in range(0, len(view), 65536):
                    await stream.send(bytes(view[i : i + 65536]))
            except (anyio.BrokenResourceError, ConnectionError, anyio.ClosedResourceError):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            reply = await read_response(stream, timeout)
            tg.cancel_scope.cancel()
    return reply


async def test_oversize_request_head_is_431_problem(api: Api) -> None:
    """A request line or header section over SPECTRAL_API_MAX_HEADER_BYTES (16 KiB) is
    refused with a 431 problem and the connection closed, after at most the limit was
    parsed (one 32 MiB header used to be buffered whole and answered 200); a head just
    under the limit is served."""
    limit = api.settings.api_max_header_bytes
    one_header = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (32 << 20) + b"\r\n\r\n"
    doc = problem_reply(await send_and_read(api, one_header), 431)
    assert doc["limit"] == limit and doc["type"].endswith("header-too-large")  # type: ignore[union-attr]
    long_line = b"GET /health?" + b"q" * (64 << 10) + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    problem_reply(await send_and_read(api, long_line), 431)
    many = b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 4000 + b"\r\n"
    problem_reply(await send_and_read(api, many), 431)
    fits = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: "
    fits += b"a" * (limit - len(fits) - 4) + b"\r\n\r\n"
    assert len(fits) == limit
    assert (await send_and_read(api, fits)).startswith(b"HTTP/1.1 200 ")


async def test_idle_slowloris_and_slow_body_connections_are_closed(
    api_factory: Callable[..., Api],
) -> None:
    """With 1 s timeouts: connections that never send a byte are closed, a head trickling
    in one header line at a time gets a 408 problem, a body stalled after 10 bytes gets a
    408 problem, and a keep-alive connection idle after its response is closed; all within
    a few seconds (they all used to stay open), while /health stays served."""
    api = api_factory(api_idle_timeout_s=1.0, api_header_timeout_s=1.0, api_body_timeout_s=1.0)
    token = await api.tenant("acme")
    idle = [(await open_raw(api))[0] for _ in range(30)]
    slowloris = [(await open_raw(api))[0] for _ in range(10)]
    slow_body = [(await open_raw(api))[0] for _ in range(5)]
    keep_alive, _ = await open_raw(api)
    for stream in slow_body:
        await stream.send(decide_request(token, b"x" * 200) + b'{"domain":')
    await keep_alive.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    started = anyio.current_time()

    async def trickle(stream: anyio.abc.SocketStream) -> None:
        with anyio.move_on_after(15):
            try:
                await stream.send(b"GET /health HTTP/1.1\r\n")
                while True:
                    await anyio.sleep(0.2)
                    await stream.send(b"X-Slow: 1\r\n")
            except (anyio.BrokenResourceError, ConnectionError, anyio.ClosedResourceError):
                pass

    outcomes: dict[str, list[tuple[bool, bytes]]] = {"idle": [], "head": [], "body": []}

    async def watch(kind: str, stream: anyio.abc.SocketStream) -> None:
        outcomes[kind].append(await closed_within(stream, 15))

    async with anyio.create_task_group() as tg:
        for stream in slowloris:
            tg.start_soon(trickle, stream)
        for kind, streams in (("idle", idle), ("head", slowloris), ("body", slow_body)):
            for stream in streams:
                tg.start_soon(watch, kind, stream)
        async with api.client() as client:
            assert (await client.get("/health")).status_code == 200
        closed, reply = await closed_within(keep_alive, 15)
        assert closed and reply.startswith(b"HTTP/1.1 200 ")
    elapsed = anyio.current_time() - started
    assert all(closed and data == b"" for closed, data in outcomes["idle"])
    for kind in ("head", "body"):
        for closed, data in outcomes[kind]:
            assert closed
            assert problem_reply(data, 408)["type"].endswith("request-timeout")  # type: ignore[union-attr]
    assert elapsed < 10, elapsed
    for stream in [*idle, *slowloris, *slow_body, keep_alive]:
        await stream.aclose()


async def test_a_stalled_body_frees_its_tenants_concurrency_slot(
    api_factory: Callable[..., Api],
) -> None:
    """A tenant with a concurrency cap of 1 whose body stalls is refused (429) while it
    stalls, and served again once the body timeout (1 s) has closed the stalled request:
    the slot does not stay held by a client that stopped sending."""
    api = api_factory(api_body_timeout_s=1.0)
    await api.module("decision", KEY)
    token = await api.tenant("acme", limits=TenantLimits(rate=1000, burst=1000, concurrency=1))
    stream, _ = await open_raw(api)
    async with stream, api.client(token) as acme:
        await stream.send(decide_request(token, b"x" * 200) + b'{"domain":')
        await anyio.sleep(0.3)
        problem(await acme.post("/api/decide", json=decide_body()), 429)
        closed, reply = await closed_within(stream, 6)  # the header timeout is 10 s
        assert closed
        problem_reply(reply, 408)
        resp = await acme.post("/api/decide", json=decide_body())
        assert resp.status_code == 200, resp.text


async def test_connections_beyond_the_cap_get_503_at_once(
    api_factory: Callable[..., Api],
) -> None:
    """With SPECTRAL_API_MAX_CONNECTIONS=5, a sixth open connection is answered 503
    (problem, Retry-After) and closed without reading a request; once one of the five is
    closed, a new connection is served."""
    api = api_factory(api_max_connections=5, api_idle_timeout_s=30.0)
    held = [(await open_raw(api))[0] for _ in range(5)]
    await anyio.sleep(0.2)
    extra, _ = await open_raw(api)
    closed, reply = await closed_within(extra, 10)
    assert closed
    assert problem_reply(reply, 503)["type"].endswith("too-many-connections")  # type: ignore[union-attr]
    assert b"\r\nretry-after: 1\r\n" in reply.lower()
    await extra.aclose()
    await held.pop().aclose()
    await anyio.sleep(0.2)
    reply = await send_and_read(
        api, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 200 ")
    for stream in held:
        await stream.aclose()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/decide HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"NOT A REQUEST LINE\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"POST /api/decide HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
    ids=["content-length", "two-lengths", "request-line", "version", "chunk", "path"],
)
async def test_requests_the_parser_refuses_get_a_400_problem(
    api: Api, request_bytes: bytes
) -> None:
    """What the HTTP parser refuses (bad Content-Length, a bad request line or version, a
    bad chunk, a non-ASCII path) is a 400 application/problem+json reply, not uvicorn's
    text/plain, and the connection is closed."""
    doc = problem_reply(await send_and_read(api, request_bytes), 400)
    assert doc["type"].endswith("malformed-request")  # type: ignore[union-attr]


async def test_oversize_chunked_trailer_is_431_problem(api: Api) -> None:
    """A chunked body's trailer section is header fields too: one 8 MiB trailer (which the
    parser buffers at quadratic cost, as it did a header) is refused with a 431 problem
    after at most about the head limit of trailer bytes."""
    token = await api.tenant("acme")
    head = (
        b"POST /api/decide HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    trailer = b"2\r\n{}\r\n0\r\nX-Trailer: " + b"a" * (8 << 20) + b"\r\n\r\n"
    doc = problem_reply(await send_and_read(api, head + trailer), 431)
    assert doc["type"].endswith("header-too-large")  # type: ignore[union-attr]
