"""A quiet tenant's latency next to a tenant whose decisions are cheap in fuel but slow in
wall time (issue 16.11, ADR 0023).

    python bench/bench_inline_wall.py                    # ~3 min
    python bench/bench_inline_wall.py --quick            # smoke test

What runs (the harness of ``bench/bench_decide.py``: embedded PostgreSQL, real
``spectral-api`` servers on uvicorn, raw-socket load generator in this process):

* tenant ``quiet``: ``tests/modules/decision.wat`` (a few hundred fuel), one connection
  sending a request every ``--interval-ms`` (open loop: a request is not delayed by the
  previous one's latency beyond its own slot);
* tenant ``noisy``: ``tests/modules/page_toucher.wat`` (~45k fuel, under the inline fuel
  cap, but it writes one byte in every 4 KiB page of 16 MiB: milliseconds per call),
  ``--streams`` closed-loop connections.

Three servers run side by side: ``lanes`` (the defaults: ``SPECTRAL_SANDBOX_INLINE_MS``
bounds inline calls in wall time, ADR 0023, and a tenant's calls run in at most
``SPECTRAL_SANDBOX_TENANT_THREADS`` worker threads at once, ADR 0040), ``no lanes`` (no
per-tenant bound on worker threads: the behaviour before ADR 0040) and ``unbounded``
(``SPECTRAL_SANDBOX_INLINE_MS=1000`` too: inline calls bounded by fuel only, the behaviour
before ADR 0023).  ``--only NAME`` runs a subset; ``--tenant-threads N`` (repeatable)
replaces ``lanes`` by one ``lanes=N`` server per value.  ``loop wait`` is the time the
server's event-loop thread was runnable but waiting for a CPU (``/proc`` schedstat).  Every round measures, in a rotated
order, the quiet tenant alone and next to 1 and ``--streams`` noisy streams, on each
server.  Reported: the quiet tenant's p50/p99 per case (median over rounds) and the ratio
of its p99 to its own baseline (alone, same server) per round, median of ratios, with the
per-round ratios beside it.  Target: within 2x.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_decide as harness  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "tests" / "modules"


def body(action: str) -> bytes:
    return (
        b'{"domain":"credit","action":"%s","world_model_version":"v1","input":{"risk":"low"}}'
        % action.encode()
    )


def prepare(url: str) -> tuple[int, dict[str, str], str]:
    """Migrate, a generation, tenants quiet and noisy with their modules approved."""
    import wasmtime

    from spectral_core.generations import allocate_generation
    from spectral_core.migrate import run_migrations
    from spectral_core.modules import (
        ModuleKey,
        add_approval,
        generate_operator_key,
        pin_module,
        put_blob,
        sign_approval,
    )
    from spectral_core.tenants import create_api_key, create_tenant

    with psycopg.connect(url, autocommit=True) as conn:
        run_migrations(conn)
        generation = allocate_generation(conn, "bench")
    pem, public = generate_operator_key()

    async def go() -> dict[str, str]:
        tokens = {}
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            for org, module in (("quiet", "decision"), ("noisy", "page_toucher")):
                await create_tenant(c, org)
                _, tokens[org] = await create_api_key(c, org)
                key = ModuleKey(org=org, domain="credit", action=org, world_model_version="v1")
                data = bytes(wasmtime.wat2wasm((MODULES / f"{module}.wat").read_text()))
                h = await put_blob(c, data)
                await pin_module(c, key, h)
                await add_approval(c, sign_approval(pem, h, key, int(time.time()) + 3600))
        return tokens

    return generation, anyio.run(go, backend="asyncio"), public


async def quiet_client(port: int, payload: bytes, interval: float, stop_at: float) -> list[float]:
    """One connection, one request per ``interval`` (skipping slots it overran)."""
    latencies: list[float] = []
    stream = await anyio.connect_tcp("127.0.0.1", port)
    buf = b""
    async with stream:
        next_at = time.perf_counter()
        while next_at < stop_at:
            t0 = time.perf_counter()
            await stream.send(payload)
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive()
            head, _, buf = buf.partition(b"\r\n\r\n")
            assert head[9:12] == b"200", head
            length = next(
                int(v)
                for n, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                if n.strip().lower() == b"content-length"
            )
            while len(buf) < length:
                buf += await stream.receive()
            buf = buf[length:]
            latencies.append(time.perf_counter() - t0)
            next_at += interval
            while next_at < time.perf_counter():
                next_at += interval
            await anyio.sleep(max(0.0, next_at - time.perf_counter()))
    return latencies


def loop_thread_times(pid: int) -> tuple[int, int]:
    """``(on CPU, waiting for a CPU)`` of the server's main thread (its event loop), ns,
    from ``/proc/<pid>/task/<pid>/schedstat``; (0, 0) where that file does not exist."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except OSError:
        return 0, 0
    return int(fields[0]), int(fields[1])


