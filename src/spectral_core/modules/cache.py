"""The verified-module cache used on the decide path (per process).

:meth:`ModuleCache.resolve` turns a :class:`ModuleKey` into a compiled module that may run
now, or raises.  Three layers, each with its own lifetime:

* **pin -> content hash**: pins never change (enforced in SQL), so a resolved pin is cached
  for the life of the process (LRU-bounded).  Unknown keys are not cached.
* **approval verdict** (checked before any byte is read): the result of checking the stored
  approvals (one indexed query plus Ed25519 verification of the candidate rows), a refusal
  included, is reused for at most ``approval_ttl_s`` (default 0.5 s), then re-checked
  (refreshed ahead by one caller from half that age on: :mod:`spectral_core._cache`).  A
  revocation, an expiry or a new approval therefore takes effect within
  ``approval_ttl_s`` (plus one query) on every process, cache included; the expiry time
  itself is compared with the clock on every call.  Fails closed: an error while checking
  is an error for the caller, never a pass.  A refused request reads no module bytes.
* **content hash -> compiled module**: the bytes of an approved module are read once,
  their sha256 recomputed and compared with the pinned address
  (:func:`~spectral_core.modules.store.get_blob`), then compiled by the sandbox off the
  event loop and cached by hash (LRU-bounded; a refusal is cached too).  The compiled
  module is made from the verified bytes, so later edits of the database copy cannot
  change what runs; a process that loads tampered bytes refuses them.

Loads are single flight per key (pins) and per content hash (bytes and compilation), never
per process: one tenant's large module being read and compiled does not hold up another
tenant's request.

Nothing here is shared between processes: with N API processes each holds its own cache
and each re-checks approvals on its own; the bound above holds for every one of them.
See ``docs/adr/0007-module-store-and-revocation.md``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.to_thread
import msgspec
import structlog

from spectral_core._cache import KeyedLocks, RefreshAhead
from spectral_core.errors import ApprovalError, ConfigError, SandboxError
from spectral_core.modules.approval import Keyring, ModuleKey
from spectral_core.modules.store import ModuleStore, StoredApproval
from spectral_core.sandbox import CompiledModule, Sandbox

__all__ = ["ModuleCache", "Verdict"]

log = structlog.get_logger(__name__)

#: Approval failures that mean someone forged or replayed something: logged at error level.
_SUSPICIOUS: Final = frozenset(
    {"unknown_key", "bad_signature", "hash_mismatch", "key_mismatch", "malformed"}
)


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The cached outcome of one approval check.

    Attributes:
        checked_at: Monotonic time of the check.
        expires_at: Latest expiry among the valid approvals (epoch seconds), 0 if none.
        approval_id: Id of the approval that validated the module, if any.
        reason: Failure reason when no approval is valid.
        message: Failure message.
    """

    checked_at: float
    expires_at: int = 0
    approval_id: int | None = None
    reason: str | None = None
    message: str = ""


