"""Operator approvals verify exactly one content for one key, and fail closed otherwise."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from spectral_core.errors import ApprovalError, ConfigError
from spectral_core.modules import (
    Approval,
    Keyring,
    ModuleKey,
    approval_message,
    generate_operator_key,
    key_id_for,
    load_private_key,
    save_private_key,
    sign_approval,
)
from spectral_core.modules.approval import APPROVAL_DOMAIN, public_key_b64

HASH = hashlib.sha256(b"module bytes").hexdigest()
OTHER_HASH = hashlib.sha256(b"other bytes").hexdigest()
KEY = ModuleKey(org="acme", domain="credit", action="approve_loan", world_model_version="7")
NOW = 1_700_000_000
LATER = NOW + 3600


def operator() -> tuple[Ed25519PrivateKey, str]:
    """A fresh operator private key and its SPECTRAL_OPERATOR_KEYS entry."""
    pem, public = generate_operator_key()
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, Ed25519PrivateKey)
    return private, public


def reason_of(keyring: Keyring, approval: Approval, content_hash: str, key: ModuleKey) -> str:
    with pytest.raises(ApprovalError) as info:
        keyring.verify(approval, content_hash, key, NOW)
    return info.value.reason


def test_valid_approval_verifies() -> None:
    """An approval signed by a trusted operator for this hash and key verifies before expiry."""
    private, public = operator()
    keyring = Keyring.from_config(public)
    approval = sign_approval(private, HASH, KEY, LATER)
    keyring.verify(approval, HASH, KEY, NOW)
    assert approval.key_id == key_id_for(private.public_key())
    assert approval.key_id in keyring


def test_approval_survives_json_round_trip() -> None:
    """Approvals are stored as JSON; decoding gives back a verifiable approval."""
    private, public = operator()
    approval = sign_approval(private, HASH, KEY, LATER)
    decoded = msgspec.json.decode(msgspec.json.encode(approval), type=Approval)
    assert decoded == approval
    Keyring.from_config(public).verify(decoded, HASH, KEY, NOW)


def test_unknown_operator_key_is_refused() -> None:
    """A signature by a key that is not in the keyring is refused (unknown_key)."""
    private, _ = operator()
    _, trusted = operator()
    approval = sign_approval(private, HASH, KEY, LATER)
    assert reason_of(Keyring.from_config(trusted), approval, HASH, KEY) == "unknown_key"


def test_empty_keyring_refuses_everything() -> None:
    """With no operator keys configured, no module is ever approved."""
    private, _ = operator()
    approval = sign_approval(private, HASH, KEY, LATER)
    keyring = Keyring.from_config("")
    assert len(keyring) == 0
    assert reason_of(keyring, approval, HASH, KEY) == "unknown_key"


def test_forged_key_id_is_bad_signature() -> None:
    """Claiming a trusted key id on a signature made by another key fails the signature check."""
    private, _ = operator()
    trusted_private, trusted = operator()
    approval = sign_approval(private, HASH, KEY, LATER)
    forged = msgspec.structs.replace(approval, key_id=key_id_for(trusted_private.public_key()))
    assert reason_of(Keyring.from_config(trusted), forged, HASH, KEY) == "bad_signature"


@pytest.mark.parametrize(
    "change",
    [
        {"content_hash": OTHER_HASH},
        {
            "key": ModuleKey(
                org="evil", domain="credit", action="approve_loan", world_model_version="7"
            )
        },
        {"expires_at": LATER + 10**6},
        {"signature": base64.b64encode(b"\0" * 64).decode()},
        {"signature": "not base64!"},
        {"signature": ""},
    ],
    ids=["hash", "key", "expiry", "zero-sig", "garbage-sig", "empty-sig"],
)
def test_tampered_approval_is_bad_signature(change: dict[str, object]) -> None:
    """Editing any signed field (or the signature) of a stored approval breaks it."""
    private, public = operator()
    approval = msgspec.structs.replace(sign_approval(private, HASH, KEY, LATER), **change)
    assert reason_of(Keyring.from_config(public), approval, HASH, KEY) == "bad_signature"


def test_hash_mismatch_is_refused() -> None:
    """A genuine approval for other content does not approve these bytes (tampered module)."""
    private, public = operator()
    approval = sign_approval(private, OTHER_HASH, KEY, LATER)
    assert reason_of(Keyring.from_config(public), approval, HASH, KEY) == "hash_mismatch"


def test_key_mismatch_is_refused() -> None:
    """Replaying a genuine approval for another module key is refused."""
    private, public = operator()
    approval = sign_approval(private, HASH, KEY, LATER)
    other = msgspec.structs.replace(KEY, world_model_version="8")
    assert reason_of(Keyring.from_config(public), approval, HASH, other) == "key_mismatch"


def test_expired_approval_is_refused() -> None:
    """An approval is valid strictly before expires_at and refused from then on."""
    private, public = operator()
    keyring = Keyring.from_config(public)
    approval = sign_approval(private, HASH, KEY, NOW + 1)
    keyring.verify(approval, HASH, KEY, NOW + 0.999)
    with pytest.raises(ApprovalError) as info:
        keyring.verify(approval, HASH, KEY, NOW + 1)
    assert info.value.reason == "expired"


def test_rotation_trusts_every_listed_key() -> None:
    """Several keys can be trusted at once; removing one stops its approvals only."""
    old, old_pub = operator()
    new, new_pub = operator()
    both = Keyring.from_config(f" {old_pub} ,\n{key_id_for(new.public_key())}:{new_pub},")
    assert len(both) == 2
    a_old = sign_approval(old, HASH, KEY, LATER)
    a_new = sign_approval(new, HASH, KEY, LATER)
    both.verify(a_old, HASH, KEY, NOW)
    both.verify(a_new, HASH, KEY, NOW)
    rotated = Keyring.from_config(new_pub)
    rotated.verify(a_new, HASH, KEY, NOW)
    assert reason_of(rotated, a_old, HASH, KEY) == "unknown_key"


@pytest.mark.parametrize(
    "config",
    [
        "not-base64!!",
        base64.b64encode(b"short").decode(),
        "0000000000000000:" + base64.b64encode(b"\1" * 32).decode(),
    ],
    ids=["garbage", "short", "wrong-key-id"],
)
def test_malformed_operator_keys_config_is_refused(config: str) -> None:
    """A malformed SPECTRAL_OPERATOR_KEYS entry is a ConfigError, never silently skipped."""
    with pytest.raises(ConfigError):
        Keyring.from_config(config)


def test_malformed_inputs_to_sign_are_refused() -> None:
    """Signing refuses a non-hex hash or a negative expiry."""
    private, _ = operator()
    with pytest.raises(ApprovalError):
        sign_approval(private, "ABC", KEY, LATER)
    with pytest.raises(ApprovalError):
        sign_approval(private, HASH.upper(), KEY, LATER)
    with pytest.raises(ApprovalError):
        sign_approval(private, HASH, KEY, -1)


def test_message_has_domain_prefix_and_is_canonical() -> None:
    """The signed message is the domain prefix plus a JSON array of the fields."""
    message = approval_message(HASH, KEY, LATER)
    assert message.startswith(APPROVAL_DOMAIN)
    assert msgspec.json.decode(message[len(APPROVAL_DOMAIN) :]) == [
        HASH,
        "acme",
        "credit",
        "approve_loan",
        "7",
        LATER,
    ]


def test_private_key_file_round_trip(tmp_path: Path) -> None:
    """save/load keep the key usable, write mode 0600, and refuse overwrites."""
    pem, public = generate_operator_key()
    path = save_private_key(tmp_path / "op.pem", pem)
    assert (path.stat().st_mode & 0o777) == 0o600
    private = load_private_key(path)
    approval = sign_approval(private, HASH, KEY, LATER)
    Keyring.from_config(public).verify(approval, HASH, KEY, NOW)
    with pytest.raises(ConfigError):
        save_private_key(path, pem)
    save_private_key(path, pem, overwrite=True)


def test_encrypted_private_key_needs_password(tmp_path: Path) -> None:
    """A passphrase-protected PEM loads with the passphrase and fails without it."""
    pem, public = generate_operator_key(password=b"s3cret")
    path = save_private_key(tmp_path / "op.pem", pem)
    with pytest.raises(ConfigError):
        load_private_key(path)
    private = load_private_key(path, password=b"s3cret")
    assert public_key_b64(private.public_key()) == public


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    """A private key file readable by group or others is refused (like ssh)."""
    pem, _ = generate_operator_key()
    path = save_private_key(tmp_path / "op.pem", pem)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError):
        load_private_key(path)


_field = st.text(max_size=12)
_keys = st.builds(ModuleKey, org=_field, domain=_field, action=_field, world_model_version=_field)
_hashes = st.binary(min_size=1, max_size=8).map(lambda b: hashlib.sha256(b).hexdigest())
_expiry = st.integers(min_value=0, max_value=2**53 - 1)


@given(a=st.tuples(_hashes, _keys, _expiry), b=st.tuples(_hashes, _keys, _expiry))
def test_message_encoding_is_injective(
    a: tuple[str, ModuleKey, int], b: tuple[str, ModuleKey, int]
) -> None:
    """Property: two different (hash, key, expiry) tuples never share a signed message."""
    if a != b:
        assert approval_message(*a) != approval_message(*b)
    else:
        assert approval_message(*a) == approval_message(*b)


@given(
    key=_keys,
    shift=st.sampled_from(["org", "domain", "action", "world_model_version"]),
    text=st.text(min_size=1, max_size=4),
)
def test_field_boundary_shift_changes_message(key: ModuleKey, shift: str, text: str) -> None:
    """Property: moving characters across field boundaries ("ab","c" vs "a","bc") changes it."""
    fields = ["org", "domain", "action", "world_model_version"]
    i = fields.index(shift)
    if i == len(fields) - 1:
        return
    nxt = fields[i + 1]
    moved = msgspec.structs.replace(
        key, **{shift: getattr(key, shift) + text, nxt: getattr(key, nxt)}
    )
    shifted = msgspec.structs.replace(
        key, **{shift: getattr(key, shift), nxt: text + getattr(key, nxt)}
    )
    assert approval_message(HASH, moved, 0) != approval_message(HASH, shifted, 0)
