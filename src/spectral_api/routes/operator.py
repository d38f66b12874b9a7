"""The operator console's JSON API under ``/api/operator/`` (issue 18, ADR 0038).

Every route needs an operator: a Bearer operator API key (scripts) or the console's
session cookie (browsers; :mod:`spectral_api.auth` resolves it and checks the CSRF header
of every POST).  A tenant key gets 403 on every one of them, no credential 401.  The logic
lives in :mod:`spectral_core.operator`; these handlers parse, call and encode.  Bad input
is a 400 problem and changes nothing; every action is audited in its own transaction.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from spectral_api.auth import require_operator, session_of
from spectral_api.errors import BadRequest, Forbidden, SchemaViolation
from spectral_core.errors import ModuleNotFound
from spectral_core.operator import (
    SESSION_COOKIE,
    OperatorViews,
    audit,
    close_session,
    csrf_token,
    deploy_verdict,
    open_session,
    redrive_dead_rows,
    redrive_dead_turns,
    revoke_approval,
)

from ._body import decode, read_body, require_json

__all__ = ["operator_routes"]

_encoder = msgspec.json.Encoder()


class LoginRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class RedriveRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    generation: Annotated[int, msgspec.Meta(ge=1)]
    ids: list[int] | None = None
    all: bool = False


class TurnRedriveRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    generation: Annotated[int, msgspec.Meta(ge=1)]
    ids: list[str] | None = None
    all: bool = False


class RevokeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


def _json(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encoder.encode(obj),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _views(request: Request) -> OperatorViews:
    views: OperatorViews = request.app.state.services.operator
    return views


async def _body(request: Request, typ: type[Any], *, optional: bool = False) -> Any:
    """The JSON body as ``typ``; any malformed or mistyped body is a 400 (the contract's
    'bad input'), naming the field."""
    raw = await read_body(request, request.app.state.services.settings.api_max_body_bytes)
    if optional and not raw.strip():
        return typ()
    require_json(request.scope)
    try:
        return decode(raw, typ)
    except SchemaViolation as exc:
        raise BadRequest(exc.detail, **exc.extensions) from None


def _int_param(request: Request, name: str, *, required: bool = False) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise BadRequest(f"query parameter {name} is required", field=name)
        return None
    # ASCII digits only (str.isdigit() also accepts "²"), at most 18 of them (a bigint)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < 1:
        raise BadRequest(f"query parameter {name} must be a positive integer", field=name)
    return int(raw)


def _cookie_header(request: Request, value: str, max_age: int) -> str:
    settings = request.app.state.services.settings
    parts = [
        f"{SESSION_COOKIE}={value}",
        "Path=/api/",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if settings.console_cookie_secure or request.url.scheme == "https":
        parts.append("Secure")
    return "; ".join(parts)


# -- session ----------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """Exchange an operator API key (in the body, never the URL) for a session cookie."""
    services = request.app.state.services
    req = await _body(request, LoginRequest)
    who = await services.authenticator.authenticate(req.token)  # TenantError: 401
    if not who.operator:
        raise Forbidden("this route needs an operator API key")
    ttl = services.settings.console_session_ttl_s
    session_id, session = await open_session(services.db, who, ttl_s=ttl)
    return _json(
        {
            "operator": who.key_id,
            "label": session.label,
            "csrf": csrf_token(session_id),
            "expires_at": session.expires_at,
        },
        headers={"Set-Cookie": _cookie_header(request, session_id, int(ttl))},
    )


async def current_session(request: Request) -> Response:
    """Who is logged in: the session's operator, its CSRF token and expiry (401 without)."""
    who = require_operator(request)
    found = session_of(request)
    if found is None:  # a Bearer key: no session, no CSRF needed
        return _json({"operator": who.key_id, "label": None, "csrf": None, "expires_at": None})
    session_id, session = found
    return _json(
        {
            "operator": who.key_id,
            "label": session.label,
            "csrf": csrf_token(session_id),
            "expires_at": session.expires_at,
        }
    )


async def logout(request: Request) -> Response:
    """End the session: its row is deleted and the cookie cleared."""
    require_operator(request)
    found = session_of(request)
    if found is not None:
        await close_session(request.app.state.services.db, found[0])
    return Response(
        status_code=204,
        headers={"Set-Cookie": _cookie_header(request, "", 0), "Cache-Control": "no-store"},
    )


