"""The content-addressed decision-module store (PostgreSQL).

* **Blobs** (``core.module_blobs``) are addressed by the sha256 of their bytes: putting the
  same bytes twice is a no-op, and the address is computed here, never taken from a caller.
* **Pins** (``core.module_pins``) map a :class:`ModuleKey` to exactly one content hash,
  forever.  Re-pinning the same hash is idempotent; another hash is a :class:`PinConflict`.
  The database enforces it too (primary key on the key, triggers refusing UPDATE, DELETE
  and TRUNCATE), so a bug elsewhere cannot re-point a key.
* **Approvals** (``core.module_approvals``) are operator Ed25519 signatures made offline
  (:func:`~spectral_core.modules.approval.sign_approval`); they are stored as signed and
  verified again on every use.  The only permitted change is revocation.

Loading for execution (:func:`fetch_pinned`) recomputes the sha256 of the bytes read from
the database: bytes edited behind the store's back are a :class:`ContentHashMismatch`,
logged loudly.  Every function takes an open ``psycopg.AsyncConnection`` (autocommit) so
callers choose the transaction; :class:`ModuleStore` binds the same calls to a pool.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec
import psycopg
import structlog

from spectral_core.db import Database, wrap_errors
from spectral_core.errors import ContentHashMismatch, ModuleError, ModuleNotFound, PinConflict
from spectral_core.modules.approval import Approval, Keyring, ModuleKey
from spectral_core.sql import query

__all__ = [
    "MAX_KEY_FIELD",
    "ModuleInfo",
    "ModuleStore",
    "StoredApproval",
    "add_approval",
    "approvals_for",
    "content_hash_of",
    "fetch_pinned",
    "get_blob",
    "list_approvals",
    "list_modules",
    "pin_module",
    "pinned_hash",
    "put_blob",
    "revoke_approval",
    "validate_key",
]

log = structlog.get_logger(__name__)

#: Longest accepted module-key field (org, domain, action, world_model_version).
MAX_KEY_FIELD: Final = 200
_FIELD_RE: Final = re.compile(r"[\x21-\x7e]{1,200}")
_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")


class StoredApproval(msgspec.Struct, frozen=True, kw_only=True):
    """An approval row: the signed approval plus its storage id and revocation state."""

    id: int
    approval: Approval
    revoked: bool


class ModuleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One pinned module as listed by operators."""

    key: ModuleKey
    content_hash: str
    size: int
    created_at: datetime
    live_approvals: int
    approval_ids: list[int]


def content_hash_of(data: bytes) -> str:
    """The content address of module bytes: lower-case hex sha256."""
    return hashlib.sha256(data).hexdigest()


def validate_key(key: ModuleKey) -> ModuleKey:
    """Check the shape of a module key (printable ASCII, no spaces, 1..200 characters each).

    Raises:
        ModuleError: ``reason="bad_key"``; ``.field`` names the offending field.
    """
    for name in ("org", "domain", "action", "world_model_version"):
        value = getattr(key, name)
        if not isinstance(value, str) or not _FIELD_RE.fullmatch(value):
            raise ModuleError(
                f"module key field {name!r} must be 1-{MAX_KEY_FIELD} printable "
                "ASCII characters without spaces",
                reason="bad_key",
                field=name,
            )
    return key


def _check_hash(content_hash: str) -> str:
    if not isinstance(content_hash, str) or not _HASH_RE.fullmatch(content_hash):
        raise ModuleError(
            "content hash must be 64 lower-case hex digits", reason="bad_hash", field="content_hash"
        )
    return content_hash


def _key_params(key: ModuleKey) -> dict[str, Any]:
    return {
        "org": key.org,
        "domain": key.domain,
        "action": key.action,
        "world_model_version": key.world_model_version,
    }


async def _one(
    conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]
) -> tuple[Any, ...] | None:
    with wrap_errors():
        cur = await conn.execute(query(name), params)
        return await cur.fetchone()


