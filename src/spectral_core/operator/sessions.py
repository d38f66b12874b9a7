"""Browser sessions of operator API keys (the console's login, ADR 0038).

An operator exchanges an operator API key for a session once; the browser then holds only
an opaque random session id in an ``HttpOnly; SameSite=Strict`` cookie.  The database
stores the id's sha256 (any API process of the fleet accepts the session; a leaked table
holds no usable session) with an expiry, and the session belongs to its key: a revoked key
ends its sessions at once, since every lookup joins the live key.

The CSRF token of a session is derived from the session id (an HMAC keyed by it), so it
needs no storage, is the same on every process and cannot be computed by a page that does
not hold the cookie's value.  Nothing here logs a session id or a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Final

import msgspec

from ..db import Database, wrap_errors
from ..errors import ConfigError, TenantError
from ..sql import query
from ..tenants import Principal

__all__ = [
    "SESSION_COOKIE",
    "OperatorSession",
    "close_session",
    "csrf_token",
    "csrf_matches",
    "open_session",
    "resolve_session",
]

#: the cookie holding the session id
SESSION_COOKIE: Final = "spectral_session"
#: a session id: 32 random bytes, base64url without padding
_SESSION_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_CSRF_CONTEXT: Final = b"spectral operator console csrf v1"


class OperatorSession(msgspec.Struct, frozen=True, kw_only=True):
    """A live session: the operator key's principal, its label and when it ends."""

    principal: Principal
    label: str | None
    expires_at: datetime


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("ascii")).digest()


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session (HMAC-SHA256 keyed by the session id)."""
    mac = hmac.new(session_id.encode("ascii"), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def csrf_matches(session_id: str, given: str | None) -> bool:
    """Whether ``given`` is the session's CSRF token (constant-time comparison)."""
    if not given:
        return False
    return hmac.compare_digest(csrf_token(session_id).encode(), given.encode("utf-8", "replace"))


async def open_session(
    db: Database, who: Principal, *, ttl_s: float
) -> tuple[str, OperatorSession]:
    """Open a session for an operator key; returns ``(session id, session)``.

    Expired sessions (at most 1000) are deleted in the same transaction.

    Raises:
        TenantError: ``who`` is not an operator key (``reason="not_operator"``).
        ConfigError: A non-positive ``ttl_s``.
        DatabaseError: The insert failed.
    """
    if not who.operator:
        raise TenantError("not an operator key", reason="not_operator")
    if ttl_s <= 0:
        raise ConfigError("a session needs a positive lifetime", field="console_session_ttl_s")
    session_id = secrets.token_urlsafe(32)
    with wrap_errors():
        async with db.pool.connection() as conn, conn.transaction():
            await conn.execute(query("prune_operator_sessions"))
            cur = await conn.execute(
                query("insert_operator_session"),
                {"id_sha256": _digest(session_id), "key_id": who.key_id, "ttl_s": ttl_s},
            )
            row = await cur.fetchone()
            cur = await conn.execute(
                query("select_operator_session"), {"id_sha256": _digest(session_id)}
            )
            found = await cur.fetchone()
    assert row is not None
    label = found[6] if found else None
    return session_id, OperatorSession(principal=who, label=label, expires_at=row[0])


async def resolve_session(db: Database, session_id: str | None) -> OperatorSession | None:
    """The live session of ``session_id``; None when malformed, unknown, expired, or its
    key was revoked or is no longer an operator key.

    Raises:
        DatabaseError: The lookup failed.
    """
    if not session_id or not _SESSION_RE.fullmatch(session_id):
        return None
    with wrap_errors():
        async with db.pool.connection() as conn:
            cur = await conn.execute(
                query("select_operator_session"), {"id_sha256": _digest(session_id)}
            )
            row = await cur.fetchone()
    if row is None:
        return None
    principal = Principal(
        key_id=row[0],
        org=row[1],
        operator=bool(row[2]),
        rate=row[3],
        burst=row[4],
        concurrency=row[5],
    )
    return OperatorSession(principal=principal, label=row[6], expires_at=row[7])


async def close_session(db: Database, session_id: str | None) -> bool:
    """Delete a session (logout); True when there was one.

    Raises:
        DatabaseError: The delete failed.
    """
    if not session_id or not _SESSION_RE.fullmatch(session_id):
        return False
    with wrap_errors():
        async with db.pool.connection() as conn:
            cur = await conn.execute(
                query("delete_operator_session"), {"id_sha256": _digest(session_id)}
            )
    return cur.rowcount > 0
