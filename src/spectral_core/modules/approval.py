"""Operator approvals: Ed25519 signatures over (content hash, module key, expiry).

An operator approves exactly one module content for exactly one key until an expiry.
The signed message is canonical and unambiguous (see :func:`approval_message` and
``docs/reference/approvals.md``)::

    b"spectral-approval-v1\\n" + JSON([content_hash, org, domain, action,
                                      world_model_version, expires_at])

Operators sign locally (``spectral modules approve``) with a private key that never reaches
the server; the server trusts the public keys listed in ``SPECTRAL_OPERATOR_KEYS``
(:meth:`Keyring.from_config`), several at once so keys can be rotated.

Every check fails closed: anything unexpected is an :class:`ApprovalError` with a ``reason``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from spectral_core.errors import ApprovalError, ConfigError

__all__ = [
    "APPROVAL_DOMAIN",
    "Approval",
    "Keyring",
    "ModuleKey",
    "approval_message",
    "generate_operator_key",
    "key_id_for",
    "load_private_key",
    "public_key_b64",
    "save_private_key",
    "sign_approval",
]

#: Domain-separation prefix: a signature made for anything else never verifies here.
APPROVAL_DOMAIN: Final = b"spectral-approval-v1\n"

_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")
_MAX_EXPIRY: Final = 2**53  # stays exact in every JSON implementation


class ModuleKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The address a tenant asks a decision for; pinned to exactly one module content.

    Attributes:
        org: Tenant organisation.
        domain: Decision domain.
        action: Action within the domain.
        world_model_version: Version of the world model the module was built against.
    """

    org: str
    domain: str
    action: str
    world_model_version: str


