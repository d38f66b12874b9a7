"""Bounded body reading and typed JSON decoding shared by the routes."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.types import Receive, Scope

from spectral_api.errors import (
    BadRequest,
    PayloadTooLarge,
    SchemaViolation,
    UnsupportedMediaType,
)

__all__ = [
    "KeyField",
    "check_key_fields",
    "decode",
    "is_key_text",
    "read_asgi_body",
    "read_body",
    "require_json",
]

#: a module-key field (org, domain, action, world_model_version): 1..200 printable ASCII
#: characters without spaces (``!`` to ``~``).  The characters are checked by
#: :func:`check_key_fields` from the struct's ``__post_init__``: three ``str`` tests, where
#: a msgspec ``pattern`` costs a regex search per field (and ``$`` let a trailing newline in).
KeyField = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

T = TypeVar("T")
_PATH = re.compile(r"at `\$\.?([^`]*)`")


def require_json(scope: Scope) -> None:
    """Refuse (415) a request whose ``Content-Type`` is not ``application/json``.

    The media type is compared case-insensitively and parameters (``charset=utf-8``) are
    ignored; a missing header is refused too (the body is always JSON on these routes).

    Raises:
        UnsupportedMediaType: Missing or another media type.
    """
    for name, value in scope["headers"]:
        if name == b"content-type":
            if value.partition(b";")[0].strip().lower() == b"application/json":
                return
            break
    raise UnsupportedMediaType("expected Content-Type: application/json", accept="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it exceeds ``limit`` bytes.

    ``Content-Length`` is checked first; a chunked body is counted while it streams, so an
    oversize body is never buffered whole.

    Raises:
        PayloadTooLarge: More than ``limit`` bytes.
        BadRequest: An invalid ``Content-Length`` or a disconnect mid-body.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # "²" is a digit to str
            raise BadRequest("invalid Content-Length header")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
            chunks.append(chunk)
    except PayloadTooLarge:
        raise
    except Exception as exc:  # ClientDisconnect and friends
        raise BadRequest("could not read the request body") from exc
    return b"".join(chunks)


async def read_asgi_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """:func:`read_body` on the raw ASGI channel (no ``Request``), for hot routes.

    The same checks, in the same order, with the same errors.

    Raises:
        PayloadTooLarge: More than ``limit`` bytes.
        BadRequest: An invalid ``Content-Length`` or a disconnect mid-body.
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise BadRequest("invalid Content-Length header")
            if int(value) > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
            break
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the usual case: one message
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] != "http.request":  # http.disconnect
            raise BadRequest("could not read the request body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def is_key_text(text: str) -> bool:
    """Whether ``text`` is printable ASCII without spaces (the characters of a key field)."""
    return text.isascii() and text.isprintable() and " " not in text


def check_key_fields(obj: object, names: tuple[str, ...]) -> None:
    """Refuse a key field that is not printable ASCII without spaces (``None`` is skipped).

    Raises:
        ValueError: Naming the first bad field as msgspec does (``at `$.<name>```); msgspec
            turns it into a ``ValidationError`` while decoding, :func:`decode` into a 422.
    """
    values = [getattr(obj, name) for name in names]
    if is_key_text("".join(v for v in values if v is not None)):
        return  # the usual case: one test over all fields
    for name, value in zip(names, values, strict=True):
        if value is not None and not is_key_text(value):
            raise ValueError(
                f"Expected `str` of printable ASCII characters without spaces - at `$.{name}`"
            )


def decode(body: bytes, typ: type[T], decoder: msgspec.json.Decoder[Any] | None = None) -> T:
    """Decode JSON into ``typ``: malformed JSON is 400, a schema violation 422 (with field).

    Raises:
        BadRequest: Not JSON.
        SchemaViolation: Valid JSON of the wrong shape (``field`` names the path).
    """
    if not body:
        raise BadRequest("request body is empty; expected a JSON document")
    try:
        if decoder is not None:
            return decoder.decode(body)  # type: ignore[no-any-return]
        return msgspec.json.decode(body, type=typ)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _PATH.search(message)
        field = match.group(1) if match else ""
        raise SchemaViolation(message, field=field or "$") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