class ModuleCache:
    """Resolve module keys to runnable compiled modules, verified and approved.

    Args:
        store: The module store.
        sandbox: The sandbox that compiles (and later runs) the modules.
        keyring: The trusted operator public keys.
        approval_ttl_s: How long an approval verdict is reused before it is re-checked.
        max_modules: Compiled modules kept (least recently used evicted).
        max_keys: Pins and approval verdicts kept.
        clock: Monotonic clock (tests).
        wall: Wall clock in epoch seconds (tests).

    Raises:
        ConfigError: A bound is out of range.
    """

    def __init__(
        self,
        store: ModuleStore,
        sandbox: Sandbox,
        keyring: Keyring,
        *,
        approval_ttl_s: float = 0.5,
        max_modules: int = 256,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= approval_ttl_s <= 60 or max_modules < 1 or max_keys < 1:
            raise ConfigError("invalid module cache bounds")
        self.store = store
        self.sandbox = sandbox
        self.keyring = keyring
        self.approval_ttl_s = approval_ttl_s
        self._max_modules = max_modules
        self._max_keys = max_keys
        self._clock = clock
        self._wall = wall
        self._pins: OrderedDict[ModuleKey, str] = OrderedDict()
        self._compiled: OrderedDict[str, CompiledModule] = OrderedDict()
        self._verdicts: RefreshAhead[tuple[ModuleKey, str], Verdict] = RefreshAhead(
            ttl_s=approval_ttl_s, max_entries=max_keys, clock=clock
        )
        #: content hash -> the sandbox's refusal (bytes are immutable: so is the verdict)
        self._refused: OrderedDict[str, SandboxError] = OrderedDict()
        # single flight per key and per content hash: one tenant's slow load (a large
        # module read, hashed and compiled) never holds up another tenant's request
        self._pin_loads: KeyedLocks[ModuleKey] = KeyedLocks()
        self._module_loads: KeyedLocks[str] = KeyedLocks()
        self._said_no_keys = False
        #: resolves served from the compiled modules, and modules loaded (read, verified
        #: and compiled): read by the API's /metrics at scrape time
        self.hits = 0
        self.loads = 0

    def __len__(self) -> int:
        """Compiled modules currently cached."""
        return len(self._compiled)

    def clear(self) -> None:
        """Forget everything (pins, compiled modules, verdicts)."""
        self._pins.clear()
        self._compiled.clear()
        self._verdicts.clear()
        self._refused.clear()

    async def resolve(self, key: ModuleKey) -> CompiledModule:
        """The compiled module pinned for ``key``, if it may run now.

        The pin is resolved first (cached for good once found), then the approval (a cached
        verdict, refusals included, at most ``approval_ttl_s`` old), and only then are the
        bytes read, verified and compiled, once per content hash: a refused request never
        reads the module's bytes.

        Raises:
            ModuleNotFound: ``key`` is not pinned.
            ContentHashMismatch: The stored bytes do not match their address (tampering).
            ApprovalError: No valid, unexpired, unrevoked operator approval for exactly this
                content and key (``.reason`` says why).
            SandboxError: The sandbox refuses the module (invalid, declares imports).
            ModuleTrap: The module does not implement the ABI.
            DatabaseError: The store could not be read.
        """
        content_hash = self._pins.get(key)
        if content_hash is None:
            content_hash = await self._load_pin(key)
        await self._check_approved(key, content_hash)
        compiled = self._compiled.get(content_hash)
        if compiled is None:
            return await self._load_module(key, content_hash)
        self._compiled.move_to_end(content_hash)
        self.hits += 1
        return compiled

    async def _load_pin(self, key: ModuleKey) -> str:
        async with self._pin_loads.hold(key):
            content_hash = self._pins.get(key)
            if content_hash is None:  # not loaded by a caller we waited for
                content_hash = await self.store.pinned_hash(key)
                self._pins[key] = content_hash
                while len(self._pins) > self._max_keys:
                    self._pins.popitem(last=False)
            return content_hash

    async def _load_module(self, key: ModuleKey, content_hash: str) -> CompiledModule:
        async with self._module_loads.hold(content_hash):
            compiled = self._compiled.get(content_hash)
            if compiled is not None:  # compiled by a caller we waited for
                return compiled
            refused = self._refused.get(content_hash)
            if refused is not None:
                raise type(refused)(refused.message, **refused.context)
            data = await self.store.get_blob(content_hash)  # verified against its address
            try:
                compiled = await anyio.to_thread.run_sync(self.sandbox.compile, data)
            except SandboxError as exc:
                self._refused[content_hash] = exc
                while len(self._refused) > self._max_modules:
                    self._refused.popitem(last=False)
                log.warning("module.refused", content_hash=content_hash, error=exc.message)
                raise
            # the sandbox hashes the bytes it compiled: it must be the pinned address
            if compiled.content_hash != content_hash:  # pragma: no cover - defensive
                raise ApprovalError("compiled content differs from the pin", reason="hash_mismatch")
            self._compiled[content_hash] = compiled
            self.loads += 1
            while len(self._compiled) > self._max_modules:
                self._compiled.popitem(last=False)
            log.info(
                "module.loaded",
                org=key.org,
                domain=key.domain,
                action=key.action,
                world_model_version=key.world_model_version,
                content_hash=content_hash,
                size=compiled.size,
            )
            return compiled

    async def _check_approved(self, key: ModuleKey, content_hash: str) -> None:
        # refreshed ahead from half the TTL on, never used past it (fail closed)
        verdict = await self._verdicts.get(
            (key, content_hash), lambda: self._verify(key, content_hash)
        )
        if verdict.reason is not None:
            raise ApprovalError(verdict.message, reason=verdict.reason)
        if not self._wall() < verdict.expires_at:
            raise ApprovalError("approval has expired", reason="expired")

    async def _verify(self, key: ModuleKey, content_hash: str) -> Verdict:
        """One indexed query, then Ed25519 verification of each live candidate row."""
        checked_at = self._clock()
        if not len(self.keyring):
            # a configuration gap, not an attack: said once, at warning level
            if not self._said_no_keys:
                self._said_no_keys = True
                log.warning(
                    "module.no_operator_keys",
                    detail="SPECTRAL_OPERATOR_KEYS is empty: no module can run until operator "
                    "public keys are configured and the API is restarted",
                )
            return Verdict(
                checked_at=checked_at,
                reason="no_operator_keys",
                message="no operator keys are configured on this API (SPECTRAL_OPERATOR_KEYS "
                "is empty): no module can run",
            )
        rows = await self.store.approvals_for(key, content_hash)
        now = self._wall()
        best: StoredApproval | None = None
        failures: list[ApprovalError] = []
        revoked = 0
        for row in rows:
            if row.revoked:
                revoked += 1
                continue
            try:
                self.keyring.verify(row.approval, content_hash, key, now)
            except ApprovalError as exc:
                failures.append(exc)
                if getattr(exc, "reason", None) in _SUSPICIOUS:
                    log.error(
                        "module.approval_rejected",
                        approval_id=row.id,
                        reason=exc.context.get("reason"),
                        key_id=row.approval.key_id,
                        org=key.org,
                        domain=key.domain,
                        action=key.action,
                        content_hash=content_hash,
                        alert="forged or foreign approval",
                    )
                continue
            if best is None or row.approval.expires_at > best.approval.expires_at:
                best = row
        if best is not None:
            return Verdict(
                checked_at=checked_at, expires_at=best.approval.expires_at, approval_id=best.id
            )
        return Verdict(checked_at=checked_at, **_failure(failures, revoked))


def _failure(failures: list[ApprovalError], revoked: int) -> dict[str, Any]:
    reasons = [str(f.context.get("reason", "invalid")) for f in failures]
    if "expired" in reasons:
        return {"reason": "expired", "message": "the module's approval has expired"}
    if reasons:
        return {"reason": reasons[0], "message": "the module's approval is not valid"}
    if revoked:
        return {"reason": "revoked", "message": "the module's approval was revoked"}
    return {"reason": "missing", "message": "the module has no operator approval"}
