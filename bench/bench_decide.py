"""``POST /api/decide`` (cached trivial module) vs a bare Starlette endpoint, paired rounds.

    python bench/bench_decide.py                          # 5 rounds, ~2 min
    python bench/bench_decide.py --concurrency 32 --seconds 5 --rounds 7
    python bench/bench_decide.py --quick                  # smoke test (numbers meaningless)
    python bench/bench_decide.py --http h11               # uvicorn's pure-Python parser
    python bench/bench_decide.py --access-log             # with spectral-api's access log

What runs:

* a fresh embedded PostgreSQL (``spectral_core.embedded.EmbeddedPostgres``), migrated, one
  generation, one tenant + key, the trivial ``tests/modules/decision.wat`` put, pinned and
  approved by a throw-away operator key;
* one ``spectral-api`` server process (uvicorn, one worker, the real ``create_app`` with
  its middleware) that also serves ``/bench/bare``: a constant JSON document (no auth, no
  DB, no sandbox) behind the app's middleware and routes, as ``POST`` with the decision's
  JSON body (read, then ignored) and as a body-less ``GET``;
* a second server process: a minimal Starlette app (that one route, no middleware) on plain
  uvicorn with the same parser and loop -- the ceiling of the stack, the ratio of record;
* a load generator in this process: ``--concurrency`` keep-alive HTTP/1.1 connections on
  raw anyio sockets, each sending its next request as soon as the previous answer arrived.
  It shares the machine's cores with the servers, so its own CPU is reported: a round where
  it used about a whole core (``client busy``) measured the client as much as the server.

Every round measures every variant once, the order rotated per round.  Reported: medians
over rounds per variant (requests/s, p50/p99, server CPU per request read from ``/proc``,
the load generator's CPU), every round's decide/bare ratios, and the median of the
per-round ratios (never best against best).  Figures of record need a quiet machine.
Rate limits are set high so nothing is refused; auth hits the per-process key cache and the
approval verdict is re-checked periodically (one indexed query), exactly as in production.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
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
    from spectral_core.boot import event_loop_options, freeze_startup_heap

    settings = Settings.from_env(os.environ)
    loop = event_loop_options(settings)  # the event loop spectral-api would run on
    shutdown_tracing = None
    if getattr(settings, "otlp_endpoint", ""):  # the SDK as spectral-api configures it
        from spectral_core.tracing import configure as configure_tracing

        shutdown_tracing = configure_tracing(settings, service_name="spectral-api")
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
            freeze_startup_heap()  # as spectral-api does once its app is built (ADR 0039)
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
    if shutdown_tracing is not None:
        shutdown_tracing()


def serve_bare(port: int) -> None:
    """Child process: a minimal Starlette app (one route, no middleware) on plain uvicorn,
    the same HTTP parser and event loop as the app: the ceiling of the stack itself."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    signal.signal(signal.SIGTERM, lambda *_: None)

    async def bare(request: Request) -> Response:
        await request.body()
        return Response(b'{"decision":{"decision":"approve"}}', media_type="application/json")

    app = Starlette(routes=[Route("/bench/bare", bare, methods=["GET", "POST"])])
    http = os.environ.get("BENCH_HTTP", "auto")
    loop = os.environ.get("SPECTRAL_EVENT_LOOP", "auto")
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        http="httptools" if http == "auto" and importlib.util.find_spec("httptools") else http,
        loop=loop,
    )
    uvicorn.Server(config).run()


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


