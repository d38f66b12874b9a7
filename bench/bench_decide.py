"""``POST /api/decide`` (cached trivial module) vs a bare Starlette endpoint, same server.

    python bench/bench_decide.py                          # ~1 min
    python bench/bench_decide.py --concurrency 32 --seconds 5 --rounds 3
    python bench/bench_decide.py --quick                  # smoke test
    python bench/bench_decide.py --http h11               # uvicorn's pure-Python parser
    python bench/bench_decide.py --access-log             # with spectral-api's access log

What runs:

* a fresh embedded PostgreSQL (``spectral_core.embedded.EmbeddedPostgres``), migrated, one
  generation, one tenant + key, the trivial ``tests/modules/decision.wat`` put, pinned and
  approved by a throw-away operator key;
* one ``spectral-api`` server process (uvicorn, one worker, the real ``create_app`` with
  its middleware) that also serves ``/bench/bare``: a bare Starlette endpoint returning a
  constant JSON document (no auth, no DB, no sandbox) -- the ceiling for this stack.  It is
  measured as ``POST`` with the same JSON body as the decision (read, then ignored: the
  like-for-like baseline, the ratio reported) and as a body-less ``GET``;
* a load generator in this process: ``--concurrency`` keep-alive HTTP/1.1 connections on
  raw anyio sockets (cheap per request, so the client is not the bottleneck), each sending
  its next request as soon as the previous answer arrived.

Rounds alternate bare / decide; per variant the best round's requests/s and its p50/p99
latency are reported, plus decide/bare.  Rate limits are set high so nothing is refused;
auth hits the per-process key cache (1 s TTL) and the approval verdict is re-checked every
0.5 s (one indexed query), exactly as in production.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "tests" / "modules" / "decision.wat"
BODY = json.dumps(
    {
        "domain": "credit",
        "action": "approve",
        "world_model_version": "v1",
        "input": {"risk": "low", "amount": 1200},
    }
).encode()


# -- server side ----------------------------------------------------------------------------


def serve(port: int) -> None:
    """Child process: the real app plus ``/bench/bare``, on uvicorn."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from spectral_api import create_app
    from spectral_core import Settings, open_pools
    from spectral_core.boot import event_loop_options

    settings = Settings.from_env(os.environ)
    loop = event_loop_options(settings)  # the event loop spectral-api would run on
    # uvicorn re-raises SIGTERM after its graceful shutdown: make that a no-op (exit 0)
    signal.signal(signal.SIGTERM, lambda *_: None)

    async def bare(request: Request) -> Response:
        await request.body()
        return Response(b'{"decision":{"decision":"approve"}}', media_type="application/json")

    access_log = os.environ.get("BENCH_ACCESS_LOG") == "1"
    if access_log:  # as spectral-api logs: JSON lines at the settings' level (stdout: /dev/null)
        from spectral_core.logging import configure_logging

        configure_logging(fmt="json", level=settings.log_level)

    async def main() -> None:
        async with open_pools(settings) as db:
            app = create_app(settings, db, access_log=access_log)
            app.router.routes.append(Route("/bench/bare", bare, methods=["GET", "POST"]))
            http = os.environ.get("BENCH_HTTP", "auto")
            if http == "auto":  # as spectral-api serves: its guarded protocol and limits
                from spectral_api.server import server_config

                config = server_config(app, settings.replace(api_host="127.0.0.1", api_port=port))
            else:
                config = uvicorn.Config(
                    app,
                    host="127.0.0.1",
                    port=port,
                    log_config=None,
                    access_log=False,
                    lifespan="on",
                    http=http,
                )
            await uvicorn.Server(config).serve()

    profile = os.environ.get("BENCH_DECIDE_PROFILE")
    if profile:  # developer aid: cProfile the server, stats written at exit
        import cProfile

        cProfile.runctx(
            "anyio.run(main, backend='asyncio', backend_options=loop)", globals(), locals(), profile
        )
    else:
        anyio.run(main, backend="asyncio", backend_options=loop)


