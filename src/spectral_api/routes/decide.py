"""``POST /api/decide``: run the tenant's pinned, approved module on an input document."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from spectral_api.auth import PRINCIPAL_KEY
from spectral_api.errors import BadRequest, HttpProblem, handle_exception
from spectral_core.errors import ModuleNotFound, SpectralError, TenantError
from spectral_core.modules import ModuleKey
from spectral_core.sandbox.depth import exceeds_depth, may_exceed_depth
from spectral_core.tenants import Principal
from spectral_core.tracing import leaf_tracer

from ._body import KeyField, check_key_fields, decode, is_key_text, read_asgi_body, require_json

__all__ = [
    "DECIDE_PATH",
    "DecideEndpoint",
    "DecideRequest",
    "DecideResponse",
    "DecideShortcut",
    "decide_routes",
]

log = structlog.get_logger("spectral.api")

DECIDE_PATH: Final = "/api/decide"
_KEY_FIELDS: Final = ("domain", "action", "world_model_version", "org")


class DecideRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The request body.  ``org`` is optional: it comes from the API key."""

    domain: KeyField
    action: KeyField
    world_model_version: KeyField
    input: dict[str, Any]
    org: KeyField | None = None

    def __post_init__(self) -> None:
        if not is_key_text(self.domain + self.action + self.world_model_version + (self.org or "")):
            check_key_fields(self, _KEY_FIELDS)  # raises, naming the first bad field


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


class DecideEndpoint:
    """``POST /api/decide`` as a plain ASGI app: the hottest route skips ``Request`` and
    ``Response`` objects (body read from ``receive``, one pre-built header list).

    It maps its own errors to problem responses with the app's exception handler (before
    anything was sent), so the app can call it straight from its middleware
    (:class:`DecideShortcut`), past Starlette's ``ExceptionMiddleware`` and router; errors
    the handlers do not map (bugs) propagate to ``ServerErrorMiddleware`` as from any route.
    """

    __slots__ = ("_services",)

    def __init__(self) -> None:
        self._services: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            payload = await self._decide(scope, receive)
        except (HttpProblem, SpectralError) as exc:
            response = await handle_exception(Request(scope), exc)
            exc.__traceback__ = None  # as Starlette's handler wrapper does
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(payload)), _JSON],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _decide(self, scope: Scope, receive: Receive) -> bytes:
        """The decision's response body.

        Raises:
            HttpProblem: Bad media type, body, JSON or input depth.
            SpectralError: No module, no approval, a refused or failed call.
        """
        services = self._services
        if services is None:
            services = self._services = scope["app"].state.services
        who = scope.get(PRINCIPAL_KEY)
        if not isinstance(who, Principal):  # pragma: no cover - the middleware guarantees it
            raise TenantError("invalid API key", reason="bad_key")
        require_json(scope)
        body = await read_asgi_body(scope, receive, services.settings.api_max_body_bytes)
        req = decode(body, DecideRequest, _decoder)
        depth = services.budget.json_depth
        if may_exceed_depth(body, depth + 1) and exceeds_depth(req.input, depth):
            raise BadRequest(f"input nests deeper than {depth} arrays/objects", limit=depth)
        if req.org is not None and req.org != who.org:
            # another org's module is indistinguishable from a missing one
            raise ModuleNotFound()
        key = ModuleKey(
            org=who.org,
            domain=req.domain,
            action=req.action,
            world_model_version=req.world_model_version,
        )
        compiled = await services.cache.resolve(key)
        # inline and batched with the other requests' calls when short, else in a thread;
        # a span only under a recorded request span (ADR 0044)
        spans = leaf_tracer()
        if spans is None:
            result = await services.runner.run(
                compiled, _encoder.encode(req.input), services.budget, who.org
            )
        else:
            with spans.start_as_current_span(
                "sandbox.run", attributes={"spectral.content_hash": compiled.content_hash}
            ):
                result = await services.runner.run(
                    compiled, _encoder.encode(req.input), services.budget, who.org
                )
        usage = result.usage
        services.metrics.sandbox_usage(usage.fuel_consumed, usage.wall_time_us)
        return _encoder.encode(
            DecideResponse(
                decision=msgspec.Raw(result.output),
                content_hash=compiled.content_hash,
                usage=DecideUsage(
                    fuel=usage.fuel_consumed,
                    wall_time_us=usage.wall_time_us,
                    memory_bytes=usage.memory_bytes,
                ),
            )
        )


class DecideShortcut:
    """``POST /api/decide`` straight to its endpoint; everything else to the app.

    The innermost of the app's middleware: the hottest route skips Starlette's
    ``ExceptionMiddleware`` (a ``Request`` and a send wrapper per request) and the router
    (ADR 0046).  The endpoint maps its own errors with the same handler, and the route stays
    in the router, which still answers the other methods (405) and paths.

    Args:
        app: The rest of the application (the exception middleware and the router).
        endpoint: The app's decide endpoint (the one its route holds).
    """

    __slots__ = ("app", "endpoint")

    def __init__(self, app: ASGIApp, *, endpoint: DecideEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == DECIDE_PATH and scope["method"] == "POST":
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


_JSON: Final = (b"content-type", b"application/json")


def decide_routes(endpoint: DecideEndpoint | None = None) -> list[BaseRoute]:
    """The decide route (``endpoint``: the app's instance, shared with its
    :class:`DecideShortcut`)."""
    return [Route(DECIDE_PATH, endpoint or DecideEndpoint(), methods=["POST"])]
