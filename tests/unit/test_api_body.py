"""The raw-ASGI body reader of the decide route behaves like the ``Request`` one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from spectral_api.errors import BadRequest, PayloadTooLarge
from spectral_api.routes._body import read_asgi_body, read_body

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def channel(*messages: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def scope(length: bytes | None = None) -> dict[str, Any]:
    headers = [(b"host", b"x")]
    if length is not None:
        headers.append((b"content-length", length))
    return {"type": "http", "headers": headers}


def part(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_one_message_and_chunks_are_read_whole() -> None:
    assert await read_asgi_body(scope(b"5"), channel(part(b"hello")), 10) == b"hello"
    chunks = channel(part(b"he", True), part(b"", True), part(b"llo"))
    assert await read_asgi_body(scope(), chunks, 10) == b"hello"
    assert await read_asgi_body(scope(), channel({"type": "http.request"}), 10) == b""


async def test_oversize_is_refused_by_header_and_while_streaming() -> None:
    with pytest.raises(PayloadTooLarge):
        await read_asgi_body(scope(b"11"), channel(part(b"x" * 11)), 10)
    with pytest.raises(PayloadTooLarge):  # a lying (or absent) Content-Length
        await read_asgi_body(scope(b"1"), channel(part(b"x" * 11)), 10)
    with pytest.raises(PayloadTooLarge):
        await read_asgi_body(scope(), channel(*[part(b"x" * 4, True)] * 3, part(b"")), 10)


async def test_bad_length_and_disconnect_are_bad_requests() -> None:
    for bad in (b"", b"-1", b"1e3", b"\xb2"):
        with pytest.raises(BadRequest):
            await read_asgi_body(scope(bad), channel(part(b"x")), 10)
    with pytest.raises(BadRequest):
        await read_asgi_body(scope(), channel(part(b"x", True), {"type": "http.disconnect"}), 10)


async def test_request_reader_refuses_non_ascii_digits_too() -> None:
    """``Content-Length: ²`` (latin-1 0xb2, a digit to ``str.isdigit``) is a 400, not a 500."""
    from starlette.requests import Request

    request = Request(scope(b"\xb2"), channel(part(b"x")))
    with pytest.raises(BadRequest):
        await read_body(request, 10)
    assert await read_body(Request(scope(b"1"), channel(part(b"x"))), 10) == b"x"


@pytest.mark.parametrize("bad", ["has space", "tab\there", "newline\n", "é", "\x7f", "\x00"])
@pytest.mark.parametrize("field", ["domain", "action", "world_model_version", "org"])
def test_key_fields_are_printable_ascii_without_spaces(bad: str, field: str) -> None:
    """Module-key fields of ``/api/decide`` and of a pin are 422s naming the field when
    they hold a space, a control character (a trailing newline too, which the regex they
    replaced let through) or non-ASCII; the same document with good fields decodes."""
    import msgspec

    from spectral_api.errors import SchemaViolation
    from spectral_api.routes._body import decode
    from spectral_api.routes.decide import DecideRequest
    from spectral_api.routes.modules import PinRequest

    good = {"org": "acme", "domain": "credit", "action": "approve", "world_model_version": "v1"}
    assert decode(msgspec.json.encode({**good, "input": {}}), DecideRequest).org == "acme"
    pin = {**good, "content_hash": "0" * 64}
    assert decode(msgspec.json.encode(pin), PinRequest).domain == "credit"
    for typ, doc in ((DecideRequest, {**good, "input": {}}), (PinRequest, pin)):
        with pytest.raises(SchemaViolation) as caught:
            decode(msgspec.json.encode({**doc, field: bad}), typ)
        assert caught.value.extensions["field"] == field, caught.value.detail
