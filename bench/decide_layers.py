"""``POST /api/decide`` layer by layer: the server's CPU per request in each ASGI layer.

    python bench/decide_layers.py                          # this tree
    python bench/decide_layers.py --tree base=/tmp/spectral-paired/bd89f0d83145 --tree head=.

``bench/bench_decide.py`` and ``bench/paired_commits.py`` give the server's CPU per request
of the whole stack, over HTTP.  This script takes it apart, in the process and without
sockets, so what it reports is CPU time of the event loop's thread (``time.thread_time``),
not wall time (on a shared box mostly waiting for a core):

* each tree's app is built by its own code (``create_app`` of ``<tree>/src``, in a child
  process, on one embedded PostgreSQL with the tenant, key and approved module of
  ``bench_decide.py``), with ``/bench/bare`` appended as there; beside it the bench's
  minimal Starlette app (one route, no middleware of ours), measured the same way;
* **layers**: the request is sent, 32 at a time (``asyncio.gather``, so the decision runner
  batches as under load), to each level of the app's middleware stack in turn: the whole
  app, ``ServerErrorMiddleware``, each of our middlewares, Starlette's
  ``ExceptionMiddleware``, the router and the endpoint itself.  A layer's own cost is its
  level minus the next one inside;
* **pieces**: token lookup and limiter admission, the module cache, the decision runner
  and a direct sandbox call, ``tracing.tracer()``; the cost of ``gather`` itself is
  printed to be subtracted from them;
* **HTTP protocol**: uvicorn's httptools protocol against ``spectral_api.server``'s guarded
  one (ADR 0025), fed one request per connection through a stub transport, with a
  constant ASGI app;
* the levels and pieces are interleaved, ``--repeats`` times, and the minimum per level is
  printed (the reading least disturbed by the box's other load); trees alternate per round.

Also printed per tree: the decisions that took the thread path (``Sandbox.run_async``) and
the full garbage collections seen (ADR 0036).  Each tree's child freezes its start-up heap
and sets the young-generation threshold as ``spectral-api`` does (``freeze_startup_heap``,
ADR 0039 and 0046): at CPython's default threshold every allocation costs a share of young
collections that walk the requests in flight, which made each layer look 1-3 us dearer
than in the server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BODY = json.dumps(
    {
        "domain": "credit",
        "action": "approve",
        "world_model_version": "v1",
        "input": {"risk": "low", "amount": 1200},
    }
).encode()
CONCURRENCY = 32


# -- child: one tree's app, in process ------------------------------------------------------


def _scope(path: str, token: str | None) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"connection", b"keep-alive")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


class _Sink:
    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            self.statuses[status] = self.statuses.get(status, 0) + 1


async def _per_request(make: Callable[[], Awaitable[Any]], n: int) -> float:
    """CPU microseconds per call of ``make()``, ``CONCURRENCY`` at a time."""
    rounds = max(1, n // CONCURRENCY)
    t0 = time.thread_time()
    for _ in range(rounds):
        await asyncio.gather(*(make() for _ in range(CONCURRENCY)))
    return (time.thread_time() - t0) / (rounds * CONCURRENCY) * 1e6


def _protocol_jobs(n: int) -> list[tuple[str, Callable[[], Awaitable[float]]]]:
    """The HTTP protocol's CPU per request, plain uvicorn against the guarded class."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    reply = b'{"decision":{"decision":"approve"}}'
    request = (
        b"POST /api/decide HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n"
        b"Authorization: Bearer xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    ) + BODY

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(reply))],
            }
        )
        await send({"type": "http.response.body", "body": reply})

    class Transport:
        closing = False

        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return self.closing

        def close(self) -> None:
            self.closing = True

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(
                name, default
            )

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def can_write_eof(self) -> bool:
            return True

        def write_eof(self) -> None:
            pass

    config = Config(app, log_config=None, access_log=False, lifespan="off", http="httptools")
    config.load()
    classes: dict[str, Any] = {"http: uvicorn httptools": HttpToolsProtocol}
    try:
        from spectral_api.server import HttpLimits, protocol_class

        classes["http: spectral guarded"] = protocol_class(HttpLimits())
    except ImportError:  # a tree before ADR 0025
        pass
    jobs = []
    for name, cls in classes.items():

        async def run(cls: Any = cls) -> float:
            loop = asyncio.get_running_loop()
            state = ServerState()
            conns = []
            for _ in range(CONCURRENCY):
                proto = cls(config=config, server_state=state, app_state={}, _loop=loop)
                proto.connection_made(Transport())
                conns.append(proto)
            rounds = max(1, n // CONCURRENCY)
            t0 = time.thread_time()
            for _ in range(rounds):
                for proto in conns:
                    proto.data_received(request)
                for _ in range(6):  # the request tasks run and answer
                    await asyncio.sleep(0)
            spent = (time.thread_time() - t0) / (rounds * CONCURRENCY) * 1e6
            for proto in conns:
                proto.connection_lost(None)
            return spent

        jobs.append((name, run))
    return jobs


def child(repeats: int, n: int) -> None:
    import anyio
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from spectral_api import create_app
    from spectral_core import Settings, open_pools
    from spectral_core.boot import event_loop_options
    from spectral_core.modules import ModuleKey

    token = os.environ["BENCH_TOKEN"]
    settings = Settings.from_env(os.environ)
    thread_calls = [0]
    full_gcs: list[float] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                gc_started[0] = time.thread_time()
            else:
                full_gcs.append((time.thread_time() - gc_started[0]) * 1000)

    async def main() -> None:
        async with open_pools(settings) as db:
            app = create_app(settings, db, access_log=False)

            async def bare(request: Request) -> Response:
                await request.body()
                return Response(
                    b'{"decision":{"decision":"approve"}}', media_type="application/json"
                )

            app.router.routes.append(Route("/bench/bare", bare, methods=["GET", "POST"]))
            try:  # as spectral-api (and bench_decide.py's server) does once its app is built
                from spectral_core.boot import freeze_startup_heap

                freeze_startup_heap()
            except ImportError:  # a tree before ADR 0039
                pass
            services = app.state.services
            threaded = services.sandbox.run_async

            async def counted(*args: Any, **kwargs: Any) -> Any:
                thread_calls[0] += 1
                return await threaded(*args, **kwargs)

            services.sandbox.run_async = counted
            sink = _Sink()
            async with app.router.lifespan_context(app):
                jobs: list[tuple[str, Callable[[], Awaitable[float]]]] = []
                for what, path, key in (
                    ("decide", "/api/decide", token),
                    ("bare", "/bench/bare", None),
                ):
                    first = _scope(path, key)
                    filled = dict(first)  # the app fills in app, router, principal, ...
                    await app(filled, _receive, sink)
                    for _ in range(300):
                        await app(dict(first), _receive, sink)
                    levels: list[tuple[str, Any]] = [("app", app)]
                    layer = app.middleware_stack
                    while layer is not None and type(layer).__name__ != "Router":
                        levels.append((type(layer).__name__, layer))
                        if what == "decide" and type(layer).__name__ == "DecideShortcut":
                            break  # from here straight to its endpoint (ADR 0046)
                        layer = getattr(layer, "app", None)
                    else:
                        levels.append(("Router", app.router))
                    route = next(r for r in app.router.routes if getattr(r, "path", "") == path)
                    levels.append(("endpoint", route.app))
                    for name, call in levels:
                        scope = first if name == "app" else filled

                        async def level(call: Any = call, scope: Any = scope) -> float:
                            return await _per_request(lambda: call(dict(scope), _receive, sink), n)

                        jobs.append((f"{what}: {name}", level))
                # the bench's minimal Starlette app (bench_decide.py --serve-bare): one route,
                # no middleware of ours; its levels as the app's
                from starlette.applications import Starlette

                minimal = Starlette(routes=[Route("/bench/bare", bare, methods=["GET", "POST"])])
                first = _scope("/bench/bare", None)
                filled = dict(first)
                await minimal(filled, _receive, sink)
                for name, call in (
                    ("app", minimal),
                    ("ServerErrorMiddleware", minimal.middleware_stack),
                    ("ExceptionMiddleware", minimal.middleware_stack.app),  # type: ignore[union-attr]
                    ("Router", minimal.router),
                    ("endpoint", minimal.router.routes[0].app),  # type: ignore[attr-defined]
                ):
                    scope = first if name == "app" else filled

                    async def level(call: Any = call, scope: Any = scope) -> float:
                        return await _per_request(lambda: call(dict(scope), _receive, sink), n)

                    jobs.append((f"minimal: {name}", level))
                module = ModuleKey(
                    org="bench", domain="credit", action="approve", world_model_version="v1"
                )
                compiled = await services.cache.resolve(module)
                doc = b'{"risk":"low","amount":1200}'

                async def admit() -> None:
                    who = await services.authenticator.authenticate(token)
                    slot, _ = services.limiter.admit(who)
                    slot.release()

                async def lookup() -> None:
                    await services.authenticator.authenticate(token)

                async def sandbox() -> None:
                    services.sandbox.run(compiled, doc, services.budget)

                async def nothing() -> None:
                    pass

                pieces: dict[str, Callable[[], Awaitable[Any]]] = {
                    "piece: token lookup": lookup,
                    "piece: token lookup + limiter": admit,
                    "piece: module cache": lambda: services.cache.resolve(module),
                    "piece: runner (inline batch + sandbox)": lambda: services.runner.run(
                        compiled, doc, services.budget
                    ),
                    "piece: sandbox call": sandbox,
                    "piece: gather itself (subtract)": nothing,
                }
                try:
                    from spectral_core.tracing import tracer

                    async def check() -> None:
                        tracer()

                    pieces["piece: tracing.tracer()"] = check
                except ImportError:  # a tree before ADR 0029
                    pass
                for name, make in pieces.items():

                    async def piece(make: Any = make) -> float:
                        return await _per_request(make, n)

                    jobs.append((name, piece))
                jobs += _protocol_jobs(n)
                best: dict[str, float] = {}
                gc.callbacks.append(on_gc)
                for _ in range(repeats):
                    for name, job in jobs:
                        spent = await job()
                        best[name] = min(best.get(name, spent), spent)
                gc.callbacks.remove(on_gc)
                result = {
                    "best": best,
                    "statuses": sink.statuses,
                    "thread_calls": thread_calls[0],
                    "full_gcs_ms": [round(x, 1) for x in full_gcs],
                }
                print("RESULT " + json.dumps(result), flush=True)

    anyio.run(main, backend="asyncio", backend_options=event_loop_options(settings))


# -- parent ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--tree",
        action="append",
        default=None,
        help="name=path of a checkout (repeatable; default: this tree as 'head')",
    )
    ap.add_argument("--rounds", type=int, default=2, help="runs per tree, alternating")
    ap.add_argument("--repeats", type=int, default=12, help="readings per level per run")
    ap.add_argument("--requests", type=int, default=960, help="requests per reading")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.repeats, a.requests)
        return 0
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "src"))
    import bench_decide as bd

    from spectral_core.embedded import EmbeddedPostgres

    trees = [t.split("=", 1) for t in (a.tree or [f"head={HERE.parent}"])]
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="spectral-decide-layers-")))
    url = pg.start()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    try:
        generation, token, public = bd.prepare(url)
        for r in range(a.rounds):
            for name, path in trees if r % 2 == 0 else trees[::-1]:
                env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
                env.update(
                    {
                        "PYTHONPATH": str(Path(path).resolve() / "src"),
                        "SPECTRAL_DATABASE_URL": url,
                        "SPECTRAL_GENERATION": str(generation),
                        "SPECTRAL_OPERATOR_KEYS": public,
                        "SPECTRAL_API_RATE": "1000000",
                        "SPECTRAL_API_BURST": "1000000",
                        "SPECTRAL_API_CONCURRENCY": "100000",
                        "SPECTRAL_LOG_LEVEL": "warning",
                        "BENCH_TOKEN": token,
                    }
                )
                out = subprocess.run(
                    [sys.executable, __file__, "--child"]
                    + ["--repeats", str(a.repeats), "--requests", str(a.requests)],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                if out.returncode or not lines:
                    raise SystemExit(f"{name} ({path}) failed:\n{out.stderr[-3000:]}")
                result = json.loads(lines[-1][len("RESULT ") :])
                runs[name].append(result)
                print(
                    f"{name} run {r + 1}: statuses {result['statuses']}, thread-path decisions "
                    f"{result['thread_calls']}, full collections (ms) {result['full_gcs_ms']}",
                    flush=True,
                )
    finally:
        pg.destroy()
    names = [name for name, _ in trees]
    best: dict[str, dict[str, float]] = {}
    order: dict[str, list[str]] = {}  # each tree's levels, outermost first
    for name in names:
        for run in runs[name]:
            order[name] = list(run["best"])
            for level, us in run["best"].items():
                row = best.setdefault(level, {})
                row[name] = min(row.get(name, us), us)
    levels = max(order.values(), key=len)
    levels += [x for x in best if x not in levels]

    def own(name: str, level: str) -> str:
        """The level minus the next one inside it in this tree (layers only)."""
        group = level.split(":")[0]
        if group not in ("decide", "bare", "minimal") or level not in order[name]:
            return ""
        mine = order[name]
        inner = mine[mine.index(level) + 1 :]
        if not inner or inner[0].split(":")[0] != group:
            return ""
        if name not in best[level] or name not in best[inner[0]]:
            return ""  # a level this tree measured in some runs only
        return f"{best[level][name] - best[inner[0]][name]:.1f}"

    print(f"\nCPU us per request (minimum of {a.rounds} x {a.repeats} readings of {a.requests})")
    print("| level (inclusive) | " + " | ".join(names) + " | own cost " + " / ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for level in levels:
        cells = [f"{best[level][n]:.1f}" if n in best[level] else "-" for n in names]
        owns = " / ".join(own(n, level) or "-" for n in names)
        print(f"| {level} | " + " | ".join(cells) + f" | {owns} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
