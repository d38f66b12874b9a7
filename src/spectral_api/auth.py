"""Authentication and per-tenant limits for every ``/api/*`` request (pure ASGI).

For each request under ``/api/``: the ``Authorization: Bearer <token>`` header is resolved
to a :class:`~spectral_core.tenants.Principal` (401 otherwise), then the tenant's rate
(GCRA) and concurrency cap are applied (429 with ``Retry-After`` and the ``RateLimit`` /
``RateLimit-Policy`` headers otherwise).  Admitted responses carry the ``RateLimit``
headers too.  The principal is put in the ASGI scope under ``"spectral.principal"``;
routes read it with :func:`principal`.  Nothing outside ``/api/`` (``/health``) is touched.

Under ``/api/operator/`` a request without an ``Authorization`` header may instead carry
the operator console's session cookie (ADR 0038): the session is resolved in
``core.operator_sessions`` to its operator key's principal, and every request with a
method other than GET/HEAD must carry the session's ``X-CSRF-Token`` (403 otherwise).  The
login itself (``POST /api/operator/session``) is the one ``/api/*`` route reached without a
credential: it authenticates the key in its body.  A 429 is also counted per tenant in the
process's :class:`~spectral_core.operator.RecentThrottles` (never as a metric label).

Limits are fleet-wide (ADR 0032, ``docs/reference/ratelimit.md``): each process enforces
its part of them, one of the live API processes its registry heartbeat counts.  Each
distinct :class:`~spectral_core.ratelimit.TenantLimits` value gets its own limiter pair,
so a tenant's overrides in ``core.tenants`` apply as soon as its key lookup is refreshed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spectral_core.errors import DatabaseError, RateLimited, SpectralError, TenantError
from spectral_core.operator import SESSION_COOKIE, OperatorSession, RecentThrottles, csrf_matches
from spectral_core.ratelimit import ConcurrencyLimiter, RateLimiter, TenantLimits, fleet_share
from spectral_core.tenants import Authenticator, Principal

from .errors import Forbidden, problem_response
from .ratelimit_headers import rate_limit_header_pairs

__all__ = [
    "LOGIN_PATH",
    "OPERATOR_PREFIX",
    "PRINCIPAL_KEY",
    "SESSION_KEY",
    "ApiAuthMiddleware",
    "TenantLimiter",
    "principal",
    "require_operator",
    "session_of",
]

PRINCIPAL_KEY: Final = "spectral.principal"
#: ``(session id, OperatorSession)`` of a request authenticated by the console's cookie
SESSION_KEY: Final = "spectral.operator_session"
OPERATOR_PREFIX: Final = "/api/operator/"
#: the console's login: the only ``/api/*`` route reached without a credential
LOGIN_PATH: Final = "/api/operator/session"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})

SessionResolver = Callable[[str], Awaitable[OperatorSession | None]]


def principal(request: Request) -> Principal:
    """The authenticated caller of an ``/api/*`` request."""
    found = request.scope.get(PRINCIPAL_KEY)
    if not isinstance(found, Principal):  # pragma: no cover - the middleware guarantees it
        raise TenantError("invalid API key", reason="bad_key")
    return found


def session_of(request: Request) -> tuple[str, OperatorSession] | None:
    """``(session id, session)`` when the request was authenticated by the console's
    cookie, None for a Bearer key."""
    found = request.scope.get(SESSION_KEY)
    return found if isinstance(found, tuple) else None


def require_operator(request: Request) -> Principal:
    """The caller, who must hold an operator key.

    Raises:
        Forbidden: A tenant key on an operator route.
    """
    who = principal(request)
    if not who.operator:
        raise Forbidden("this route needs an operator API key")
    return who


class TenantLimiter:
    """Rate + concurrency limiters per distinct limits value (defaults or overrides)."""

    def __init__(self, default: TenantLimits) -> None:
        self.default = default
        self._pairs: dict[TenantLimits, tuple[RateLimiter, ConcurrencyLimiter]] = {}
        self._share = (1, 0)

    def _pair(self, limits: TenantLimits) -> tuple[RateLimiter, ConcurrencyLimiter]:
        pair = self._pairs.get(limits)
        if pair is None:
            rate, concurrency = RateLimiter(limits), ConcurrencyLimiter(limits)
            if self._share != (1, 0):
                rate.set_share(*self._share)
                concurrency.set_share(*self._share)
            pair = self._pairs[limits] = (rate, concurrency)
        return pair

    @property
    def share(self) -> tuple[int, int]:
        """``(live, rank)``: this process enforces its part of fleet-wide limits."""
        return self._share

    def set_fleet(self, live: int, rank: int) -> None:
        """Enforce this process's part of every tenant's fleet-wide limits, as one of
        ``live`` API processes at ``rank`` (ADR 0032); called by the API registry's
        heartbeat, never on a request's path.

        Raises:
            ConfigError: A bad ``live`` / ``rank`` (nothing changed).
        """
        fleet_share(self.default, live, rank)  # validates before anything changes
        self._share = (live, rank)
        for rate, concurrency in list(self._pairs.values()):
            rate.set_share(live, rank)
            concurrency.set_share(live, rank)

    def admit(self, who: Principal) -> tuple[Any, list[tuple[bytes, bytes]]]:
        """Count one request; return ``(slot, headers)`` (ASGI header pairs).

        The concurrency slot is taken first: a request the cap refuses costs no rate
        token, and one the rate refuses gives its slot straight back.

        Raises:
            RateLimited: Over the rate or the concurrency cap.
        """
        rate, concurrency = self._pair(who.limits(self.default))
        slot = concurrency.acquire(who.org)
        try:
            state = rate.acquire(who.org)
        except BaseException:
            slot.release()
            raise
        return slot, rate_limit_header_pairs(state)


class ApiAuthMiddleware:
    """Authenticate and rate-limit everything under ``/api/``.

    Args:
        app: The wrapped application.
        authenticator: Token lookup (with its short cache).
        limiter: Per-tenant limits.
        sessions: Console session lookup (None: the cookie is never accepted).
        throttles: Where 429s are counted per tenant (None: not counted).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        limiter: TenantLimiter,
        sessions: SessionResolver | None = None,
        throttles: RecentThrottles | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter
        self.sessions = sessions
        self.throttles = throttles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == LOGIN_PATH and scope["method"] == "POST":
            await self.app(scope, receive, send)  # the route authenticates the body's key
            return
        who: Principal | None = None
        try:
            token = _bearer_or_none(scope)
            session_id = None
            if token is None and self.sessions is not None and path.startswith(OPERATOR_PREFIX):
                session_id = _cookie(scope, SESSION_COOKIE)
            if session_id is not None:
                assert self.sessions is not None
                session = await self.sessions(session_id)
                if session is None:
                    raise TenantError("invalid API key", reason="bad_session")
                if scope["method"] not in _SAFE_METHODS and not csrf_matches(
                    session_id, _header(scope, b"x-csrf-token")
                ):
                    await problem_response(
                        Forbidden("this action needs the session's X-CSRF-Token header")
                    )(scope, receive, send)
                    return
                scope[SESSION_KEY] = (session_id, session)
                who = session.principal
            else:
                who = await self.authenticator.authenticate(token or "")
            slot, headers = self.limiter.admit(who)
        except RateLimited as exc:
            if self.throttles is not None and who is not None:
                self.throttles.record(who.org, str(exc.context.get("policy", "rate")))
            await problem_response(exc)(scope, receive, send)
            return
        except (TenantError, DatabaseError) as exc:
            await problem_response(exc)(scope, receive, send)
            return
        except SpectralError as exc:  # pragma: no cover - defensive
            await problem_response(exc)(scope, receive, send)
            return
        scope[PRINCIPAL_KEY] = who

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            slot.release()


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            text: str = value.decode("latin-1")
            return text
    return None


def _cookie(scope: Scope, wanted: str) -> str | None:
    """The value of cookie ``wanted`` (the first one), or None."""
    for name, value in scope.get("headers", []):
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, sep, val = part.strip().partition("=")
            if sep and key == wanted:
                return val.strip() or None
    return None


def _bearer_or_none(scope: Scope) -> str | None:
    """The Bearer token; None when there is no Authorization header at all.

    Raises:
        TenantError: An Authorization header that is not a Bearer token.
    """
    if _header(scope, b"authorization") is None:
        return None
    return _bearer(scope)


def _bearer(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            try:
                text: str = value.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
                break
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise TenantError("invalid API key", reason="bad_key")
