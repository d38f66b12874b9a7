"""Memory of a worker and an API process under sustained load (issue 8, target 6).

    python bench/bench_memory.py                 # 100,000 events and 100,000 decisions
    python bench/bench_memory.py --events 20000 --requests 20000   # quicker

A fresh embedded PostgreSQL (default durability); ``spectral-workers`` and ``spectral-api``
run as real processes with production logging (JSON to /dev/null).  The worker drains
``--events`` ``platform.record`` events published in batches; the API answers
``--requests`` ``POST /api/decide`` calls with a cached module (keep-alive clients).  RSS is
sampled as the load goes; the figures are RSS after start-up, after 10 % of the load
(warm), at the end, and the peak, so growth over the run is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import psycopg

from spectral_core import Publisher, allocate_generation
from spectral_core.embedded import EmbeddedPostgres
from spectral_core.migrate import run_migrations
from spectral_core.outbox import EventIn

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


async def seed(url: str) -> tuple[str, str]:
    import wasmtime

    from spectral_core.modules import ModuleKey, generate_operator_key, sign_approval
    from spectral_core.modules.store import add_approval, pin_module, put_blob
    from spectral_core.tenants import TenantLimits, create_api_key, create_tenant

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_tenant(
            conn, "mem", limits=TenantLimits(rate=1e6, burst=10**6, concurrency=1000)
        )
        _info, token = await create_api_key(conn, "mem")
        pem, public = generate_operator_key()
        wasm = wasmtime.wat2wasm((ROOT / "tests" / "modules" / "decision.wat").read_text())
        digest = await put_blob(conn, wasm)
        key = ModuleKey(org="mem", domain="d", action="a", world_model_version="v1")
        await pin_module(conn, key, digest)
        await add_approval(conn, sign_approval(pem, digest, key, int(time.time()) + 3600))
    return token, public


def start(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def worker_phase(url: str, env: dict[str, str], n: int) -> dict[str, float]:
    proc = start("spectral_workers", env)
    try:
        time.sleep(3)
        figures = {"start": rss(proc.pid)}
        peak = figures["start"]
        gen = int(env["SPECTRAL_GENERATION"])
        with psycopg.connect(url, autocommit=True) as conn:
            sent = 0
            while sent < n:
                k = min(1000, n - sent)
                Publisher(gen).publish_many(
                    conn,
                    [EventIn(topic="platform.record", payload={"i": sent + i}) for i in range(k)],
                )
                sent += k
                done = conn.execute("SELECT count(*) FROM core.event_log").fetchone()[0]
                while sent - done > 20_000:  # keep the backlog bounded
                    time.sleep(0.2)
                    done = conn.execute("SELECT count(*) FROM core.event_log").fetchone()[0]
                peak = max(peak, rss(proc.pid))
                if "warm" not in figures and done >= n // 10:
                    figures["warm"] = rss(proc.pid)
            while conn.execute("SELECT count(*) FROM core.event_log").fetchone()[0] < n:
                time.sleep(0.2)
                peak = max(peak, rss(proc.pid))
        figures["end"] = rss(proc.pid)
        figures["peak"] = peak
        return figures
    finally:
        proc.terminate()
        proc.wait(30)


async def api_phase(port: int, token: str, pid: int, n: int, concurrency: int) -> dict[str, float]:
    body = {"domain": "d", "action": "a", "world_model_version": "v1", "input": {"x": 1}}
    figures = {"start": rss(pid)}
    peak = figures["start"]
    done = 0
    errors = 0

    async def client() -> None:
        nonlocal done, errors, peak
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as c:
            while done < n:
                done += 1
                r = await c.post("/api/decide", json=body)
                if r.status_code != 200:
                    errors += 1
                if done % 2000 == 0:
                    peak = max(peak, rss(pid))
                    if "warm" not in figures and done >= n // 10:
                        figures["warm"] = rss(pid)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    figures["end"] = rss(pid)
    figures["peak"] = max(peak, figures["end"])
    figures["errors"] = errors
    return figures


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    print("$", shlex.join([sys.executable, *sys.argv]))
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench-mem-")), durable=True)
    url = pg.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            run_migrations(conn)
            gen = allocate_generation(conn, "bench-memory")
        token, public = asyncio.run(seed(url))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
        env.update(
            SPECTRAL_DATABASE_URL=url,
            SPECTRAL_GENERATION=str(gen),
            SPECTRAL_API_PORT=str(port),
            SPECTRAL_OPERATOR_KEYS=public,
            SPECTRAL_LOG_FORMAT="json",
        )
        t0 = time.monotonic()
        w = worker_phase(url, env, a.events)
        print(
            f"worker  after {a.events:,} events ({time.monotonic() - t0:.0f} s): "
            f"start {w['start']:.1f} MB, warm {w.get('warm', 0):.1f} MB, "
            f"end {w['end']:.1f} MB, peak {w['peak']:.1f} MB"
        )
        api = start("spectral_api", env)
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            t0 = time.monotonic()
            r = asyncio.run(api_phase(port, token, api.pid, a.requests, a.concurrency))
            print(
                f"api     after {a.requests:,} decisions ({time.monotonic() - t0:.0f} s, "
                f"{int(r['errors'])} non-200): start {r['start']:.1f} MB, "
                f"warm {r.get('warm', 0):.1f} MB, end {r['end']:.1f} MB, "
                f"peak {r['peak']:.1f} MB"
            )
        finally:
            api.terminate()
            api.wait(30)
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
