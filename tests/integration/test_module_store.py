"""The content-addressed module store, approvals and the verified-module cache on real PG."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from spectral_core.db import Database
from spectral_core.errors import (
    ApprovalError,
    ContentHashMismatch,
    DatabaseError,
    ModuleNotFound,
    PinConflict,
    TenantError,
)
from spectral_core.modules import (
    Keyring,
    ModuleCache,
    ModuleKey,
    ModuleStore,
    content_hash_of,
    sign_approval,
)
from spectral_core.sandbox.wasm import WasmSandbox
from spectral_core.tenants import (
    Authenticator,
    authenticate,
    create_api_key,
    create_tenant,
    list_api_keys,
    revoke_api_key,
)

pytestmark = pytest.mark.anyio

MODULES = Path(__file__).resolve().parent.parent / "modules"
KEY = ModuleKey(org="acme", domain="credit", action="approve", world_model_version="v1")


def wasm(name: str) -> bytes:
    return wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text())


@pytest.fixture(scope="module")
def sandbox() -> Iterator[WasmSandbox]:
    with WasmSandbox(epoch_interval_ms=2) as sb:
        yield sb


@pytest.fixture
def operator() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def keyring(operator: Ed25519PrivateKey) -> Keyring:
    return Keyring([operator.public_key()])


async def approved(
    store: ModuleStore,
    operator: Ed25519PrivateKey,
    name: str = "decision",
    key: ModuleKey = KEY,
    ttl: int = 3600,
) -> tuple[str, int]:
    h = await store.put_blob(wasm(name))
    await store.pin(key, h)
    aid = await store.add_approval(sign_approval(operator, h, key, int(time.time()) + ttl))
    return h, aid


async def test_put_blob_is_content_addressed_and_idempotent(db: Database) -> None:
    """Blobs are stored under the sha256 of their bytes; putting them twice is a no-op."""
    store = ModuleStore(db)
    data = wasm("decision")
    h1 = await store.put_blob(data)
    h2 = await store.put_blob(data)
    assert h1 == h2 == content_hash_of(data)
    async with db.pool.connection() as c:
        cur = await c.execute("SELECT count(*), max(size) FROM core.module_blobs")
        assert await cur.fetchone() == (1, len(data))


async def test_pin_is_immutable(db: Database) -> None:
    """Re-pinning the same hash is idempotent; another hash is a PinConflict."""
    store = ModuleStore(db)
    a = await store.put_blob(wasm("decision"))
    b = await store.put_blob(wasm("echo"))
    assert await store.pin(KEY, a) is True
    assert await store.pin(KEY, a) is False
    with pytest.raises(PinConflict):
        await store.pin(KEY, b)


async def test_pin_needs_the_blob(db: Database) -> None:
    """Pinning a hash that is not stored is refused as not found."""
    with pytest.raises(ModuleNotFound):
        await ModuleStore(db).pin(KEY, "0" * 64)


def test_sql_forbids_changing_pins_blobs_and_approvals(conn: psycopg.Connection[Any]) -> None:
    """Even with direct SQL, pins and blobs cannot be updated or deleted, and approvals can
    only be revoked."""
    h = "a" * 64
    conn.execute("INSERT INTO core.module_blobs VALUES (%s, '\\x00', 1)", (h,))
    conn.execute(
        "INSERT INTO core.module_pins (org, domain, action, world_model_version, "
        "content_hash) VALUES ('o','d','a','v',%s)",
        (h,),
    )
    conn.execute(
        "INSERT INTO core.module_approvals (key_id, content_hash, org, domain, action, "
        "world_model_version, expires_at, signature) "
        "VALUES ('k', %s, 'o','d','a','v', 1, 's')",
        (h,),
    )
    for stmt in (
        "UPDATE core.module_pins SET content_hash = content_hash",
        "DELETE FROM core.module_pins",
        "TRUNCATE core.module_pins CASCADE",
        "UPDATE core.module_blobs SET bytes = '\\x01'",
        "DELETE FROM core.module_blobs",
        "UPDATE core.module_approvals SET expires_at = 99",
        "DELETE FROM core.module_approvals",
    ):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
            conn.execute(stmt)
    conn.execute("UPDATE core.module_approvals SET revoked_at = now()")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        conn.execute("UPDATE core.module_approvals SET revoked_at = NULL")


async def test_cache_resolves_an_approved_module(
    db: Database, sandbox: WasmSandbox, operator: Ed25519PrivateKey, keyring: Keyring
) -> None:
    """A pinned, approved module resolves to a compiled module that runs."""
    store = ModuleStore(db)
    h, _ = await approved(store, operator)
    cache = ModuleCache(store, sandbox, keyring)
    compiled = await cache.resolve(KEY)
    assert compiled.content_hash == h
    assert sandbox.run(compiled, b'{"risk":"high"}').value == {"decision": "deny"}
    assert await cache.resolve(KEY) is compiled


async def test_unknown_module_is_not_found(
    db: Database, sandbox: WasmSandbox, keyring: Keyring
) -> None:
    """An unpinned key is ModuleNotFound."""
    with pytest.raises(ModuleNotFound):
        await ModuleCache(ModuleStore(db), sandbox, keyring).resolve(KEY)


async def test_unapproved_module_is_refused(
    db: Database, sandbox: WasmSandbox, keyring: Keyring
) -> None:
    """A pinned module without approval is refused (reason missing)."""
    store = ModuleStore(db)
    await store.pin(KEY, await store.put_blob(wasm("decision")))
    with pytest.raises(ApprovalError) as err:
        await ModuleCache(store, sandbox, keyring).resolve(KEY)
    assert err.value.context["reason"] == "missing"


async def test_tampered_bytes_are_detected(
    db: Database,
    sandbox: WasmSandbox,
    operator: Ed25519PrivateKey,
    keyring: Keyring,
    conn: psycopg.Connection[Any],
) -> None:
    """Bytes edited directly in the database (triggers disabled) no longer match their
    address: the load fails with ContentHashMismatch."""
    store = ModuleStore(db)
    await approved(store, operator)
    conn.execute("ALTER TABLE core.module_blobs DISABLE TRIGGER USER")
    conn.execute("UPDATE core.module_blobs SET bytes = %s", (wasm("echo"),))
    with pytest.raises(ContentHashMismatch):
        await ModuleCache(store, sandbox, keyring).resolve(KEY)


async def test_revocation_stops_cached_module_within_ttl(
    db: Database, sandbox: WasmSandbox, operator: Ed25519PrivateKey, keyring: Keyring
) -> None:
    """After revocation, a cached module is refused once the verdict TTL has passed."""
    store = ModuleStore(db)
    _, aid = await approved(store, operator)
    cache = ModuleCache(store, sandbox, keyring, approval_ttl_s=0.2)
    await cache.resolve(KEY)
    assert await store.revoke_approval(aid, "test") is True
    assert await store.revoke_approval(aid) is False
    time.sleep(0.25)
    with pytest.raises(ApprovalError) as err:
        await cache.resolve(KEY)
    assert err.value.context["reason"] == "revoked"


async def test_replayed_approval_for_another_key_is_refused(
    db: Database,
    sandbox: WasmSandbox,
    operator: Ed25519PrivateKey,
    keyring: Keyring,
    conn: psycopg.Connection[Any],
) -> None:
    """A genuine approval copied onto another key's row does not verify (bad signature)."""
    store = ModuleStore(db)
    h, _ = await approved(store, operator)
    other = ModuleKey(org="acme", domain="credit", action="deny", world_model_version="v1")
    await store.pin(other, h)
    conn.execute(
        "INSERT INTO core.module_approvals (key_id, content_hash, org, domain, action, "
        "world_model_version, expires_at, signature) SELECT key_id, content_hash, org, "
        "domain, 'deny', world_model_version, expires_at, signature "
        "FROM core.module_approvals"
    )
    with pytest.raises(ApprovalError) as err:
        await ModuleCache(store, sandbox, keyring).resolve(other)
    assert err.value.context["reason"] == "bad_signature"


