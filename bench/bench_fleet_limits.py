"""Fleet-wide tenant limits over 10 s windows while API processes join and leave (issue 22.1).

    python bench/bench_fleet_limits.py                  # K = 1, 2, 4, 8: about 7 min on 2 cores
    python bench/bench_fleet_limits.py --quick          # smoke test, K = 1, 2, < 90 s
    python bench/bench_fleet_limits.py --procs 2,4 --rate 50 --burst 10 --offered 3

The measurement of ADR 0032's design (each live API process enforces 1 / N of every
tenant's limits, N from the ``core.api_processes`` heartbeat).  The acceptance test
(``tests/acceptance/test_fleet.py``) checks 6 s steady windows; this measures the issue's
target itself: within 10 % of the configured rate over any 10 s window with 1 to 8 API
processes behind a round-robin balancer, including while processes join and leave.

What runs, on one throwaway embedded PostgreSQL (``pg_stat_statements`` loaded):

* real ``python -m spectral_api`` processes (``tests/acceptance/procs.py``'s ``start_api``,
  with the production heartbeat and stale bound unless ``--heartbeat`` / ``--stale``), one
  port each, on one database; one tenant with ``--rate`` / ``--burst`` (concurrency 64);
* the balancer and the load are this script: open loop, ``--offered`` x the rate
  (default 3x: more offered than the rate), request i to the i-th port of the rotation,
  a few keep-alive connections per port; ``GET /api/fleet-probe`` (authenticated and
  rate-limited by the middleware like every ``/api/*`` request, then a 404: the limiter's
  decision and nothing else).  Admitted = any answer but 429; every admitted request's
  send time is recorded;
* per K (``--procs``, processes carried over from the previous K, more started as needed):
  (1) **steady**: K live processes that all know N = K, ``--steady`` seconds, with
  ``pg_stat_statements`` reset before and read after: the statements the API processes
  ran (registry heartbeat, API-key cache refresh, anything else) per request;
  (2) **churn**: one process **joins** (added to the rotation once its ``/health``
  answers, as a balancer's health check would), later one is **SIGTERMed** (taken out of
  the rotation first, as a balancer drains it: a clean leave) and later one is
  **SIGKILLed** (left in the rotation until a request to it fails: a death); K = 1 has no
  kill (it would leave none).  The phase ends ``--settle`` s after the kill's stale bound.

Readings: over every 10 s sliding window (step 1 s) of each phase, the admitted rate as a
fraction of the configured rate: min, median, max and the share of windows within ±10 %;
around each event: the 10 s windows that contain it, the 1 s bins after it (peak and
trough, seconds outside ±25 %), the requests admitted above or below the rate until the next
event, and what ADR 0032 predicts.  Output: tables on stdout and in
``bench/results/fleet-limits-<UTC>.log``, every timestamp-derived reading in
``bench/results/fleet-limits-<UTC>.json``.  Unattended: every process is started with
``SPECTRAL_PARENT_PID`` and stopped by its pid at the end.  Figures of record need a quiet
machine: on a busy box a starved process answers late and its share goes unused.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from bench_scaling import Api, Log, machine_cpu  # noqa: E402 - after the path set-up
from tests.acceptance.procs import Proc, start_api  # noqa: E402

WINDOW_S = 10
PROBE = "/api/fleet-probe"
DB = "bench_fleet"
CONNS_PER_PORT = 4

# -- the database ------------------------------------------------------------------------------


def prepare(admin_uri: str, rate: float, burst: int) -> tuple[str, int, str]:
    """A database with the schema, a generation and one tenant's key: (uri, generation, token)."""
    import anyio
    import psycopg

    from spectral_core.generations import allocate_generation
    from spectral_core.migrate import run_migrations
    from spectral_core.ratelimit import TenantLimits
    from spectral_core.tenants import create_api_key, create_tenant

    with psycopg.connect(admin_uri, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute(f"CREATE DATABASE {DB}")
    uri = admin_uri.rsplit("/", 1)[0] + f"/{DB}"
    with psycopg.connect(uri, autocommit=True) as conn:
        run_migrations(conn)
        generation = allocate_generation(conn, "bench-fleet")

    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as c:
            limits = TenantLimits(rate=rate, burst=burst, concurrency=64)
            await create_tenant(c, "flood", limits=limits)
            _, token = await create_api_key(c, "flood")
        return token

    return uri, generation, anyio.run(make, backend="asyncio")


_STATEMENTS = """
SELECT query, calls FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND calls > 0
"""


def statements(admin_uri: str, reset: bool = False) -> list[tuple[str, int]]:
    """The bench database's statements since the last reset (read from the admin database,
    so reading them adds none)."""
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as c:
        if reset:
            c.execute("SELECT pg_stat_statements_reset()")
            return []
        return [(str(q), int(n)) for q, n in c.execute(_STATEMENTS, (DB,))]


def classify(rows: list[tuple[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {"registry": 0, "auth": 0, "other": 0, "top": {}}
    for q, n in rows:
        kind = "registry" if "api_processes" in q else "auth" if "api_keys" in q else "other"
        out[kind] += n
        key = f"{kind}: {' '.join(q.split())[:70]}"
        out["top"][key] = out["top"].get(key, 0) + n
    out["top"] = dict(sorted(out["top"].items(), key=lambda kv: -kv[1])[:6])
    return out


# -- the balancer and the load -----------------------------------------------------------------


@dataclass
class Flood:
    """Open-loop load, round-robin over ``live`` (mutated by the control task)."""

    token: str
    offered: float  # requests per second
    live: list[int] = field(default_factory=list)
    sent: list[tuple[float, int]] = field(default_factory=list)  # (send time, status)
    t0: float = 0.0  # the phase's start (monotonic)
    dropped: int = 0  # the port's queue full: never sent

    def payload(self) -> bytes:
        return (
            f"GET {PROBE} HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n"
        ).encode()

    def mark_dead(self, port: int) -> None:
        """A passive health check: a port whose request failed leaves the rotation."""
        with contextlib.suppress(ValueError):
            self.live.remove(port)

    async def run(self, stop_at: float) -> None:
        import anyio

        payload = self.payload()
        queues: dict[int, Any] = {}

        async def conn(port: int, rx: Any) -> None:
            stream = None
            async with rx:
                async for t in rx:
                    try:
                        if stream is None:
                            stream = await anyio.connect_tcp("127.0.0.1", port)
                        with anyio.fail_after(10):
                            status = await exchange(stream, payload)
                    except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError):
                        status = 0
                        if stream is not None:
                            await stream.aclose()
                            stream = None
                        self.mark_dead(port)
                    self.sent.append((t, status))
            if stream is not None:
                await stream.aclose()

        async with anyio.create_task_group() as tg:
            t0 = time.monotonic()
            i = 0
            while True:
                t = t0 + i / self.offered
                if t >= stop_at:
                    break
                await anyio.sleep(max(0.0, t - time.monotonic()))
                i += 1
                ports = list(self.live)  # the control thread changes the rotation
                if not ports:
                    continue
                port = ports[i % len(ports)]
                if port not in queues:
                    tx, rx = anyio.create_memory_object_stream[float](256)
                    queues[port] = tx
                    for _ in range(CONNS_PER_PORT):
                        tg.start_soon(conn, port, rx.clone())
                    rx.close()
                try:
                    queues[port].send_nowait(time.monotonic())
                except anyio.WouldBlock:
                    self.dropped += 1
            for tx in queues.values():
                tx.close()


async def exchange(stream: Any, payload: bytes) -> int:
    """One request on a keep-alive connection: the answer's status."""
    await stream.send(payload)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive()
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    if len(body) > length:
        raise OSError("pipelined bytes on a one-at-a-time connection")
    return int(head[9:12])


# -- the fleet ----------------------------------------------------------------------------------


class Fleet:
    def __init__(self, uri: str, generation: int, logdir: Path, a: argparse.Namespace) -> None:
        self.uri, self.generation, self.logdir, self.a = uri, generation, logdir, a
        self.procs: dict[int, Proc] = {}  # port -> live process
        self.gone: list[Proc] = []
        self.n = 0

    def start(self) -> int:
        port = Api._ports(1)[0]  # noqa: SLF001 - bench_scaling's free-port helper
        self.n += 1
        self.procs[port] = start_api(
            self.uri,
            self.generation,
            port,
            self.logdir / f"api{self.n}.log",
            SPECTRAL_HEARTBEAT_INTERVAL_S=str(self.a.heartbeat),
            SPECTRAL_WORKER_STALE_AFTER_S=str(self.a.stale),
            SPECTRAL_LOG_LEVEL="warning",
            SPECTRAL_API_HOST="127.0.0.1",
            SPECTRAL_PARENT_PID=str(os.getpid()),
        )
        return port

    def wait_all_know(self, n: int) -> None:
        """Every live process counts ``n`` live API processes (bench_scaling's wait)."""
        for port, proc in self.procs.items():
            Api._wait_live(port, proc.p, n)  # noqa: SLF001 - bench_scaling's helper

    def answers(self, port: int) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except OSError:
            return False

    def stop(self, port: int, sig: int) -> None:
        proc = self.procs.pop(port)
        proc.signal(sig)
        self.gone.append(proc)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.signal(signal.SIGTERM)
        for proc in [*self.procs.values(), *self.gone]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_phase(
    flood: Flood, seconds: float, events: list[tuple[float, str, Callable[[], None]]]
) -> list[tuple[float, str]]:
    """Flood for ``seconds``; at each (offset, name, action) run the action in a thread.
    Returns (offset, name) per event, the offset from the phase start when it began."""
    import anyio

    done: list[tuple[float, str]] = []

    async def main() -> None:
        t0 = time.monotonic()
        flood.sent.clear()
        flood.t0 = t0

        async def control() -> None:
            for at, name, action in events:
                await anyio.sleep(max(0.0, t0 + at - time.monotonic()))
                done.append((time.monotonic() - t0, name))
                await anyio.to_thread.run_sync(action)

        async with anyio.create_task_group() as tg:
            tg.start_soon(control)
            await flood.run(t0 + seconds)

    anyio.run(main, backend="asyncio")
    return done


# -- the readings -------------------------------------------------------------------------------


def admitted_times(flood: Flood) -> list[float]:
    return sorted(t - flood.t0 for t, s in flood.sent if s not in (0, 429))


def windows(ts: list[float], seconds: float, rate: float) -> list[float]:
    """The admitted rate over every 10 s window (step 1 s) as a fraction of ``rate``."""
    out = []
    s = 0
    while s + WINDOW_S <= seconds + 1e-9:
        n = sum(1 for t in ts if s <= t < s + WINDOW_S)
        out.append(n / WINDOW_S / rate)
        s += 1
    return out


def summary(ws: list[float]) -> dict[str, Any]:
    if not ws:
        return {"windows": 0}
    return {
        "windows": len(ws),
        "min": min(ws),
        "median": statistics.median(ws),
        "max": max(ws),
        "within_10pct": sum(1 for w in ws if abs(w - 1) <= 0.10) / len(ws),
    }


def around(ts: list[float], at: float, until: float, seconds: float, rate: float) -> dict[str, Any]:
    """An event at ``at`` (the next at ``until``): the 10 s windows containing it, the 1 s
    bins after it, and the requests admitted above (+) or below (-) the rate meanwhile."""
    ws = [
        sum(1 for t in ts if s <= t < s + WINDOW_S) / WINDOW_S / rate
        for s in range(max(0, math.ceil(at - WINDOW_S)), int(at) + 1)
        if s + WINDOW_S <= seconds + 1e-9
    ]
    end = min(until, seconds)
    bins = [
        sum(1 for t in ts if s <= t < s + 1) / rate
        for s in range(int(at), int(end))
        if s + 1 <= end
    ]
    off = [i for i, b in enumerate(bins) if abs(b - 1) > 0.25]
    net = sum(1 for t in ts if at <= t < end) - rate * (end - at)
    return {
        "windows_min": min(ws) if ws else None,
        "windows_max": max(ws) if ws else None,
        "bins_peak": max(bins) if bins else None,
        "bins_trough": min(bins) if bins else None,
        "bins_off_s": len(off),
        "last_off_s": (off[-1] + 1) if off else 0,
        "net_requests": net,
        "span_s": end - at,
    }


def expected(name: str, k_before: int, a: argparse.Namespace) -> str:
    """What ADR 0032 predicts for the event."""
    if name == "join":
        return f"<= {(k_before + 1) / k_before:.2f}x for <= {a.heartbeat:g} s"
    if name == "sigterm":
        return f"{(k_before - 1) / k_before:.2f}x for <= {a.heartbeat:g} s (exited row)"
    return f"{(k_before - 1) / k_before:.2f}x for <= {a.stale + a.heartbeat:g} s (stale bound)"


# -- the run ------------------------------------------------------------------------------------


def run_k(
    k: int, fleet: Fleet, flood: Flood, a: argparse.Namespace, admin: str, say: Log
) -> dict[str, Any]:
    while len(fleet.procs) < k:
        fleet.start()
    fleet.wait_all_know(k)
    time.sleep(a.heartbeat + 0.5)  # a heartbeat after the last count: every share is 1 / k
    flood.live[:] = list(fleet.procs)
    out: dict[str, Any] = {"k": k}

    statements(admin, reset=True)
    m0 = machine_cpu()
    run_phase(flood, a.steady, [])
    m1 = machine_cpu()
    st = classify(statements(admin))
    ts = admitted_times(flood)
    statuses: dict[str, int] = {}
    for _, s in flood.sent:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    out["steady"] = summary(windows(ts, a.steady, a.rate)) | {
        "seconds": a.steady,
        "admitted": len(ts),
        "requests": len(flood.sent),
        "statuses": statuses,
        "dropped": flood.dropped,
        "machine_busy": (m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]),
        "statements": st,
        "statements_per_admitted": {
            x: st[x] / max(1, len(ts)) for x in ("registry", "auth", "other")
        },
        "statements_per_request_other": st["other"] / max(1, len(flood.sent)),
    }
    s = out["steady"]
    say(
        f"  K={k} steady {a.steady:g} s: {len(ts)} admitted of {len(flood.sent)}, 10 s windows "
        f"{s.get('min', 0):.2f}..{s.get('max', 0):.2f} x rate, statements: registry "
        f"{st['registry']}, auth {st['auth']}, other {st['other']}"
    )

    # churn: join, clean leave, death
    joined: list[int] = []

    def join() -> None:
        port = fleet.start()
        deadline = time.monotonic() + 60
        while not fleet.answers(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        flood.live.append(port)  # the balancer's health check passed
        joined.append(port)

    def leave() -> None:
        port = next(p for p in fleet.procs if p not in joined)
        flood.mark_dead(port)  # drained from the rotation first, then stopped
        time.sleep(0.2)
        fleet.stop(port, signal.SIGTERM)

    def die() -> None:
        port = next(p for p in fleet.procs if p not in joined)
        fleet.stop(port, signal.SIGKILL)  # the balancer learns of it from a failed request

    j, t_, kl = a.join_at, a.join_at + a.gap, a.join_at + 2 * a.gap
    events: list[tuple[float, str, Callable[[], None]]] = [
        (j, "join", join),
        (t_, "sigterm", leave),
    ]
    seconds = t_ + a.gap
    if k >= 2:
        events.append((kl, "sigkill", die))
        seconds = kl + a.stale + a.heartbeat + a.settle
    done = run_phase(flood, seconds, events)
    ts = admitted_times(flood)
    out["churn"] = summary(windows(ts, seconds, a.rate)) | {
        "seconds": seconds,
        "admitted": len(ts),
        "requests": len(flood.sent),
        "errors": sum(1 for _, s in flood.sent if s == 0),
        "events": [],
    }
    live = k
    for i, (at, name) in enumerate(done):
        until = done[i + 1][0] if i + 1 < len(done) else seconds
        before, live = live, live + (1 if name == "join" else -1)
        ev = around(ts, at, until, seconds, a.rate) | {
            "event": name,
            "at_s": at,
            "live": f"{before} -> {live}",
            "expected": expected(name, before, a),
        }
        out["churn"]["events"].append(ev)
    c = out["churn"]
    say(
        f"  K={k} churn {seconds:g} s: {len(ts)} admitted, 10 s windows "
        f"{c.get('min', 0):.2f}..{c.get('max', 0):.2f} x rate, events at "
        + ", ".join(f"{e['event']} {e['at_s']:.1f} s" for e in c["events"])
    )
    return out


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def report(res: dict[str, Any], say: Log) -> None:
    say(
        f"\nadmitted rate over every {WINDOW_S} s window (step 1 s) / configured rate "
        f"{res['rate']:g}/s (burst {res['burst']}), offered {res['offered_rate']:g}/s"
    )
    say("| K | phase | s | windows | min | median | max | within ±10 % | admitted/s |")
    say("|---|---|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        for ph in ("steady", "churn"):
            x = r[ph]
            say(
                f"| {r['k']} | {ph} | {x['seconds']:g} | {x['windows']} | {_f(x.get('min'))} |"
                f" {_f(x.get('median'))} | {_f(x.get('max'))} |"
                f" {_f(x.get('within_10pct'), '{:.0%}')} | {x['admitted'] / x['seconds']:.1f} |"
            )
    say(
        "\naround each event (10 s windows containing it; 1 s bins from it to the next event: "
        "peak / trough, seconds outside ±25 %; net = admitted - rate x time, in requests)"
    )
    say(
        "| K | event | at s | live | 10 s windows min..max | 1 s peak / trough | s off "
        "(last) | net requests | ADR 0032 expects |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        for e in r["churn"]["events"]:
            say(
                f"| {r['k']} | {e['event']} | {e['at_s']:.1f} | {e['live']} |"
                f" {_f(e['windows_min'])}..{_f(e['windows_max'])} |"
                f" {_f(e['bins_peak'])} / {_f(e['bins_trough'])} |"
                f" {e['bins_off_s']} ({e['last_off_s']}) | {e['net_requests']:+.0f} |"
                f" {e['expected']} |"
            )
    say(
        "\nstatements the API processes ran during each steady phase (pg_stat_statements, "
        "the bench database only)"
    )
    say(
        "| K | requests | admitted | registry (heartbeat) | API-key cache | other "
        "| other per admitted | other per request |"
    )
    say("|---|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        s = r["steady"]
        st = s["statements"]
        say(
            f"| {r['k']} | {s['requests']} | {s['admitted']} | {st['registry']} | {st['auth']} |"
            f" {st['other']} | {s['statements_per_admitted']['other']:.4f} |"
            f" {s['statements_per_request_other']:.4f} |"
        )
    for r in res["runs"]:
        say(f"  K={r['k']} top statements: {r['steady']['statements']['top']}")
        bad = {s: n for s, n in r["steady"]["statuses"].items() if s not in ("404", "429")}
        if bad or r["steady"]["dropped"]:
            say(f"  WARNING K={r['k']}: answers {bad}, dropped {r['steady']['dropped']}")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="K = 1, 2, short phases (smoke test)")
    p.add_argument("--procs", default="1,2,4,8", help="API process counts K, ascending")
    p.add_argument("--rate", type=float, default=50.0, help="the tenant's rate per second")
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("--offered", type=float, default=3.0, help="offered load, x the rate")
    p.add_argument("--steady", type=float, default=25.0, help="steady phase seconds")
    p.add_argument("--join-at", type=float, default=4.0, help="churn: the join at (s)")
    p.add_argument("--gap", type=float, default=12.0, help="churn: seconds between events")
    p.add_argument("--settle", type=float, default=8.0, help="after the kill's stale bound")
    p.add_argument("--heartbeat", type=float, default=2.0, help="SPECTRAL_HEARTBEAT_INTERVAL_S")
    p.add_argument("--stale", type=float, default=10.0, help="SPECTRAL_WORKER_STALE_AFTER_S")
    a = p.parse_args()
    if a.quick:
        a.procs, a.steady, a.join_at, a.gap, a.settle = "1,2", 11.0, 2.0, 5.0, 2.0
        a.heartbeat, a.stale = 0.5, 3.0
    ks = [int(x) for x in a.procs.split(",")]

    ts = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    say = Log(results / f"fleet-limits-{ts}.log")
    say(f"command: python {shlex.join(['bench/bench_fleet_limits.py', *sys.argv[1:]])}")
    say(
        f"started {ts}, python {platform.python_version()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; heartbeat {a.heartbeat:g} s, stale {a.stale:g} s"
        + ("  SMOKE RUN (--quick): numbers meaningless" if a.quick else "")
    )
    churn = [
        a.join_at + 2 * a.gap + (a.stale + a.heartbeat + a.settle if k >= 2 else 0) for k in ks
    ]
    say(
        f"planned: {len(ks) * a.steady + sum(churn):.0f} s of flooding, plus starting "
        f"{ks[-1] + len(ks) + sum(1 for k in ks if k >= 2)} API processes at most"
    )
    res: dict[str, Any] = {
        "started": ts,
        "argv": sys.argv[1:],
        "quick": a.quick,
        "rate": a.rate,
        "burst": a.burst,
        "offered_rate": a.offered * a.rate,
        "heartbeat_s": a.heartbeat,
        "stale_s": a.stale,
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg()[0],
        "runs": [],
    }

    import psycopg

    from spectral_core.embedded import EmbeddedPostgres

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="spectral-bench-fleet-"))
    pg = EmbeddedPostgres(tmp / "pg")
    fleet: Fleet | None = None
    t_start = time.monotonic()
    try:
        admin = pg.start()
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        pg.stop()
        admin = pg.start()
        uri, generation, token = prepare(admin, a.rate, a.burst)
        fleet = Fleet(uri, generation, tmp, a)
        flood = Flood(token, a.offered * a.rate)
        for k in ks:
            say(f"== K = {k}")
            try:
                res["runs"].append(run_k(k, fleet, flood, a, admin, say))
            except (Exception, SystemExit) as exc:  # keep what was measured: report it
                say(f"  !! K={k} stopped: {type(exc).__name__}: {exc}")
                res["error"] = f"K={k}: {exc}"
                break
    finally:
        if fleet is not None:
            fleet.close()
        pg.destroy()
    res["seconds"] = time.monotonic() - t_start
    res["load_end"] = os.getloadavg()[0]
    out = results / f"fleet-limits-{ts}.json"
    out.write_text(json.dumps(res, indent=1, default=str))
    report(res, say)
    say(f"\nran {res['seconds']:.0f} s; load {res['load_start']:.1f} -> {res['load_end']:.1f}")
    say(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
