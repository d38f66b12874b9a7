"""``spectral demo``: the whole platform end to end, in under a minute.

It starts (or reuses) the embedded PostgreSQL, migrates, allocates a generation, creates
a demo tenant with an API key and an operator signing key, then puts, pins and approves
an example decision module.  It starts the API and the workers under the supervisor,
publishes events that the workers handle, calls ``/api/decide``, and ends by printing
the health document.  Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import psycopg

from spectral_core import Publisher, Settings, allocate_generation
from spectral_core.embedded import EmbeddedPostgres
from spectral_core.errors import ConfigError
from spectral_core.migrate import run_migrations
from spectral_core.outbox import EventIn

from ._db import embedded_root
from .env import read_state

DEMO_ORG = "demo"
DEMO_KEY = ("demo", "credit", "approve_loan", "wm-1")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="a guided end-to-end run (embedded PostgreSQL unless SPECTRAL_DATABASE_URL is set)",
    )
    p.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    p.set_defaults(run=run)


def step(n: int, text: str) -> None:
    print(f"\n[{n}] {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _operator_key(path: Path) -> tuple[bytes, str]:
    """The demo operator's key pair, kept in the project folder so that approvals made by
    earlier demo runs still verify."""
    from spectral_core.modules import generate_operator_key
    from spectral_core.modules.approval import load_private_key, public_key_b64, save_private_key

    if path.exists():
        private = load_private_key(path)
        print(f"    operator key reused from {path}")
        return path.read_bytes(), public_key_b64(private.public_key())
    private_pem, public = generate_operator_key()
    save_private_key(path, private_pem)
    print(
        f"    operator key generated in {path} (public {public[:16]}...; the private key "
        "never leaves this machine)"
    )
    return private_pem, public


async def _seed(url: str, key_file: Path) -> tuple[str, str, str]:
    """Tenant + key, operator key, module put/pin/approve; returns (token, pubkey, hash)."""
    import wasmtime

    from spectral_core.modules import ModuleKey, sign_approval
    from spectral_core.modules.store import add_approval, pin_module, put_blob
    from spectral_core.tenants import create_api_key, create_tenant

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_tenant(conn, DEMO_ORG)
        _info, token = await create_api_key(conn, DEMO_ORG, label="spectral demo")
        print(f"    tenant {DEMO_ORG!r} with a new API key (the database keeps only its hash):")
        print(f"    {token}")
        private_pem, public = _operator_key(key_file)
        wat = (files("spectral_cli") / "demo_decision.wat").read_text()
        wasm = bytes(wasmtime.wat2wasm(wat))
        content_hash = await put_blob(conn, wasm)
        key = ModuleKey(
            org=DEMO_KEY[0], domain=DEMO_KEY[1], action=DEMO_KEY[2], world_model_version=DEMO_KEY[3]
        )
        await pin_module(conn, key, content_hash)
        approval = sign_approval(private_pem, content_hash, key, int(time.time()) + 3600)
        approval_id = await add_approval(conn, approval)
        print(
            f"    module sha256:{content_hash[:16]}... put, pinned to {'/'.join(DEMO_KEY)}, "
            f"approved (approval #{approval_id}, expires in 1 h)"
        )
    return token, public, content_hash


def run(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    embedded: EmbeddedPostgres | None = None
    app: subprocess.Popen[bytes] | None = None
    try:
        step(1, "database")
        try:
            up = read_state(settings)
        except ConfigError:
            up = None
        if up is not None:
            print(
                f"    a `spectral up` is running here (generation {up['generation']}): the demo "
                "starts its own API and workers on a new generation in the same database and "
                "stops them at the end; yours keep running"
            )
        if settings.database_url:
            url = settings.database_url
            print("    using SPECTRAL_DATABASE_URL")
        else:
            embedded = EmbeddedPostgres(embedded_root(settings))
            reused = embedded.is_running()
            url = embedded.start()
            print(
                f"    embedded PostgreSQL {'reused' if reused else 'started'} "
                f"(data in {embedded.root})"
            )
            if reused:
                embedded = None  # somebody else (spectral up) owns it: do not stop it
        with psycopg.connect(url, autocommit=True) as conn:
            applied = run_migrations(conn)
            generation = allocate_generation(conn, "demo", "spectral demo")
        print(f"    migrations applied: {len(applied)}; generation {generation} allocated")

        step(2, "tenant, operator key, decision module")
        home = embedded_root(settings).parent
        home.mkdir(parents=True, exist_ok=True)
        token, public, content_hash = anyio.run(
            _seed, url, home / "demo-operator.pem", backend="asyncio"
        )

        step(3, "starting spectral-api and spectral-workers under the supervisor")
        from spectral_core.testing import write_script

        script = write_script(
            home / "demo-agent-script.json",
            [
                {
                    "content": "",
                    "tool_calls": [
                        {"name": "write_fact", "args": {"key": "last_price", "value": 10}}
                    ],
                },
                {"content": {"summary": "price observed and recorded"}, "output_tokens": 8},
            ],
        )
        port = args.port or _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
        env.update(
            SPECTRAL_DATABASE_URL=url,
            SPECTRAL_GENERATION=str(generation),
            SPECTRAL_API_PORT=str(port),
            SPECTRAL_OPERATOR_KEYS=public,
            SPECTRAL_LOG_LEVEL="warning",
            SPECTRAL_LOG_FORMAT="console",
            SPECTRAL_LLM_CREDENTIAL__CREDIT="demo-credential",
            SPECTRAL_AGENT_PROVIDER="scripted",
            SPECTRAL_AGENT_SCRIPT_PATH=str(script),
        )
        app = subprocess.Popen(
            [sys.executable, "-m", "spectral_cli.supervisor", "--grace", "10"], env=env
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _probe(base):
            if time.monotonic() > deadline:
                raise ConfigError("the API did not become healthy within 60 s")
            if app.poll() is not None:
                raise ConfigError(f"the supervisor exited with code {app.returncode}")
            time.sleep(0.3)
        print(f"    API healthy at {base}")

        step(4, "publishing 5 events (one transaction) for the workers")
        with psycopg.connect(url, autocommit=True) as conn:
            with conn.transaction():
                ids = Publisher(generation).publish_many(
                    conn,
                    [
                        EventIn(
                            topic="platform.record",
                            payload={"n": i},
                            idempotency_key=f"demo-{generation}-{i}",
                        )
                        for i in range(5)
                    ],
                )
            wait_until = time.monotonic() + 20
            while time.monotonic() < wait_until:
                done = conn.execute(
                    "SELECT count(*) FROM core.outbox WHERE id = ANY(%s) AND status = 'done'",
                    (ids,),
                ).fetchone()
                if done and done[0] == len(ids):
                    break
                time.sleep(0.1)
            handled = conn.execute(
                "SELECT count(*) FROM core.event_log WHERE outbox_id = ANY(%s)", (ids,)
            ).fetchone()
        print(
            f"    outbox rows {ids[0]}..{ids[-1]}: {handled[0] if handled else 0}/5 handled by "
            f"generation {generation}'s workers (exactly once, ledger in core.event_handled)"
        )

        step(5, "World Agent: one observation, one LangGraph turn (scripted model)")
        with psycopg.connect(url, autocommit=True) as conn:
            Publisher(generation).publish(
                conn,
                "world.observe",
                {"org": DEMO_ORG, "domain": "credit", "observation": {"price": 10}},
                idempotency_key=f"demo-observe-{generation}",
            )
            decided = None
            until = time.monotonic() + 30
            while decided is None and time.monotonic() < until:
                decided = conn.execute(
                    "SELECT payload FROM core.outbox WHERE generation = %s AND topic = "
                    "'world.decided'",
                    (generation,),
                ).fetchone()
                time.sleep(0.2)
            fact = conn.execute(
                "SELECT value FROM agent.world_facts WHERE org = %s AND "
                "domain = 'credit' AND key = 'last_price'",
                (DEMO_ORG,),
            ).fetchone()
        print(f"    turn published world.decided: {json.dumps(decided[0]) if decided else 'none'}")
        print(
            f"    the agent's tool wrote the world fact last_price = "
            f"{json.dumps(fact[0]) if fact else 'none'} (checkpointed in schema agent)"
        )

        step(6, "POST /api/decide")
        for doc in ({"amount": 1200, "risk": "low"}, {"amount": 90000, "risk": "high"}):
            code, body = _http(
                "POST",
                base + "/api/decide",
                {
                    "domain": DEMO_KEY[1],
                    "action": DEMO_KEY[2],
                    "world_model_version": DEMO_KEY[3],
                    "input": doc,
                },
                token,
            )
            print(f"    input {json.dumps(doc)} -> HTTP {code} {json.dumps(body)}")
        code, body = _http(
            "POST",
            base + "/api/decide",
            {"domain": "credit", "action": "unknown", "world_model_version": "wm-1", "input": {}},
            token,
        )
        print(f"    an unknown module -> HTTP {code} {body.get('title') if body else ''}")

        step(7, "GET /health")
        code, body = _http("GET", base + "/health")
        print(f"    HTTP {code}")
        print("    " + json.dumps(body, indent=2).replace("\n", "\n    "))
        print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
        return 0
    finally:
        if app is not None and app.poll() is None:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(20)
            except subprocess.TimeoutExpired:
                app.kill()
        if embedded is not None:
            embedded.stop()


def _probe(base: str) -> bool:
    try:
        return _http("GET", base + "/health")[0] == 200
    except OSError:
        return False