async def test_api_side_add_approval_verifies(
    db: Database, operator: Ed25519PrivateKey, keyring: Keyring
) -> None:
    """add_approval with a keyring refuses an approval signed by an unknown key."""
    store = ModuleStore(db)
    h = await store.put_blob(wasm("decision"))
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(ApprovalError) as err:
        await store.add_approval(sign_approval(stranger, h, KEY, int(time.time()) + 60), keyring)
    assert err.value.context["reason"] == "unknown_key"
    a = sign_approval(operator, h, KEY, int(time.time()) + 60)
    assert await store.add_approval(a, keyring) == await store.add_approval(a, keyring)


async def test_tenant_keys_hash_authenticate_and_revoke(db: Database) -> None:
    """Keys are stored hashed, authenticate to their org, and stop after revocation."""
    async with db.pool.connection() as c:
        assert await create_tenant(c, "acme") is True
        assert await create_tenant(c, "acme") is False
        info, token = await create_api_key(c, "acme", label="ci")
        assert token.startswith("sk_acme_")
        cur = await c.execute("SELECT token_sha256 FROM core.api_keys")
        (stored,) = await cur.fetchone()  # type: ignore[misc]
        assert token.encode() not in bytes(stored)
        principal = await authenticate(c, token)
        assert (principal.org, principal.key_id, principal.operator) == ("acme", info.id, False)
        assert [k.id for k in await list_api_keys(c, "acme")] == [info.id]
        assert await revoke_api_key(c, info.id) is True
        with pytest.raises(TenantError):
            await authenticate(c, token)
        with pytest.raises(TenantError):
            await create_api_key(c, "nobody")
    auth = Authenticator(db, ttl_s=0)
    with pytest.raises(TenantError):
        await auth.authenticate(token)