def client_cpu_s() -> float:
    """CPU seconds of this process (the load generator) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(
    port: int, pid: int, payload: bytes, concurrency: int, seconds: float
) -> dict[str, Any]:
    """One round of :func:`load`, plus the server's CPU time per request and the load
    generator's: its share of one core (``client_busy``) near 1 means the round measured the
    client, not the server."""
    before, c0, t0 = server_cpu_s(pid), client_cpu_s(), time.perf_counter()
    result = anyio.run(load, port, payload, concurrency, seconds, backend="asyncio")
    after, c1, t1 = server_cpu_s(pid), client_cpu_s(), time.perf_counter()
    n = result["requests"]
    result["cpu_us"] = result["sys_us"] = None
    if before is not None and after is not None and n:
        result["cpu_us"] = (sum(after) - sum(before)) / n * 1e6
        result["sys_us"] = (after[1] - before[1]) / n * 1e6
    result["client_cpu_us"] = (c1 - c0) / n * 1e6 if n else None
    result["client_busy"] = (c1 - c0) / (t1 - t0)
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
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--only",
        choices=["bare", "bare-get", "bare-min", "decide"],
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
    p.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return 0
    if args.quick:
        args.seconds, args.rounds, args.warmup = 1.0, 2, 0.5

    from spectral_core.embedded import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="spectral-bench-decide-"))
    pg = EmbeddedPostgres(root)
    url = pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        generation, token, public = prepare(url)
        port, bare_port = free_port(), free_port()
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
        procs.append(proc)
        wait_ready(port, proc)
        bare_proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", str(bare_port)], env=env
        )
        procs.append(bare_proc)
        wait_ready(bare_port, bare_proc)
        # (port, server pid, request): the bare endpoint inside the app (behind its middleware
        # and routes) and as a minimal Starlette app in its own server process
        variants = {
            "bare-get": (port, proc.pid, request_bytes("/bench/bare", None, None)),
            "bare": (port, proc.pid, request_bytes("/bench/bare", None, BODY)),
            "bare-min": (bare_port, bare_proc.pid, request_bytes("/bench/bare", None, BODY)),
            "decide": (port, proc.pid, request_bytes("/api/decide", token, BODY)),
        }
        if args.only:
            variants = {args.only: variants[args.only]}
        for vport, _, payload in variants.values():  # warm up: JIT compile, caches, pool
            anyio.run(load, vport, payload, args.concurrency, args.warmup, backend="asyncio")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):
            # rotate: no variant always runs first (fresh) or last (after the others)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                vport, pid, payload = variants[name]
                results[name].append(measure(vport, pid, payload, args.concurrency, args.seconds))
    finally:
        for p_ in procs:
            p_.send_signal(signal.SIGTERM)
        for p_ in procs:
            try:
                p_.wait(20)
            except subprocess.TimeoutExpired:
                p_.kill()
        pg.destroy()

    med = {name: _medians(rounds) for name, rounds in results.items()}
    if args.only:
        m = med[args.only]
        print(
            f"{args.only}: {m['rps']:.0f} req/s (median of {args.rounds}), p50 {m['p50_ms']:.2f} ms, "
            f"p99 {m['p99_ms']:.2f} ms, server CPU {m['cpu_us'] or 0:.0f} us/request, "
            f"load generator {m['client_busy']:.0%} of a core"
        )
        return 0
    for name, rounds in results.items():
        bad = {s: n for r in rounds for s, n in r["statuses"].items() if s != 200}
        if bad:
            print(f"WARNING: {name} got non-200 answers: {bad}")
    print(f"command: python {shlex.join(['bench/bench_decide.py', *sys.argv[1:]])}")
    from spectral_core.settings import SANDBOX_INLINE_BATCH

    parser = args.http
    if parser == "auto":
        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = os.environ.get("SPECTRAL_EVENT_LOOP", "auto")
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs (shared by the servers and "
        f"the load generator), uvicorn ({parser}, {loop} loop), concurrency {args.concurrency}, "
        f"{args.rounds} round(s) x {args.seconds:g} s, order rotated per round, medians over "
        f"rounds, access log {'on (JSON, info)' if args.access_log else 'off'}, inline batch "
        f"{SANDBOX_INLINE_BATCH if args.inline_batch is None else args.inline_batch}"
    )
    print(
        f"{'endpoint':<30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'server CPU/req (sys)':>21} "
        f"{'client CPU/req':>15} {'client busy':>12}"
    )
    for name, label in (
        ("bare-get", "GET /bench/bare (in the app)"),
        ("bare", "POST /bench/bare (in the app)"),
        ("bare-min", "POST minimal Starlette app"),
        ("decide", "POST /api/decide"),
    ):
        m = med[name]
        c = "n/a" if m["cpu_us"] is None else f"{m['cpu_us']:.0f} us ({m['sys_us'] or 0:.0f})"
        print(
            f"{label:<30} {m['rps']:>8.0f} {m['p50_ms']:>7.2f} {m['p99_ms']:>7.2f} {c:>21} "
            f"{m['client_cpu_us']:>12.0f} us {m['client_busy']:>11.0%}"
        )
    busy = [
        f"{name} round {i}"
        for name, rounds in results.items()
        for i, r in enumerate(rounds, 1)
        if r["client_busy"] >= CLIENT_BOUND
    ]
    if busy:
        print(
            f"client-bound (load generator >= {CLIENT_BOUND:.0%} of a core): {', '.join(busy)}; "
            "those rounds measure the client as much as the server"
        )
    print("\nper round (decide / bare), order rotated:")
    print(
        "| round | decide req/s | bare in app | minimal app | decide/bare in app | "
        "decide/minimal | server CPU/req decide / in app / minimal |"
    )
    print("|---|---|---|---|---|---|---|")
    r_app, r_min, cpu_app, cpu_min = [], [], [], []
    for i, (d, b, m) in enumerate(
        zip(results["decide"], results["bare"], results["bare-min"], strict=True), 1
    ):
        r_app.append(d["rps"] / b["rps"])
        r_min.append(d["rps"] / m["rps"])
        if d["cpu_us"] and b["cpu_us"] and m["cpu_us"]:
            cpu_app.append(b["cpu_us"] / d["cpu_us"])
            cpu_min.append(m["cpu_us"] / d["cpu_us"])
        print(
            f"| {i} | {d['rps']:,.0f} | {b['rps']:,.0f} | {m['rps']:,.0f} | {r_app[-1]:.0%} | "
            f"{r_min[-1]:.0%} | {_us(d['cpu_us'])} / {_us(b['cpu_us'])} / {_us(m['cpu_us'])} us |"
        )
    print(
        f"median of per-round ratios: decide / minimal Starlette app {_mmm(r_min)} "
        f"(target >= 60%); decide / bare in the app {_mmm(r_app)}"
    )
    if cpu_min:
        # what the ratio would be if the server's own CPU were the only limit: less exposed
        # to the load generator and the box's other load than requests/s
        print(
            f"server CPU per request, minimal / decide {_mmm(cpu_min)}; "
            f"bare in app / decide {_mmm(cpu_app)} (medians of per-round ratios)"
        )
    return 0


CLIENT_BOUND = 0.9  # load generator's share of one core above which a round is client-bound


def _us(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}"


def _mmm(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0%} (min {min(xs):.0%}, max {max(xs):.0%})" if xs else "n/a"


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median over rounds (``None`` where a round had no reading)."""
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us", "sys_us", "client_cpu_us", "client_busy")
    out: dict[str, Any] = {}
    for k in keys:
        values = [r[k] for r in rounds if r.get(k) is not None]
        out[k] = statistics.median(values) if values else None
    return out


if __name__ == "__main__":
    sys.exit(main())