class Approval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An operator's signed approval of one content hash for one key, until ``expires_at``.

    Attributes:
        key_id: Fingerprint of the signing operator key (:func:`key_id_for`).
        content_hash: Hex sha256 of the approved module bytes.
        key: The module key the approval is for.
        expires_at: UTC epoch seconds; the approval is valid while ``now < expires_at``.
        signature: Standard base64 of the 64-byte Ed25519 signature over
            :func:`approval_message`.
    """

    key_id: str
    content_hash: str
    key: ModuleKey
    expires_at: int
    signature: str


def approval_message(content_hash: str, key: ModuleKey, expires_at: int) -> bytes:
    """The exact bytes an operator signs.

    The domain prefix is followed by the compact JSON encoding of a fixed-length array
    ``[content_hash, org, domain, action, world_model_version, expires_at]``.  JSON string
    escaping makes the encoding injective: two different tuples never share a message.

    Args:
        content_hash: Lower-case hex sha256 (64 characters).
        key: The module key.
        expires_at: UTC epoch seconds (non-negative integer).

    Returns:
        The message to sign or verify.

    Raises:
        ApprovalError: ``reason="malformed"`` when a field is out of shape.
    """
    if not isinstance(content_hash, str) or not _HASH_RE.fullmatch(content_hash):
        raise ApprovalError("content hash must be 64 lower-case hex digits", reason="malformed")
    if (
        not isinstance(expires_at, int)
        or isinstance(expires_at, bool)
        or not 0 <= expires_at < _MAX_EXPIRY
    ):
        raise ApprovalError("expiry must be a non-negative integer", reason="malformed")
    fields = [content_hash, key.org, key.domain, key.action, key.world_model_version]
    if not all(isinstance(f, str) for f in fields):
        raise ApprovalError("module key fields must be strings", reason="malformed")
    return APPROVAL_DOMAIN + msgspec.json.encode([*fields, expires_at])


def key_id_for(public_key: Ed25519PublicKey | bytes) -> str:
    """The short fingerprint naming an operator key: 16 hex of sha256(raw public key).

    Args:
        public_key: The key, or its 32 raw bytes.

    Returns:
        16 lower-case hex characters.
    """
    raw = public_key if isinstance(public_key, bytes) else _raw_public(public_key)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """Standard base64 of the raw 32-byte public key (the SPECTRAL_OPERATOR_KEYS form)."""
    return base64.b64encode(_raw_public(public_key)).decode("ascii")


def generate_operator_key(password: bytes | None = None) -> tuple[bytes, str]:
    """Create a new operator key pair.

    Args:
        password: Optional passphrase encrypting the private PEM.

    Returns:
        ``(private_pem, public_b64)``: the PKCS#8 PEM private key (keep it on the operator's
        machine) and the base64 raw public key to list in ``SPECTRAL_OPERATOR_KEYS``.
    """
    private = Ed25519PrivateKey.generate()
    return _private_pem(private, password), public_key_b64(private.public_key())


def sign_approval(
    private_key: Ed25519PrivateKey | bytes,
    content_hash: str,
    key: ModuleKey,
    expires_at: int,
    *,
    password: bytes | None = None,
) -> Approval:
    """Sign an approval locally, with the operator's private key.

    Args:
        private_key: The key, or its PEM bytes.
        content_hash: Hex sha256 of the module bytes being approved.
        key: The module key the content is approved for.
        expires_at: UTC epoch seconds after which the approval stops being valid.
        password: Passphrase when ``private_key`` is an encrypted PEM.

    Returns:
        The approval, ready to be stored next to the module pin.

    Raises:
        ApprovalError: ``reason="malformed"`` for a malformed hash or expiry.
        ConfigError: The PEM is not an Ed25519 private key.
    """
    if isinstance(private_key, bytes):
        private_key = _load_private_pem(private_key, password)
    message = approval_message(content_hash, key, expires_at)
    signature = private_key.sign(message)
    return Approval(
        key_id=key_id_for(private_key.public_key()),
        content_hash=content_hash,
        key=key,
        expires_at=expires_at,
        signature=base64.b64encode(signature).decode("ascii"),
    )


class Keyring:
    """The trusted operator public keys, by key id.  Immutable once built.

    Args:
        public_keys: Trusted keys.

    Raises:
        ConfigError: A key is not an Ed25519 public key.
    """

    def __init__(self, public_keys: Iterable[Ed25519PublicKey] = ()) -> None:
        keys: dict[str, Ed25519PublicKey] = {}
        for public in public_keys:
            if not isinstance(public, Ed25519PublicKey):
                raise ConfigError("operator keys must be Ed25519 public keys")
            keys[key_id_for(public)] = public
        self._keys: Mapping[str, Ed25519PublicKey] = keys

    @classmethod
    def from_config(cls, value: str) -> Keyring:
        """Parse ``SPECTRAL_OPERATOR_KEYS``.

        Entries are separated by commas (whitespace and newlines around them are ignored).
        Each entry is ``<base64>`` or ``<key_id>:<base64>``, where ``<base64>`` is the
        standard base64 (padded) of a raw 32-byte Ed25519 public key and the optional
        ``<key_id>`` must equal its fingerprint (:func:`key_id_for`).  An empty value gives
        an empty keyring, which rejects every approval.

        Args:
            value: The configuration string.

        Returns:
            The keyring.

        Raises:
            ConfigError: An entry is malformed, is not a 32-byte key, or its key id does not
                match the key (``.entry`` is the 1-based position).
        """
        keys: list[Ed25519PublicKey] = []
        entries = [e.strip() for e in value.split(",")]
        for position, entry in enumerate(entries, start=1):
            if not entry:
                continue
            claimed, sep, encoded = entry.rpartition(":")
            if not sep:
                claimed, encoded = "", entry
            try:
                raw = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(
                    "SPECTRAL_OPERATOR_KEYS entry is not valid base64", entry=position
                ) from exc
            if len(raw) != 32:
                raise ConfigError(
                    "SPECTRAL_OPERATOR_KEYS entry is not a raw 32-byte Ed25519 key",
                    entry=position,
                )
            claimed = claimed.strip()
            if claimed and claimed != key_id_for(raw):
                raise ConfigError(
                    "SPECTRAL_OPERATOR_KEYS key id does not match the key's fingerprint",
                    entry=position,
                    key_id=claimed,
                    expected=key_id_for(raw),
                )
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        return cls(keys)

    @property
    def key_ids(self) -> frozenset[str]:
        """The fingerprints of the trusted keys."""
        return frozenset(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def verify(
        self,
        approval: Approval,
        content_hash: str,
        key: ModuleKey,
        now: float | None = None,
    ) -> None:
        """Check that ``approval`` is a valid, current approval of ``content_hash`` for ``key``.

        Checks, in order: trusted operator key, signature over the approval's own fields,
        content hash, module key, expiry.

        Args:
            approval: The stored approval.
            content_hash: Hex sha256 of the bytes about to run (computed, not trusted).
            key: The module key being executed.
            now: UTC epoch seconds; ``time.time()`` when omitted.

        Raises:
            ApprovalError: ``.reason`` is ``"unknown_key"``, ``"bad_signature"``,
                ``"hash_mismatch"``, ``"key_mismatch"``, ``"expired"`` or ``"malformed"``.
        """
        if not isinstance(approval, Approval):
            raise ApprovalError("not an approval", reason="malformed")
        public = self._keys.get(approval.key_id)
        if public is None:
            raise ApprovalError(
                "approval signed by an unknown operator key",
                reason="unknown_key",
                key_id=approval.key_id,
            )
        try:
            signature = base64.b64decode(approval.signature, validate=True)
        except (binascii.Error, ValueError, TypeError):
            signature = b""
        try:
            message = approval_message(approval.content_hash, approval.key, approval.expires_at)
        except ApprovalError as exc:
            raise ApprovalError(
                "approval is malformed", reason="malformed", key_id=approval.key_id
            ) from exc
        try:
            if len(signature) != 64:
                raise InvalidSignature
            public.verify(signature, message)
        except InvalidSignature:
            raise ApprovalError(
                "approval signature is invalid", reason="bad_signature", key_id=approval.key_id
            ) from None
        if approval.content_hash != content_hash:
            raise ApprovalError(
                "approval is for different module content",
                reason="hash_mismatch",
                key_id=approval.key_id,
            )
        if approval.key != key:
            raise ApprovalError(
                "approval is for a different module key",
                reason="key_mismatch",
                key_id=approval.key_id,
            )
        current = time.time() if now is None else now
        if not current < approval.expires_at:
            raise ApprovalError(
                "approval has expired",
                reason="expired",
                key_id=approval.key_id,
                expires_at=approval.expires_at,
            )


def save_private_key(
    path: str | os.PathLike[str],
    private_pem: bytes,
    *,
    overwrite: bool = False,
) -> Path:
    """Write an operator private key PEM readable by its owner only (mode 0600).

    Args:
        path: Destination file.
        private_pem: The PEM from :func:`generate_operator_key`.
        overwrite: Replace an existing file (refused by default).

    Returns:
        The path written.

    Raises:
        ConfigError: The file exists and ``overwrite`` is false, or the PEM is not an
            Ed25519 private key.
    """
    if b"PRIVATE KEY" not in private_pem:
        raise ConfigError("refusing to save something that is not a private key PEM")
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as exc:
        raise ConfigError("operator key file already exists", path=str(target)) from exc
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(private_pem)
    return target


def load_private_key(
    path: str | os.PathLike[str], *, password: bytes | None = None
) -> Ed25519PrivateKey:
    """Read an operator private key PEM, refusing files others can read.

    Args:
        path: The PEM file written by :func:`save_private_key`.
        password: Passphrase for an encrypted PEM.

    Returns:
        The private key.

    Raises:
        ConfigError: Missing file, group/world-accessible permissions, or not an Ed25519
            private key.
    """
    target = Path(path)
    try:
        mode = target.stat().st_mode
        data = target.read_bytes()
    except OSError as exc:
        raise ConfigError("cannot read operator key file", path=str(target)) from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            "operator key file is accessible by group or others; chmod 600 it",
            path=str(target),
        )
    return _load_private_pem(data, password)


def _load_private_pem(data: bytes, password: bytes | None) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise ConfigError("cannot load operator private key PEM") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("operator private key is not an Ed25519 key")
    return key


def _private_pem(private: Ed25519PrivateKey, password: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