async def test_database_errors_are_translated(db: Database) -> None:
    """A driver error inside the store surfaces as DatabaseError."""
    async with db.pool.connection() as c:
        await c.execute("ALTER TABLE core.module_blobs RENAME TO module_blobs_x")
    with pytest.raises(DatabaseError):
        await ModuleStore(db).put_blob(b"\0asm")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_authenticator_refreshes_ahead_without_stalling_and_never_serves_stale(
    db: Database,
) -> None:
    """From half the TTL on, one caller refreshes a key while concurrent callers are answered
    from the cache at once; an entry older than the TTL is never used (callers wait for the
    lookup, and a key revoked meanwhile is refused)."""
    import anyio

    async with db.pool.connection() as c:
        await create_tenant(c, "acme")
        info, token = await create_api_key(c, "acme")
    clock = Clock()
    auth = Authenticator(db, ttl_s=1.0, clock=clock)
    real_lookup = auth._lookup
    release = anyio.Event()
    lookups: list[float] = []

    async def held_lookup(digest: bytes, tok: str) -> Any:
        lookups.append(clock.now)
        await release.wait()
        return await real_lookup(digest, tok)

    assert (await auth.authenticate(token)).org == "acme"  # cached at t=1000
    auth._lookup = held_lookup  # type: ignore[method-assign]
    release.set()
    clock.now += 0.4  # younger than half the TTL: no lookup at all
    await auth.authenticate(token)
    assert lookups == []
    release = anyio.Event()
    clock.now += 0.2  # 0.6 s: the first caller refreshes, the others do not wait for it
    async with anyio.create_task_group() as tg:
        tg.start_soon(auth.authenticate, token)
        await anyio.wait_all_tasks_blocked()
        assert len(lookups) == 1
        with anyio.fail_after(1):
            for _ in range(5):
                assert (await auth.authenticate(token)).org == "acme"
        assert len(lookups) == 1
        release.set()
    async with db.pool.connection() as c:
        await revoke_api_key(c, info.id)
    clock.now += 1.0  # the refreshed entry (t=1000.6) is now older than the TTL
    release = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def refused() -> None:
            with pytest.raises(TenantError):
                await auth.authenticate(token)

        tg.start_soon(refused)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.2) as waited:  # a second caller waits too
            await auth.authenticate(token)
        assert waited.cancelled_caught
        release.set()


async def test_module_cache_rechecks_ahead_and_never_serves_an_old_verdict(
    db: Database, sandbox: WasmSandbox, operator: Ed25519PrivateKey, keyring: Keyring
) -> None:
    """The approval verdict is re-checked by one caller from half its TTL on while others
    keep deciding; a verdict older than the TTL is never used, so a revocation takes effect
    within the TTL."""
    import anyio

    store = ModuleStore(db)
    _, aid = await approved(store, operator)
    clock = Clock()
    cache = ModuleCache(store, sandbox, keyring, approval_ttl_s=0.5, clock=clock)
    await cache.resolve(KEY)
    real_verify = cache._verify
    release = anyio.Event()
    checks: list[float] = []

    async def held_verify(key: ModuleKey, content_hash: str) -> Any:
        checks.append(clock.now)
        await release.wait()
        return await real_verify(key, content_hash)

    cache._verify = held_verify  # type: ignore[method-assign]
    clock.now += 0.3  # past half the TTL
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.resolve, KEY)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(1):
            await cache.resolve(KEY)  # not held up by the re-check in flight
        assert len(checks) == 1
        release.set()
    assert await store.revoke_approval(aid, "test") is True
    clock.now += 0.6  # older than the TTL: must be re-checked before use
    with pytest.raises(ApprovalError) as err:
        await cache.resolve(KEY)
    assert err.value.context["reason"] == "revoked"


async def test_a_failed_refresh_ahead_keeps_the_valid_entry_until_its_ttl(db: Database) -> None:
    """A lookup that fails while the cached key is still within its TTL (refresh ahead)
    does not fail the request; once the entry is past its TTL the failure is the answer
    (fail closed)."""
    async with db.pool.connection() as c:
        await create_tenant(c, "acme")
        _, token = await create_api_key(c, "acme")
    clock = Clock()
    auth = Authenticator(db, ttl_s=1.0, clock=clock)
    assert (await auth.authenticate(token)).org == "acme"

    async def broken(digest: bytes, tok: str) -> Any:
        raise DatabaseError("database unreachable")

    auth._lookup = broken  # type: ignore[method-assign]
    clock.now += 0.7
    assert (await auth.authenticate(token)).org == "acme"
    clock.now += 0.4  # 1.1 s: past the TTL
    with pytest.raises(DatabaseError):
        await auth.authenticate(token)


