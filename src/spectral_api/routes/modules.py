"""Operator routes: upload blobs, pin, add and revoke approvals, list (operator keys only)."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from spectral_api.auth import require_operator
from spectral_api.errors import BadRequest
from spectral_core.errors import ModuleNotFound
from spectral_core.modules import Approval, ModuleKey
from spectral_core.operator import revoke_approval

from ._body import KeyField, check_key_fields, decode, read_body, require_json

__all__ = ["module_routes"]

Hash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]

#: largest module accepted by the upload route (the sandbox's own cap)
MAX_MODULE_BYTES = 16 * 1024 * 1024


class PinRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    org: KeyField
    domain: KeyField
    action: KeyField
    world_model_version: KeyField
    content_hash: Hash

    def __post_init__(self) -> None:
        check_key_fields(self, ("org", "domain", "action", "world_model_version"))


class RevokeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


_encoder = msgspec.json.Encoder()


def _json(obj: object, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


async def put_blob(request: Request) -> Response:
    """Store module bytes (validated by compiling them first); returns the content hash."""
    require_operator(request)
    services = request.app.state.services
    data = await read_body(request, MAX_MODULE_BYTES)
    if not data:
        raise BadRequest("request body is empty; expected WebAssembly module bytes")
    compiled = await anyio.to_thread.run_sync(services.sandbox.compile, data)
    content_hash = await services.store.put_blob(data)
    return _json({"content_hash": content_hash, "size": compiled.size}, 201)


async def pin(request: Request) -> Response:
    require_operator(request)
    services = request.app.state.services
    require_json(request.scope)
    req = decode(await read_body(request, services.settings.api_max_body_bytes), PinRequest)
    key = ModuleKey(
        org=req.org,
        domain=req.domain,
        action=req.action,
        world_model_version=req.world_model_version,
    )
    created = await services.store.pin(key, req.content_hash)
    return _json(
        {"key": key, "content_hash": req.content_hash, "created": created}, 201 if created else 200
    )


async def approve(request: Request) -> Response:
    """Store an approval signed offline; it must verify against the trusted keys."""
    require_operator(request)
    services = request.app.state.services
    require_json(request.scope)
    approval = decode(await read_body(request, services.settings.api_max_body_bytes), Approval)
    approval_id = await services.store.add_approval(approval, services.keyring)
    return _json(
        {
            "id": approval_id,
            "key_id": approval.key_id,
            "content_hash": approval.content_hash,
            "expires_at": approval.expires_at,
        },
        201,
    )


async def revoke(request: Request) -> Response:
    """Revoke an approval, audited in the revoke's transaction (as the console's route)."""
    who = require_operator(request)
    services = request.app.state.services
    raw = request.path_params["approval_id"]
    # ASCII digits only: str.isdigit() also accepts "١" (which int() reads as 1) and "²"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ModuleNotFound("no approval with this id")
    body = await read_body(request, services.settings.api_max_body_bytes)
    if body.strip():  # the body is optional; when there is one, it is JSON
        require_json(request.scope)
        req = decode(body, RevokeRequest)
    else:
        req = RevokeRequest()
    revoked = await revoke_approval(
        services.db, key_id=who.key_id, approval_id=int(raw), reason=req.reason
    )
    return _json({"id": int(raw), "revoked": True, "already_revoked": not revoked})


async def list_modules(request: Request) -> Response:
    require_operator(request)
    services = request.app.state.services
    org = request.query_params.get("org") or None
    modules = await services.store.list_modules(org)
    approvals = await services.store.list_approvals(org)
    return _json({"modules": modules, "approvals": approvals})


def module_routes() -> list[BaseRoute]:
    return [
        Route("/api/modules", list_modules, methods=["GET"]),
        Route("/api/modules/blobs", put_blob, methods=["PUT"]),
        Route("/api/modules/pins", pin, methods=["POST"]),
        Route("/api/modules/approvals", approve, methods=["POST"]),
        Route("/api/modules/approvals/{approval_id}/revoke", revoke, methods=["POST"]),
    ]
