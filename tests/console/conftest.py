"""Fixtures for the console's browser tests: the real spectral-api (serving ``/console/`` and
the operator endpoints) and spectral-workers processes on the test database, and headless
Chromium (the Debian ``chromium`` package) driven by Playwright for Python.

Locally a missing browser or Playwright skips these tests; under ``CI=true`` it fails them
(``tests/tools.py``; ``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from tests.acceptance.procs import Proc, start_api, start_workers, wait_for
from tests.tools import require_module, require_tool

APP = Path(__file__).resolve().parents[2] / "apps" / "console"
VENDOR = Path(__file__).parent / "vendor"
AXE = VENDOR / "axe-core-4.14.1.min.js"
#: where the tests write the screenshots of each view: docs/console/ when CONSOLE_SCREENSHOTS
#: names it (``CONSOLE_SCREENSHOTS=docs/console python -m pytest tests/console``), else a
#: temporary folder (the screenshots are still taken, so that path is exercised)
SCREENSHOTS_ENV = "CONSOLE_SCREENSHOTS"
#: a module the tests pin and approve: the demo's decision module
MODULE_KEY = ("acme", "credit", "approve_loan", "wm-1")
#: generous bounds for a loaded 2-core machine (Playwright's expect polls until then)
UI_TIMEOUT_MS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A plain HTTP call (no browser): status and decoded JSON body (or None); status 0
    when nothing answers."""
    import json

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except OSError:
        return 0, None  # nothing answers (yet)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


@dataclass
class Seeded:
    operator_token: str
    tenant_token: str
    operator_private_pem: bytes
    operator_public: str
    content_hash: str
    approval_id: int


async def _seed(url: str) -> Seeded:
    import wasmtime

    from spectral_core.modules import ModuleKey, generate_operator_key, sign_approval
    from spectral_core.modules.store import add_approval, pin_module, put_blob
    from spectral_core.tenants import create_api_key, create_tenant

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_tenant(conn, "ops")
        _info, operator_token = await create_api_key(
            conn, "ops", operator=True, label="console tests"
        )
        await create_tenant(conn, MODULE_KEY[0])
        _info, tenant_token = await create_api_key(conn, MODULE_KEY[0], label="acme app")
        private_pem, public = generate_operator_key()
        wat = (files("spectral_cli") / "demo_decision.wat").read_text()
        content_hash = await put_blob(conn, bytes(wasmtime.wat2wasm(wat)))
        key = ModuleKey(
            org=MODULE_KEY[0],
            domain=MODULE_KEY[1],
            action=MODULE_KEY[2],
            world_model_version=MODULE_KEY[3],
        )
        await pin_module(conn, key, content_hash)
        approval = sign_approval(private_pem, content_hash, key, int(time.time()) + 3600)
        approval_id = await add_approval(conn, approval)
    return Seeded(operator_token, tenant_token, private_pem, public, content_hash, int(approval_id))


@dataclass
class Stack:
    """One spectral-api process (generation ``generation``) and the workers a test starts."""

    db_url: str
    generation: int
    port: int
    seeded: Seeded
    tmp: Path
    api: Proc
    workers: list[Proc] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def console(self, view: str = "") -> str:
        return f"{self.base}/console/" + (f"#/{view}" if view else "")

    def start_workers(self, generation: int | None = None, **extra: str) -> Proc:
        gen = self.generation if generation is None else generation
        n = len(self.workers)
        w = start_workers(self.db_url, gen, self.tmp / f"workers-{n}.log", **extra)
        self.workers.append(w)
        return w

    def scalar(self, sql: str, params: Any = None) -> Any:
        with psycopg.connect(self.db_url, autocommit=True) as c:
            row = c.execute(sql, params).fetchone()
            return row[0] if row else None

    def decide(self) -> int:
        """The status of one /api/decide call on the seeded module with the tenant key."""
        status, _ = http(
            "POST",
            f"{self.base}/api/decide",
            {
                "domain": MODULE_KEY[1],
                "action": MODULE_KEY[2],
                "world_model_version": MODULE_KEY[3],
                "input": {"amount": 1200, "risk": "low"},
            },
            self.seeded.tenant_token,
        )
        return status


def _stop(p: Proc) -> None:
    if p.p.poll() is None:
        p.signal(signal.SIGTERM)
        try:
            p.wait(20)
        except Exception:  # noqa: BLE001 - a stuck process is killed below
            pass
    p.kill()


@pytest.fixture
def stack(db_url: str, generation: int, tmp_path: Path) -> Iterator[Stack]:
    """spectral-api on a fresh database with an operator key, a tenant key and an approved
    module seeded; no workers (each test starts the ones it needs)."""
    # in a thread: Playwright's sync API keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        seeded = pool.submit(anyio.run, _seed, db_url).result()
    port = free_port()
    api = start_api(
        db_url,
        generation,
        port,
        tmp_path / "api.log",
        SPECTRAL_OPERATOR_KEYS=seeded.operator_public,
        SPECTRAL_VERSION="console-test",
        SPECTRAL_CONSOLE_DIR=str(APP),  # this checkout's app, whatever copy is installed
    )
    s = Stack(db_url, generation, port, seeded, tmp_path, api)
    try:
        wait_for(
            lambda: http("GET", f"{s.base}/console/")[0] == 200 or api.p.poll() is not None,
            60,
            "spectral-api serving /console/",
        )
        assert api.p.poll() is None, api.output()[-3000:]
        yield s
    finally:
        for w in s.workers:
            _stop(w)
        _stop(api)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system package, launched once per test module.

    Not once per session: Playwright's sync API keeps an asyncio loop running in the main
    thread while it is started, and every later async test of the session (anyio) would
    then fail with "Runner.run() cannot be called from a running event loop"."""
    path = require_tool("chromium", "/usr/bin/chromium")
    sync_api = require_module("playwright.sync_api")
    # small /dev/shm in containers crashes tabs; as root Chromium refuses to start sandboxed
    args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


@dataclass
class PageErrors:
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page (no cookies). Fails the test if the page threw, or
    if the browser reported a Content-Security-Policy violation."""
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
    pg = context.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)
    seen = PageErrors()
    pg.on("pageerror", lambda e: seen.errors.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: (
            seen.errors.append(f"console: {m.text}")
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    try:
        yield pg
    finally:
        context.close()
    assert seen.errors == []


def login(page: Any, stack: Stack) -> None:
    """Sign in through the form with the operator key, as an operator would."""
    from playwright.sync_api import expect

    page.goto(stack.console())
    page.get_by_label("Operator API key").fill(stack.seeded.operator_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text("signed in as")
    expect(page.locator("#overview-version")).not_to_be_empty()  # the session reads


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Save a screenshot of the page as ``<name>.png`` (docs/console/ when asked)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Run axe-core (vendored, test-only) in the page; the violations it reports (WCAG 2.x
    A and AA rules). Evaluated through the DevTools protocol, so the page's CSP, which
    forbids inline script, is left as it is."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate(
        """async () => {
          const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}});
          return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
        }"""
    )
    return list(result)