async def test_a_failed_recheck_ahead_keeps_the_verdict_until_its_ttl(
    db: Database, sandbox: WasmSandbox, operator: Ed25519PrivateKey, keyring: Keyring
) -> None:
    """An approval re-check that fails within the verdict's TTL keeps the module running;
    past the TTL the module is refused with the failure."""
    store = ModuleStore(db)
    await approved(store, operator)
    clock = Clock()
    cache = ModuleCache(store, sandbox, keyring, approval_ttl_s=0.5, clock=clock)
    await cache.resolve(KEY)

    async def broken(key: ModuleKey, content_hash: str) -> Any:
        raise DatabaseError("database unreachable")

    cache._verify = broken  # type: ignore[method-assign]
    clock.now += 0.3
    await cache.resolve(KEY)
    clock.now += 0.3  # 0.6 s: past the TTL
    with pytest.raises(DatabaseError):
        await cache.resolve(KEY)


class CountingStore(ModuleStore):
    """The real store, counting the reads of module bytes."""

    byte_reads = 0

    async def fetch_pinned(self, key: ModuleKey) -> tuple[str, bytes]:
        self.byte_reads += 1
        return await super().fetch_pinned(key)

    async def get_blob(self, content_hash: str) -> bytes:
        self.byte_reads += 1
        return await super().get_blob(content_hash)


async def test_a_refused_module_costs_no_byte_read_and_approval_or_revocation_is_prompt(
    db: Database, sandbox: WasmSandbox, operator: Ed25519PrivateKey, keyring: Keyring
) -> None:
    """A pinned but unapproved module is refused without reading its bytes (the refusal is
    cached for the verdict TTL, so 20 requests cost no blob read and one approval query);
    an approval added meanwhile, and then a revocation, take effect within the TTL."""
    store = CountingStore(db)
    h = await store.put_blob(wasm("decision"))
    await store.pin(KEY, h)
    cache = ModuleCache(store, sandbox, keyring, approval_ttl_s=0.2)
    for _ in range(20):
        with pytest.raises(ApprovalError) as err:
            await cache.resolve(KEY)
        assert err.value.context["reason"] == "missing"
    assert store.byte_reads == 0
    aid = await store.add_approval(sign_approval(operator, h, KEY, int(time.time()) + 60))
    time.sleep(0.25)
    assert (await cache.resolve(KEY)).content_hash == h
    assert store.byte_reads == 1
    await store.revoke_approval(aid, "test")
    time.sleep(0.25)
    with pytest.raises(ApprovalError):
        await cache.resolve(KEY)


class GatedSandbox:
    """The real sandbox, whose compile of one module waits until the test opens the gate."""

    def __init__(self, sandbox: WasmSandbox, gated: bytes) -> None:
        import threading

        self._sandbox = sandbox
        self._gated = gated
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def compile(self, module: bytes) -> Any:
        if bytes(module) == self._gated:
            self.waiting.set()
            self.gate.wait(30)
        return self._sandbox.compile(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sandbox, name)


async def test_one_keys_slow_load_does_not_hold_up_another_keys_requests(
    db: Database, sandbox: WasmSandbox, operator: Ed25519PrivateKey
) -> None:
    """While one tenant's module is being compiled (held here), another tenant's module
    loads and answers, and a request for an unpinned key is a 404 at once: loads are
    single flight per key, not per process."""
    import anyio

    store = ModuleStore(db)
    slow_key = ModuleKey(org="slow", domain="credit", action="approve", world_model_version="v1")
    await approved(store, operator, "echo", slow_key)
    await approved(store, operator, "decision", KEY)
    gated = GatedSandbox(sandbox, wasm("echo"))
    cache = ModuleCache(store, gated, Keyring([operator.public_key()]))  # type: ignore[arg-type]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cache.resolve, slow_key)
            with anyio.fail_after(10):
                await anyio.to_thread.run_sync(gated.waiting.wait)
                assert (await cache.resolve(KEY)).content_hash == content_hash_of(wasm("decision"))
                with pytest.raises(ModuleNotFound):
                    await cache.resolve(_other())
            gated.gate.set()
    finally:
        gated.gate.set()
    assert len(cache) == 2


def _other() -> ModuleKey:
    return ModuleKey(org="acme", domain="credit", action="none", world_model_version="v1")