# -- setup ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(url: str) -> tuple[int, str, str]:
    """Migrate, allocate a generation, create tenant/key, put/pin/approve the module."""
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
    key = ModuleKey(org="bench", domain="credit", action="approve", world_model_version="v1")

    async def go() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            await create_tenant(c, "bench")
            _, token = await create_api_key(c, "bench")
            h = await put_blob(c, bytes(wasmtime.wat2wasm(MODULE.read_text())))
            await pin_module(c, key, h)
            await add_approval(c, sign_approval(pem, h, key, int(time.time()) + 3600))
        return token

    return generation, anyio.run(go, backend="asyncio"), public


# -- load generator -------------------------------------------------------------------------


def request_bytes(path: str, token: str | None, body: bytes | None) -> bytes:
    lines = [
        f"{'POST' if body else 'GET'} {path} HTTP/1.1",
        "Host: bench",
        "Connection: keep-alive",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def connection(
    port: int, payload: bytes, stop_at: float, latencies: list[float], statuses: dict[int, int]
) -> None:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    buf = b""
    async with stream:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await stream.send(payload)
            while b"\r\n\r\n" not in buf:
                buf += await stream.receive()
            head, _, buf = buf.partition(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                buf += await stream.receive()
            buf = buf[length:]
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1


async def load(port: int, payload: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    stop_at = started + seconds
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(connection, port, payload, stop_at, latencies, statuses)
    elapsed = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "requests": len(latencies),
        "statuses": statuses,
    }


def server_cpu_s(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of the server process so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:  # pragma: no cover - not Linux
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measure(
    port: int, pid: int, payload: bytes, concurrency: int, seconds: float
) -> dict[str, Any]:
    """One round of :func:`load`, plus the server's CPU time per request."""
    before = server_cpu_s(pid)
    result = anyio.run(load, port, payload, concurrency, seconds, backend="asyncio")
    after = server_cpu_s(pid)
    n = result["requests"]
    result["cpu_us"] = result["sys_us"] = None
    if before is not None and after is not None and n:
        result["cpu_us"] = (sum(after) - sum(before)) / n * 1e6
        result["sys_us"] = (after[1] - before[1]) / n * 1e6
    return result


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(request_bytes("/bench/bare", None, None))
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not become ready")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--only",
        choices=["bare", "bare-get", "decide"],
        default=None,
        help="run one variant (profiling aid; no ratio)",
    )
    p.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="auto: as spectral-api serves (spectral_api.server: httptools, guarded protocol); "
        "h11 or httptools: uvicorn's plain protocol",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="serve as spectral-api does by default: the AccessLog middleware and JSON logging "
        "at level info (one api.request line per request, bare and decide alike), the "
        "server's stdout discarded",
    )
    p.add_argument(
        "--inline-batch",
        type=int,
        default=None,
        help="SPECTRAL_SANDBOX_INLINE_BATCH of the server (default: the setting's default, 32; "
        "0 makes each inline decision in its own request task, as before ADR 0018)",
    )
    p.add_argument(
        "--binding",
        choices=["auto", "capi", "public"],
        default=None,
        help="SPECTRAL_SANDBOX_BINDING of the server (ADR 0026: the C API fast path or "
        "wasmtime-py's public API)",
    )
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.quick:
        args.seconds, args.rounds, args.warmup = 1.0, 1, 0.5

    from spectral_core.embedded import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="spectral-bench-decide-"))
    pg = EmbeddedPostgres(root)
    url = pg.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        generation, token, public = prepare(url)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
        env.update(
            {
                "SPECTRAL_DATABASE_URL": url,
                "SPECTRAL_GENERATION": str(generation),
                "SPECTRAL_OPERATOR_KEYS": public,
                "SPECTRAL_API_RATE": "1000000",
                "SPECTRAL_API_BURST": "1000000",
                "SPECTRAL_API_CONCURRENCY": "100000",
                "SPECTRAL_LOG_LEVEL": "info" if args.access_log else "warning",
                "BENCH_ACCESS_LOG": "1" if args.access_log else "0",
                "SPECTRAL_EVENT_LOOP": os.environ.get("SPECTRAL_EVENT_LOOP", "auto"),
                "BENCH_HTTP": args.http,
            }
        )
        if args.binding is not None:
            env["SPECTRAL_SANDBOX_BINDING"] = args.binding
        if args.inline_batch is not None:
            env["SPECTRAL_SANDBOX_INLINE_BATCH"] = str(args.inline_batch)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port)],
            env=env,
            stdout=subprocess.DEVNULL if args.access_log else None,
        )
        wait_ready(port, proc)
        variants = {
            "bare": request_bytes("/bench/bare", None, BODY),
            "bare-get": request_bytes("/bench/bare", None, None),
            "decide": request_bytes("/api/decide", token, BODY),
        }
        if args.only:
            variants = {args.only: variants[args.only]}
        for payload in variants.values():  # warm up: JIT compile, caches, pool
            anyio.run(load, port, payload, args.concurrency, args.warmup, backend="asyncio")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, payload in variants.items():
                results[name].append(
                    measure(port, proc.pid, payload, args.concurrency, args.seconds)
                )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.destroy()

    best = {name: max(rounds, key=lambda r: r["rps"]) for name, rounds in results.items()}
    if args.only:
        r = best[args.only]
        c = _median_cpu(results[args.only])
        print(
            f"{args.only}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, server CPU {c or 0:.0f} us/request, "
            f"statuses {r['statuses']}"
        )
        return 0
    for name, rounds in results.items():
        bad = {s: n for r in rounds for s, n in r["statuses"].items() if s != 200}
        if bad:
            print(f"WARNING: {name} got non-200 answers: {bad}")
    print(f"command: python {shlex.join(['bench/bench_decide.py', *sys.argv[1:]])}")
    import importlib.util

    from spectral_core.settings import SANDBOX_INLINE_BATCH

    parser = args.http
    if parser == "auto":
        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = os.environ.get("SPECTRAL_EVENT_LOOP", "auto")
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, uvicorn ({parser}, "
        f"{loop} loop), 1 server process, concurrency "
        f"{args.concurrency}, {args.rounds} round(s) x {args.seconds:g} s, best round shown, "
        f"access log {'on (JSON, info)' if args.access_log else 'off'}, inline batch "
        f"{SANDBOX_INLINE_BATCH if args.inline_batch is None else args.inline_batch}"
    )
    cpu = {name: _median_cpu(rounds) for name, rounds in results.items()}
    sys_cpu = {name: _median_cpu(rounds, "sys_us") for name, rounds in results.items()}
    print(f"{'endpoint':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU/req (sys)':>21}")
    for name, label in (
        ("bare-get", "GET /bench/bare"),
        ("bare", "POST /bench/bare"),
        ("decide", "POST /api/decide"),
    ):
        r = best[name]
        c = "n/a" if cpu[name] is None else f"{cpu[name]:.0f} us ({sys_cpu[name] or 0:.0f})"
        print(f"{label:<22} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {c:>21}")
    ratio = best["decide"]["rps"] / best["bare"]["rps"]
    ratio_get = best["decide"]["rps"] / best["bare-get"]["rps"]
    print(
        f"decide / bare POST (same body) = {ratio:.0%}; decide / bare GET = {ratio_get:.0%} "
        "(best rounds; target >= 60%)"
    )
    # rounds run back to back (bare, bare GET, decide): the ratio within each round is less
    # exposed to the box's drift than best-vs-best
    paired = sorted(
        d["rps"] / b["rps"] for b, d in zip(results["bare"], results["decide"], strict=True)
    )
    print(
        f"decide / bare POST per round: {', '.join(f'{x:.0%}' for x in paired)}; "
        f"median {statistics.median(paired):.0%}"
    )
    if cpu["bare"] and cpu["decide"]:
        # less exposed to other load on the box than requests/s: what the ratio would be if
        # the server's own CPU were the only limit
        print(
            f"server CPU per request, bare POST / decide (medians over rounds) = "
            f"{cpu['bare'] / cpu['decide']:.0%}"
        )
    return 0


def _median_cpu(rounds: list[dict[str, Any]], key: str = "cpu_us") -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


if __name__ == "__main__":
    sys.exit(main())