# -- reads ------------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    require_operator(request)
    services = request.app.state.services
    health = msgspec.to_builtins(await services.health.report())
    gens = await _views(request).generations()
    return _json(
        {
            "version": services.settings.running_version,
            "generation": services.generation,
            "health": health,
            "deploy": deploy_verdict(health, gens["generations"]),
        }
    )


async def generations(request: Request) -> Response:
    require_operator(request)
    return _json(await _views(request).generations())


async def workers(request: Request) -> Response:
    require_operator(request)
    return _json(await _views(request).workers(_int_param(request, "generation")))


async def dead(request: Request) -> Response:
    require_operator(request)
    generation = _int_param(request, "generation", required=True)
    assert generation is not None
    limit = _int_param(request, "limit") or 100
    return _json(await _views(request).dead_rows(generation, limit))


async def modules(request: Request) -> Response:
    require_operator(request)
    return _json(await _views(request).modules())


async def tenants(request: Request) -> Response:
    require_operator(request)
    return _json(await _views(request).tenants())


async def agent(request: Request) -> Response:
    require_operator(request)
    limit = _int_param(request, "limit") or 100
    return _json(await _views(request).agent(_int_param(request, "generation"), limit))


async def audit_log(request: Request) -> Response:
    require_operator(request)
    limit = _int_param(request, "limit") or 100
    entries = await audit.list_entries(request.app.state.services.db, limit=limit)
    return _json({"entries": entries})


# -- actions ----------------------------------------------------------------------------


async def redrive(request: Request) -> Response:
    """Dead rows of one generation (``ids`` or ``all``) back to pending, audited."""
    who = require_operator(request)
    req = await _body(request, RedriveRequest)
    done = await redrive_dead_rows(
        request.app.state.services.db,
        key_id=who.key_id,
        generation=req.generation,
        ids=req.ids,
        all_rows=req.all,
    )
    return _json({"generation": req.generation, "redriven": len(done), "ids": done})


async def revoke(request: Request) -> Response:
    """Revoke a module approval, audited; ``/api/decide`` refuses it within 1 s."""
    who = require_operator(request)
    raw = request.path_params["approval_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ModuleNotFound("no approval with this id")
    req = await _body(request, RevokeRequest, optional=True)
    revoked = await revoke_approval(
        request.app.state.services.db, key_id=who.key_id, approval_id=int(raw), reason=req.reason
    )
    return _json({"revoked": int(raw), "already_revoked": not revoked})


async def agent_redrive(request: Request) -> Response:
    """Dead World Agent turns of one generation (``ids`` or ``all``) back to pending."""
    who = require_operator(request)
    req = await _body(request, TurnRedriveRequest)
    done = await redrive_dead_turns(
        request.app.state.services.db,
        key_id=who.key_id,
        generation=req.generation,
        ids=req.ids,
        all_rows=req.all,
    )
    return _json({"generation": req.generation, "redriven": len(done), "ids": done})


def operator_routes() -> list[BaseRoute]:
    """Every route of the operator API (the tests walk this list: a new route is covered
    by the tenant-key and no-credential checks without being named)."""
    return [
        Route("/api/operator/session", login, methods=["POST"]),
        Route("/api/operator/session", current_session, methods=["GET"]),
        Route("/api/operator/session/logout", logout, methods=["POST"]),
        Route("/api/operator/overview", overview, methods=["GET"]),
        Route("/api/operator/generations", generations, methods=["GET"]),
        Route("/api/operator/workers", workers, methods=["GET"]),
        Route("/api/operator/dead", dead, methods=["GET"]),
        Route("/api/operator/dead/redrive", redrive, methods=["POST"]),
        Route("/api/operator/modules", modules, methods=["GET"]),
        Route("/api/operator/approvals/{approval_id}/revoke", revoke, methods=["POST"]),
        Route("/api/operator/tenants", tenants, methods=["GET"]),
        Route("/api/operator/agent", agent, methods=["GET"]),
        Route("/api/operator/agent/redrive", agent_redrive, methods=["POST"]),
        Route("/api/operator/audit", audit_log, methods=["GET"]),
    ]