async def _all(
    conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    with wrap_errors():
        cur = await conn.execute(query(name), params)
        return await cur.fetchall()


async def put_blob(conn: psycopg.AsyncConnection[Any], data: bytes) -> str:
    """Store module bytes under their sha256; idempotent.

    Args:
        conn: An open connection.
        data: The module bytes (stored as given: validation is the sandbox's job).

    Returns:
        The content hash.

    Raises:
        ModuleError: ``data`` is not bytes or is empty.
        DatabaseError: The insert failed.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise ModuleError("module bytes must be a non-empty byte string", reason="empty")
    data = bytes(data)
    content_hash = content_hash_of(data)
    await _one(
        conn, "insert_module_blob", {"content_hash": content_hash, "bytes": data, "size": len(data)}
    )
    return content_hash


async def get_blob(conn: psycopg.AsyncConnection[Any], content_hash: str) -> bytes:
    """The bytes stored under ``content_hash``, verified against it.

    Raises:
        ModuleNotFound: No such blob.
        ContentHashMismatch: The stored bytes do not hash to their address.
    """
    row = await _one(conn, "select_module_blob", {"content_hash": _check_hash(content_hash)})
    if row is None:
        raise ModuleNotFound("no module blob with this content hash", content_hash=content_hash)
    data = bytes(row[0])
    _verify_bytes(content_hash, data, None)
    return data


async def pin_module(conn: psycopg.AsyncConnection[Any], key: ModuleKey, content_hash: str) -> bool:
    """Pin ``key`` to ``content_hash`` forever.

    Returns:
        True when this call created the pin, False when it already existed with this hash.

    Raises:
        PinConflict: ``key`` is already pinned to another hash.
        ModuleNotFound: No blob with ``content_hash`` is stored.
        ModuleError: Malformed key or hash.
        DatabaseError: The statement failed.
    """
    validate_key(key)
    params = {**_key_params(key), "content_hash": _check_hash(content_hash)}
    try:
        row = await _one(conn, "insert_module_pin", params)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == "23503":  # foreign_key_violation
            raise ModuleNotFound(
                "no module blob with this content hash; put it first", content_hash=content_hash
            ) from exc
        raise
    assert row is not None
    pinned, created = str(row[0]), bool(row[1])
    if pinned != content_hash:
        raise PinConflict(key=key, pinned=pinned, requested=content_hash)
    if created:
        log.info(
            "module.pinned",
            org=key.org,
            domain=key.domain,
            action=key.action,
            world_model_version=key.world_model_version,
            content_hash=content_hash,
        )
    return created


def _verify_bytes(content_hash: str, data: bytes, key: ModuleKey | None) -> None:
    actual = content_hash_of(data)
    if actual != content_hash:
        log.error(
            "module.tampered",
            content_hash=content_hash,
            actual_hash=actual,
            org=key.org if key else None,
            domain=key.domain if key else None,
            action=key.action if key else None,
            world_model_version=key.world_model_version if key else None,
            alert="module bytes in the database do not match their content address",
        )
        raise ContentHashMismatch(content_hash=content_hash, actual_hash=actual)


async def pinned_hash(conn: psycopg.AsyncConnection[Any], key: ModuleKey) -> str:
    """The content hash ``key`` is pinned to (no bytes read).

    Raises:
        ModuleNotFound: ``key`` is not pinned.
    """
    row = await _one(conn, "select_pin", _key_params(key))
    if row is None:
        raise ModuleNotFound(key=key)
    return str(row[0])


async def fetch_pinned(conn: psycopg.AsyncConnection[Any], key: ModuleKey) -> tuple[str, bytes]:
    """Resolve the pin of ``key`` and return ``(content_hash, bytes)``, hash verified.

    Raises:
        ModuleNotFound: ``key`` is not pinned.
        ContentHashMismatch: The bytes read do not hash to the pinned address (tampering);
            logged as ``module.tampered`` at error level.
    """
    row = await _one(conn, "select_pin_with_blob", _key_params(key))
    if row is None:
        raise ModuleNotFound(key=key)
    content_hash, data = str(row[0]), bytes(row[1])
    _verify_bytes(content_hash, data, key)
    return content_hash, data


async def add_approval(
    conn: psycopg.AsyncConnection[Any],
    approval: Approval,
    keyring: Keyring | None = None,
    *,
    now: float | None = None,
) -> int:
    """Store a signed approval (idempotent: the same approval returns the same id).

    Args:
        conn: An open connection.
        approval: As produced by :func:`~spectral_core.modules.approval.sign_approval`.
        keyring: When given, the approval must verify against it before it is stored
            (the API does this; the database copy is verified again on every use anyway).
        now: Clock override for the verification.

    Returns:
        The approval id (used to revoke it).

    Raises:
        ApprovalError: ``keyring`` was given and the approval does not verify.
        ModuleError: Malformed key or hash.
        DatabaseError: The insert failed.
    """
    validate_key(approval.key)
    _check_hash(approval.content_hash)
    if keyring is not None:
        keyring.verify(approval, approval.content_hash, approval.key, now)
    params = {
        **_key_params(approval.key),
        "key_id": approval.key_id,
        "content_hash": approval.content_hash,
        "expires_at": approval.expires_at,
        "signature": approval.signature,
    }
    row = await _one(conn, "insert_module_approval", params)
    if row is None:
        row = await _one(conn, "select_module_approval_id", params)
    assert row is not None
    approval_id = int(row[0])
    log.info(
        "module.approval_added",
        approval_id=approval_id,
        key_id=approval.key_id,
        content_hash=approval.content_hash,
        org=approval.key.org,
        expires_at=approval.expires_at,
    )
    return approval_id


async def revoke_approval(
    conn: psycopg.AsyncConnection[Any], approval_id: int, reason: str | None = None
) -> bool:
    """Revoke an approval.

    Returns:
        True when this call revoked it, False when it was already revoked.

    Raises:
        ModuleNotFound: No approval with this id.
    """
    row = await _one(conn, "revoke_module_approval", {"id": approval_id, "reason": reason})
    if row is not None:
        log.warning("module.approval_revoked", approval_id=approval_id, reason=reason)
        return True
    exists = await _one(conn, "module_approval_exists", {"id": approval_id})
    if exists is None:
        raise ModuleNotFound("no approval with this id", approval_id=approval_id)
    return False


def _approval_from_row(row: Sequence[Any]) -> StoredApproval:
    key = ModuleKey(org=row[3], domain=row[4], action=row[5], world_model_version=row[6])
    return StoredApproval(
        id=int(row[0]),
        approval=Approval(
            key_id=row[1], content_hash=row[2], key=key, expires_at=int(row[7]), signature=row[8]
        ),
        revoked=bool(row[9]),
    )


async def approvals_for(
    conn: psycopg.AsyncConnection[Any], key: ModuleKey, content_hash: str
) -> list[StoredApproval]:
    """Every stored approval row of one (key, content) pair, revoked ones included.

    The rows are *not* verified here; see :class:`~spectral_core.modules.cache.ModuleCache`.
    """
    rows = await _all(
        conn, "select_approvals_for", {**_key_params(key), "content_hash": content_hash}
    )
    return [_approval_from_row(r) for r in rows]


async def list_modules(
    conn: psycopg.AsyncConnection[Any], org: str | None = None
) -> list[ModuleInfo]:
    """Pinned modules (optionally of one org) with size and live-approval counts."""
    rows = await _all(conn, "list_modules", {"org": org})
    return [
        ModuleInfo(
            key=ModuleKey(org=r[0], domain=r[1], action=r[2], world_model_version=r[3]),
            content_hash=r[4],
            size=int(r[5]),
            created_at=r[6],
            live_approvals=int(r[7]),
            approval_ids=[int(i) for i in r[8]],
        )
        for r in rows
    ]


async def list_approvals(
    conn: psycopg.AsyncConnection[Any], org: str | None = None
) -> list[dict[str, Any]]:
    """Approval rows (optionally of one org) without signatures, for operators."""
    rows = await _all(conn, "list_module_approvals", {"org": org})
    names = (
        "id",
        "key_id",
        "content_hash",
        "org",
        "domain",
        "action",
        "world_model_version",
        "expires_at",
        "created_at",
        "revoked_at",
    )
    return [dict(zip(names, r, strict=True)) for r in rows]


class ModuleStore:
    """The store functions bound to a connection pool (one connection per call).

    Args:
        db: The process's opened database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put_blob(self, data: bytes) -> str:
        """See :func:`put_blob`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await put_blob(conn, data)

    async def pin(self, key: ModuleKey, content_hash: str) -> bool:
        """See :func:`pin_module`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await pin_module(conn, key, content_hash)

    async def add_approval(self, approval: Approval, keyring: Keyring | None = None) -> int:
        """See :func:`add_approval`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await add_approval(conn, approval, keyring)

    async def revoke_approval(self, approval_id: int, reason: str | None = None) -> bool:
        """See :func:`revoke_approval`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await revoke_approval(conn, approval_id, reason)

    async def pinned_hash(self, key: ModuleKey) -> str:
        """See :func:`pinned_hash`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await pinned_hash(conn, key)

    async def get_blob(self, content_hash: str) -> bytes:
        """See :func:`get_blob`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await get_blob(conn, content_hash)

    async def fetch_pinned(self, key: ModuleKey) -> tuple[str, bytes]:
        """See :func:`fetch_pinned`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await fetch_pinned(conn, key)

    async def approvals_for(self, key: ModuleKey, content_hash: str) -> list[StoredApproval]:
        """See :func:`approvals_for`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await approvals_for(conn, key, content_hash)

    async def list_modules(self, org: str | None = None) -> list[ModuleInfo]:
        """See :func:`list_modules`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await list_modules(conn, org)

    async def list_approvals(self, org: str | None = None) -> list[dict[str, Any]]:
        """See :func:`list_approvals`."""
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                return await list_approvals(conn, org)
