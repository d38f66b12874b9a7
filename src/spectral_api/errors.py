"""Errors -> ``application/problem+json`` (RFC 9457), mapped by base class.

The core never knows about HTTP: this table is the only place where a
:class:`~spectral_core.errors.SpectralError` subclass becomes a status code.  The lookup walks
the exception's MRO, so the nearest mapped base class wins.  Bodies never carry secrets,
stack traces or another tenant's data.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from spectral_core.errors import (
    ApprovalError,
    BudgetExceeded,
    ConfigError,
    ContentHashMismatch,
    DatabaseError,
    ModuleError,
    ModuleNotFound,
    ModuleTrap,
    OperatorError,
    PinConflict,
    RateLimited,
    SandboxError,
    SpectralError,
    TenantError,
)

from .ratelimit_headers import rate_limit_headers

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "BadRequest",
    "Forbidden",
    "HttpProblem",
    "HeaderTooLarge",
    "PayloadTooLarge",
    "RequestTimeout",
    "SchemaViolation",
    "TooManyConnections",
    "UnsupportedMediaType",
    "exception_handlers",
    "handle_exception",
    "problem_for",
    "problem_response",
]

log = structlog.get_logger("spectral.api")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_encoder = msgspec.json.Encoder()


class HttpProblem(Exception):
    """An HTTP-level problem raised by the API layer itself (not by the core)."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class BadRequest(HttpProblem):
    """Malformed JSON or an unreadable request."""

    status, slug, title = 400, "malformed-request", "Malformed request"


class SchemaViolation(HttpProblem):
    """Well-formed JSON that does not match the expected schema."""

    status, slug, title = 422, "schema-violation", "Request does not match the schema"


class PayloadTooLarge(HttpProblem):
    """The body exceeds the configured limit."""

    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(HttpProblem):
    """The body has the wrong content type."""

    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class HeaderTooLarge(HttpProblem):
    """The request line and headers exceed ``SPECTRAL_API_MAX_HEADER_BYTES``."""

    status, slug, title = 431, "header-too-large", "Request header fields too large"


class RequestTimeout(HttpProblem):
    """The request head or body did not arrive within its timeout."""

    status, slug, title = 408, "request-timeout", "Request timeout"


class TooManyConnections(HttpProblem):
    """The process already holds ``SPECTRAL_API_MAX_CONNECTIONS`` open connections."""

    status, slug, title = 503, "too-many-connections", "Too many open connections"


class Forbidden(HttpProblem):
    """Authenticated, but not allowed (e.g. a tenant key on an operator route)."""

    status, slug, title = 403, "forbidden", "Forbidden"


#: base class -> (status, slug, title); the nearest class in the MRO wins
_TABLE: Final[dict[type[BaseException], tuple[int, str, str]]] = {
    TenantError: (401, "unauthorized", "Missing or invalid API key"),
    OperatorError: (400, "bad-operator-request", "Operator request refused"),
    ModuleNotFound: (404, "module-not-found", "Module not found"),
    PinConflict: (409, "pin-conflict", "Module key already pinned to other content"),
    ContentHashMismatch: (403, "module-tampered", "Module content does not match its address"),
    ApprovalError: (403, "module-not-approved", "Module is not approved"),
    ModuleError: (422, "module-error", "Invalid module request"),
    BudgetExceeded: (422, "budget-exceeded", "Sandbox budget exhausted"),
    ModuleTrap: (422, "module-trap", "Module failed"),
    SandboxError: (422, "module-refused", "Module refused by the sandbox"),
    RateLimited: (429, "rate-limited", "Too many requests"),
    DatabaseError: (503, "unavailable", "Service temporarily unavailable"),
    ConfigError: (500, "internal", "Internal error"),
    SpectralError: (500, "internal", "Internal error"),
}

#: context attributes that may be shown to the client, per error
_PUBLIC_CONTEXT: Final = (
    "reason",
    "budget",
    "limit",
    "retry_after",
    "field",
    "trap_code",
    "content_hash",
    "approval_id",
)

#: fixed details: identical bodies whatever the cause (e.g. another org's module vs none)
_FIXED_DETAIL: Final[dict[type[BaseException], str]] = {
    TenantError: "missing, malformed, unknown or revoked API key",
    ModuleNotFound: "no module is pinned for this key",
    DatabaseError: "the database is unavailable; retry later",
    ConfigError: "internal error",
    SpectralError: "internal error",
}


def _lookup(exc: BaseException) -> tuple[type[BaseException], tuple[int, str, str]] | None:
    for cls in type(exc).__mro__:
        if cls in _TABLE:
            return cls, _TABLE[cls]
    return None


def problem_for(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` for an exception."""
    headers: dict[str, str] = {}
    if isinstance(exc, HttpProblem):
        body = {
            "type": f"urn:spectral:problem:{exc.slug}",
            "title": exc.title,
            "status": exc.status,
            "detail": exc.detail,
            **exc.extensions,
        }
        return exc.status, body, headers
    if isinstance(exc, HTTPException):
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        body = {
            "type": "about:blank",
            "title": title,
            "status": exc.status_code,
            "detail": str(exc.detail),
        }
        return exc.status_code, body, dict(exc.headers or {})
    found = _lookup(exc)
    if found is None:
        return (
            500,
            {
                "type": "urn:spectral:problem:internal",
                "title": "Internal error",
                "status": 500,
                "detail": "internal error",
            },
            headers,
        )
    cls, (status, slug, title) = found
    detail = _FIXED_DETAIL.get(cls)
    if detail is None:
        detail = getattr(exc, "message", None) or str(exc)
    body = {
        "type": f"urn:spectral:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if status < 500 and cls not in (TenantError, ModuleNotFound):
        context = getattr(exc, "context", {})
        for name in _PUBLIC_CONTEXT:
            value = context.get(name)
            if isinstance(value, str | int | float | bool):
                body[name] = value
    if isinstance(exc, TenantError):
        headers["WWW-Authenticate"] = 'Bearer realm="spectral"'
    if isinstance(exc, RateLimited):
        state = exc.context.get("state")
        retry = float(exc.context.get("retry_after", 1.0))
        if state is not None:
            headers.update(rate_limit_headers(state, retry))
        else:
            headers["Retry-After"] = str(max(1, int(retry + 0.999)))
        body["retry_after"] = round(retry, 3)
    if isinstance(exc, DatabaseError):
        headers["Retry-After"] = "1"
    return status, body, headers


def problem_response(exc: BaseException) -> Response:
    """A ``problem+json`` response for ``exc``."""
    status, body, headers = problem_for(exc)
    return Response(
        _encoder.encode(body), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


async def handle_exception(request: Request, exc: Exception) -> Response:
    """The app's exception handler: ``exc`` as a problem response (5xx logged)."""
    status, _, _ = problem_for(exc)
    if status >= 500:
        log.error(
            "api.error",
            path=request.url.path,
            error_type=type(exc).__name__,
            error=str(exc)[:500],
            exc_info=not isinstance(exc, SpectralError),
        )
    return problem_response(exc)


def exception_handlers() -> dict[Any, Any]:
    """The Starlette exception-handler table."""
    return {
        HTTPException: handle_exception,
        HttpProblem: handle_exception,
        SpectralError: handle_exception,
        Exception: handle_exception,
    }
