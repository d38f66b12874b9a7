"""Tenants (organisations) and their API keys.

A key is a high-entropy random token shown once at creation (``sk_<org>_<43 base64url
chars>``, 256 bits of randomness); the database stores only its sha256, so a leaked table
does not leak usable keys, and lookup is one indexed equality on the hash.  A key is either
a tenant key (reaches its own org's modules only) or an *operator* key (``operator=True``:
may also manage the module store of every org).  Revoked keys stop authenticating
immediately in the database; API processes cache a successful lookup for at most
``auth_ttl_s`` (see :class:`Authenticator`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec
import psycopg
import structlog

from ._cache import RefreshAhead
from .db import Database, wrap_errors
from .errors import ConfigError, TenantError
from .ratelimit import TenantLimits
from .sql import query

__all__ = [
    "ApiKeyInfo",
    "Authenticator",
    "Principal",
    "TenantInfo",
    "authenticate",
    "create_api_key",
    "create_tenant",
    "hash_token",
    "list_api_keys",
    "list_tenants",
    "revoke_api_key",
    "set_tenant_limits",
    "validate_org",
]

log = structlog.get_logger(__name__)

_ORG_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_TOKEN_RE: Final = re.compile(r"sk_[a-z0-9][a-z0-9-]{0,62}_[A-Za-z0-9_-]{43}")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the authenticated key, its org, its role and its limits.

    Attributes:
        key_id: The API key's public id.
        org: The tenant organisation.
        operator: Whether the key may manage the module store.
        limits: Per-tenant overrides (rate, burst, concurrency); None fields use defaults.
    """

    key_id: str
    org: str
    operator: bool = False
    rate: float | None = None
    burst: int | None = None
    concurrency: int | None = None

    def limits(self, default: TenantLimits) -> TenantLimits:
        """The tenant's limits: its overrides on top of ``default``."""
        if self.rate is None and self.burst is None and self.concurrency is None:
            return default
        return TenantLimits(
            rate=self.rate or default.rate,
            burst=self.burst or default.burst,
            concurrency=self.concurrency or default.concurrency,
        )


class TenantInfo(msgspec.Struct, frozen=True, kw_only=True):
    org: str
    rate: float | None
    burst: int | None
    concurrency: int | None
    created_at: datetime
    live_keys: int


class ApiKeyInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org: str
    operator: bool
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


def validate_org(org: str) -> str:
    """Check an org name: lower-case letters, digits and ``-``, 1..63 characters.

    Raises:
        TenantError: ``reason="bad_org"``.
    """
    if not isinstance(org, str) or not _ORG_RE.fullmatch(org):
        raise TenantError(
            "org names are 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            reason="bad_org",
            org=org,
        )
    return org


def hash_token(token: str) -> bytes:
    """sha256 of a token (what the database stores)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


async def _one(
    conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]
) -> tuple[Any, ...] | None:
    with wrap_errors():
        cur = await conn.execute(query(name), params)
        return await cur.fetchone()


def _limit_params(org: str, limits: TenantLimits | None) -> dict[str, Any]:
    """A tenant's row parameters: its overrides, or NULLs for the process defaults."""
    return {
        "org": org,
        "rate": limits.rate if limits else None,
        "burst": limits.burst if limits else None,
        "concurrency": limits.concurrency if limits else None,
    }


async def create_tenant(
    conn: psycopg.AsyncConnection[Any], org: str, *, limits: TenantLimits | None = None
) -> bool:
    """Create a tenant (idempotent).

    Returns:
        True when created, False when it already existed.

    Raises:
        TenantError: Bad org name.
    """
    validate_org(org)
    row = await _one(conn, "insert_tenant", _limit_params(org, limits))
    if row is not None:
        log.info("tenant.created", org=org)
    return row is not None


async def set_tenant_limits(
    conn: psycopg.AsyncConnection[Any], org: str, limits: TenantLimits | None
) -> None:
    """Set (or clear, with None) a tenant's rate/burst/concurrency overrides.

    Raises:
        TenantError: No such tenant.
    """
    row = await _one(conn, "update_tenant_limits", _limit_params(org, limits))
    if row is None:
        raise TenantError("no such tenant", reason="unknown_org", org=org)


async def list_tenants(conn: psycopg.AsyncConnection[Any]) -> list[TenantInfo]:
    """Every tenant with its limit overrides and number of live keys."""
    with wrap_errors():
        cur = await conn.execute(query("select_tenants"))
        rows = await cur.fetchall()
    return [
        TenantInfo(
            org=r[0], rate=r[1], burst=r[2], concurrency=r[3], created_at=r[4], live_keys=int(r[5])
        )
        for r in rows
    ]


