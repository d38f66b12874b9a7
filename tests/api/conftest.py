"""A real spectral-api (uvicorn, in a background thread with its own event loop) per test,
on the test's fresh database, plus helpers to create tenants and approved modules."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest
import uvicorn
import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from spectral_api import create_app
from spectral_api.server import server_config
from spectral_core import Settings, open_pools
from spectral_core.modules import (
    Keyring,
    ModuleKey,
    add_approval,
    pin_module,
    put_blob,
    sign_approval,
)
from spectral_core.modules.approval import public_key_b64
from spectral_core.ratelimit import TenantLimits
from spectral_core.tenants import create_api_key, create_tenant

MODULES = Path(__file__).resolve().parent.parent / "modules"


def wasm(name: str) -> bytes:
    """Assemble ``tests/modules/<name>.wat``."""
    return bytes(wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving create_app(...) in a thread; the pool lives on that thread's loop."""

    def __init__(self, settings: Settings, keyring: Keyring, *, access_log: bool = False) -> None:
        self.settings = settings
        self.keyring = keyring
        self.access_log = access_log
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="spectral-api-test", daemon=True)

    def _run(self) -> None:
        try:
            anyio.run(self._serve, backend="asyncio")
        except BaseException as exc:  # noqa: BLE001 - surfaced by start()
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        async with open_pools(self.settings) as db:
            app = create_app(self.settings, db, keyring=self.keyring, access_log=self.access_log)
            # the production server configuration: protocol, limits and timeouts
            config = server_config(app, self.settings, host="127.0.0.1")
            self.server = uvicorn.Server(config)
            serve = self.server.serve()
            self.ready.set()
            await serve

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(30)
        deadline = time.monotonic() + 30
        while not (self.server and self.server.started):
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test API server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Api:
    """A running API plus direct database helpers for arranging a test."""

    base_url: str
    settings: Settings
    db_url: str
    operator: Ed25519PrivateKey
    server: ServerThread
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30, **kw)

    async def tenant(
        self, org: str, *, operator: bool = False, limits: TenantLimits | None = None
    ) -> str:
        """Create the tenant (idempotent) and a new key; returns the token."""
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as c:
            await create_tenant(c, org, limits=limits)
            _, token = await create_api_key(c, org, operator=operator)
        return token

    async def module(
        self,
        name: str | bytes,
        key: ModuleKey,
        *,
        approve: bool = True,
        ttl: int = 3600,
        signer: Ed25519PrivateKey | None = None,
    ) -> tuple[str, int | None]:
        """Put, pin and (optionally) approve a module directly in the database."""
        data = wasm(name) if isinstance(name, str) else name
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as c:
            h = await put_blob(c, data)
            await pin_module(c, key, h)
            aid = None
            if approve:
                aid = await add_approval(
                    c, sign_approval(signer or self.operator, h, key, int(time.time()) + ttl)
                )
        return h, aid

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as c:
            cur = c.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


@pytest.fixture
def api_factory(settings: Settings, db_url: str) -> Iterator[Callable[..., Api]]:
    """Start an API with setting overrides; every started server is stopped at teardown."""
    servers: list[ServerThread] = []

    def start(**overrides: Any) -> Api:
        operator = Ed25519PrivateKey.generate()
        base = {
            "api_port": free_port(),
            "operator_keys": public_key_b64(operator.public_key()),
            "api_rate": 1000.0,
            "api_burst": 1000,
            "api_concurrency": 64,
            **overrides,
        }
        s = settings.replace(**base)
        server = ServerThread(s, Keyring.from_config(s.operator_keys))
        server.start()
        servers.append(server)
        return Api(
            base_url=f"http://127.0.0.1:{s.api_port}",
            settings=s,
            db_url=db_url,
            operator=operator,
            server=server,
        )

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()


KEY = ModuleKey(org="acme", domain="credit", action="approve", world_model_version="v1")


def decide_body(
    key: ModuleKey = KEY, inp: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "domain": key.domain,
        "action": key.action,
        "world_model_version": key.world_model_version,
        "input": {"risk": "low"} if inp is None else inp,
        **extra,
    }


@pytest.fixture
async def acme(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client authenticated as tenant ``acme``."""
    async with api.client(await api.tenant("acme")) as client:
        yield client
