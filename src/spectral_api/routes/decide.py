"""``POST /api/decide``: run the tenant's pinned, approved module on an input document."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from spectral_api.auth import principal
from spectral_core.errors import ModuleNotFound
from spectral_core.modules import ModuleKey

from ._body import decode, read_body

__all__ = ["DecideRequest", "DecideResponse", "decide_routes"]

log = structlog.get_logger("spectral.api")

#: module-key fields: printable ASCII without spaces, 1..200 characters
KeyField = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[!-~]+$")]


class DecideRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The request body.  ``org`` is optional: it comes from the API key."""

    domain: KeyField
    action: KeyField
    world_model_version: KeyField
    input: dict[str, Any]
    org: KeyField | None = None


class DecideUsage(msgspec.Struct, frozen=True, kw_only=True):
    fuel: int
    wall_time_us: int
    memory_bytes: int


class DecideResponse(msgspec.Struct, frozen=True, kw_only=True):
    decision: Any
    content_hash: str
    usage: DecideUsage


_decoder = msgspec.json.Decoder(DecideRequest)
_encoder = msgspec.json.Encoder()


async def decide(request: Request) -> Response:
    services = request.app.state.services
    who = principal(request)
    body = await read_body(request, services.settings.api_max_body_bytes)
    req = decode(body, DecideRequest, _decoder)
    if req.org is not None and req.org != who.org:
        # another org's module is indistinguishable from a missing one
        raise ModuleNotFound()
    key = ModuleKey(org=who.org, domain=req.domain, action=req.action,
                    world_model_version=req.world_model_version)
    compiled = await services.cache.resolve(key)
    result = await services.sandbox.run_async(compiled, _encoder.encode(req.input),
                                              services.budget)
    usage = result.usage
    out = DecideResponse(
        decision=msgspec.Raw(result.output), content_hash=compiled.content_hash,
        usage=DecideUsage(fuel=usage.fuel_consumed, wall_time_us=usage.wall_time_us,
                          memory_bytes=usage.memory_bytes))
    return Response(_encoder.encode(out), media_type="application/json")


def decide_routes() -> list[BaseRoute]:
    return [Route("/api/decide", decide, methods=["POST"])]
