"""Decision modules: keys, operator approvals (and, alongside, the store and cache)."""

from spectral_core.modules.approval import (
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

__all__ = [
    "Approval",
    "Keyring",
    "ModuleKey",
    "approval_message",
    "generate_operator_key",
    "key_id_for",
    "load_private_key",
    "save_private_key",
    "sign_approval",
]