async def case(
    port: int, tokens: dict[str, str], streams: int, seconds: float, interval: float
) -> dict[str, float]:
    quiet = harness.request_bytes("/api/decide", tokens["quiet"], body("quiet"))
    noisy = harness.request_bytes("/api/decide", tokens["noisy"], body("noisy"))
    stop_at = time.perf_counter() + seconds
    noisy_lat: list[float] = []
    statuses: dict[int, int] = {}
    out: dict[str, Any] = {}

    async def run_quiet() -> None:
        out["lat"] = await quiet_client(port, quiet, interval, stop_at)

    async with anyio.create_task_group() as tg:
        for _ in range(streams):
            tg.start_soon(harness.connection, port, noisy, stop_at, noisy_lat, statuses)
        tg.start_soon(run_quiet)
    lat = sorted(out["lat"])
    q = statistics.quantiles(lat, n=100)
    return {
        "p50": q[49] * 1000,
        "p99": q[98] * 1000,
        "noisy_rps": len(noisy_lat) / seconds,
        "noisy_bad": sum(n for s, n in statuses.items() if s != 200),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--interval-ms", type=float, default=20.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--tenant-threads",
        type=int,
        action="append",
        help="run a lanes server with this SPECTRAL_SANDBOX_TENANT_THREADS (repeatable) "
        "instead of the default one",
    )
    p.add_argument(
        "--only", action="append", help="a server to run (repeatable; default: all three)"
    )
    args = p.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1.5, 1

    from spectral_core.embedded import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="spectral-bench-inline-"))
    pg = EmbeddedPostgres(root)
    url = pg.start()
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    cases = {"alone": 0, "1 stream": 1, f"{args.streams} streams": args.streams}
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        generation, tokens, public = prepare(url)
        lanes = {"lanes": {}}
        if args.tenant_threads:
            lanes = {
                f"lanes={n}": {"SPECTRAL_SANDBOX_TENANT_THREADS": str(n)}
                for n in args.tenant_threads
            }
        servers = {
            **lanes,
            "no lanes": {"SPECTRAL_SANDBOX_TENANT_THREADS": "256"},
            "unbounded": {
                "SPECTRAL_SANDBOX_TENANT_THREADS": "256",
                "SPECTRAL_SANDBOX_INLINE_MS": "1000",
            },
        }
        for name, extra in servers.items():
            if args.only and name not in args.only:
                continue
            port = harness.free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
            env.update(
                {
                    "SPECTRAL_DATABASE_URL": url,
                    "SPECTRAL_GENERATION": str(generation),
                    "SPECTRAL_OPERATOR_KEYS": public,
                    "SPECTRAL_API_RATE": "1000000",
                    "SPECTRAL_API_BURST": "1000000",
                    "SPECTRAL_API_CONCURRENCY": "100000",
                    "SPECTRAL_LOG_LEVEL": "warning",
                    "BENCH_ACCESS_LOG": "0",
                    "BENCH_HTTP": "auto",
                }
            )
            env.update(extra)
            proc = subprocess.Popen(
                [sys.executable, harness.__file__, "--serve", str(port)], env=env
            )
            procs[name] = (proc, port)
            harness.wait_ready(port, proc)
        for _, port in procs.values():  # warm up: module loads, caches
            anyio.run(case, port, tokens, 1, 1.0, args.interval_ms / 1000, backend="asyncio")
        order = [(server, c) for server in procs for c in cases]
        for r in range(args.rounds):
            rotated = order[r % len(order) :] + order[: r % len(order)]
            for server, c in rotated:
                proc, port = procs[server]
                before = loop_thread_times(proc.pid)
                res = anyio.run(
                    case,
                    port,
                    tokens,
                    cases[c],
                    args.seconds,
                    args.interval_ms / 1000,
                    backend="asyncio",
                )
                after = loop_thread_times(proc.pid)
                res["loop_wait"] = (after[1] - before[1]) / 1e6 / args.seconds
                results.setdefault((server, c), []).append(res)
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.destroy()

    print(
        f"command: python bench/bench_inline_wall.py {' '.join(sys.argv[1:])}\n"
        f"{os.cpu_count()} CPUs, {args.rounds} round(s) x {args.seconds:g} s, quiet tenant "
        f"one request per {args.interval_ms:g} ms; medians over rounds; loop wait: time the\n"
        "server's event-loop thread was runnable but waiting for a CPU, ms per second"
    )
    print(
        f"{'server':<10} {'case':<11} {'quiet p50':>9} {'quiet p99':>9} "
        f"{'p99/alone':>9} {'noisy req/s':>11} {'loop wait':>9}"
    )
    for server in procs:
        alone = results[(server, "alone")]
        for c in cases:
            rounds = results[(server, c)]
            ratios = [x["p99"] / a["p99"] for x, a in zip(rounds, alone, strict=True)]
            bad = sum(x["noisy_bad"] for x in rounds)
            print(
                f"{server:<10} {c:<11} {statistics.median(x['p50'] for x in rounds):>7.2f}ms "
                f"{statistics.median(x['p99'] for x in rounds):>7.2f}ms "
                f"{statistics.median(ratios):>8.1f}x "
                f"{statistics.median(x['noisy_rps'] for x in rounds):>11.0f} "
                f"{statistics.median(x['loop_wait'] for x in rounds):>6.0f}ms/s"
                + f"  rounds: {' '.join(f'{r:.1f}x' for r in ratios)}"
                + (f"  ({bad} non-200)" if bad else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