async def create_api_key(
    conn: psycopg.AsyncConnection[Any],
    org: str,
    *,
    operator: bool = False,
    label: str | None = None,
) -> tuple[ApiKeyInfo, str]:
    """Create an API key for ``org``.

    Returns:
        ``(info, token)``: the token is returned only here; store it now.

    Raises:
        TenantError: No such tenant or a bad org name.
    """
    validate_org(org)
    exists = await _one(conn, "tenant_exists", {"org": org})
    if not (exists and exists[0]):
        raise TenantError(
            "no such tenant; create it first (`spectral tenants create ORG`)",
            reason="unknown_org",
            org=org,
        )
    key_id = "key_" + secrets.token_hex(8)
    token = f"sk_{org}_{secrets.token_urlsafe(32)}"
    row = await _one(
        conn,
        "insert_api_key",
        {
            "id": key_id,
            "org": org,
            "token_sha256": hash_token(token),
            "operator": operator,
            "label": label,
        },
    )
    assert row is not None
    log.info("tenant.key_created", org=org, key_id=key_id, operator=operator)
    info = ApiKeyInfo(
        id=key_id, org=org, operator=operator, label=label, created_at=row[0], revoked_at=None
    )
    return info, token


async def list_api_keys(
    conn: psycopg.AsyncConnection[Any], org: str | None = None
) -> list[ApiKeyInfo]:
    """API keys (never their tokens), optionally of one org."""
    with wrap_errors():
        cur = await conn.execute(query("select_api_keys"), {"org": org})
        rows = await cur.fetchall()
    return [
        ApiKeyInfo(id=r[0], org=r[1], operator=r[2], label=r[3], created_at=r[4], revoked_at=r[5])
        for r in rows
    ]


async def revoke_api_key(conn: psycopg.AsyncConnection[Any], key_id: str) -> bool:
    """Revoke a key.

    Returns:
        True when this call revoked it, False when it was already revoked.

    Raises:
        TenantError: No key with this id.
    """
    row = await _one(conn, "revoke_api_key", {"id": key_id})
    if row is not None:
        log.warning("tenant.key_revoked", key_id=key_id, org=row[0])
        return True
    exists = await _one(conn, "api_key_exists", {"id": key_id})
    if not (exists and exists[0]):
        raise TenantError("no API key with this id", reason="unknown_key", key_id=key_id)
    return False


async def authenticate(conn: psycopg.AsyncConnection[Any], token: str) -> Principal:
    """Look a bearer token up (one indexed query on its hash).

    Raises:
        TenantError: ``reason="bad_key"``: malformed, unknown or revoked.
    """
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise TenantError("invalid API key", reason="bad_key")
    row = await _one(conn, "authenticate_api_key", {"token_sha256": hash_token(token)})
    if row is None:
        raise TenantError("invalid API key", reason="bad_key")
    return Principal(
        key_id=row[0],
        org=row[1],
        operator=bool(row[2]),
        rate=row[3],
        burst=row[4],
        concurrency=row[5],
    )


class Authenticator:
    """Token -> :class:`Principal` with a short per-process cache.

    A successful lookup is reused for at most ``ttl_s`` (so a revoked key stops working
    within ``ttl_s`` on every process); a failed one for at most ``ttl_s`` too, so a flood
    of bad tokens costs at most one query per distinct token per ``ttl_s``.  The cache is
    keyed by the token's sha256, never the token, and refreshed ahead
    (:class:`spectral_core._cache.RefreshAhead`: one lookup per key at a time, never an
    answer older than ``ttl_s``).

    Args:
        db: The process's database.
        ttl_s: Cache lifetime in seconds (0 disables the cache).
        max_entries: Cache size bound (LRU).
        clock: Monotonic clock (tests).

    Raises:
        ConfigError: Bad bounds.
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 1.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ConfigError("invalid authenticator bounds")
        self.db = db
        self.ttl_s = ttl_s
        self._cache: RefreshAhead[bytes, Principal | None] = RefreshAhead(
            ttl_s=ttl_s, max_entries=max_entries, clock=clock
        )

    async def authenticate(self, token: str) -> Principal:
        """The principal for ``token``.

        Raises:
            TenantError: ``reason="bad_key"``.
            DatabaseError: The lookup failed.
        """
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise TenantError("invalid API key", reason="bad_key")
        digest = hash_token(token)
        principal = await self._cache.get(digest, lambda: self._lookup(digest, token))
        if principal is None:
            raise TenantError("invalid API key", reason="bad_key")
        return principal

    async def _lookup(self, digest: bytes, token: str) -> Principal | None:
        """The key's principal, or None for an unknown or revoked key (cached too)."""
        try:
            with wrap_errors():
                async with self.db.pool.connection() as conn:
                    return await authenticate(conn, token)
        except TenantError:
            return None
