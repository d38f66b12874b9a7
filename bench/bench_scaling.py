"""Scaling with several processes on one PostgreSQL (issue 22 part 4), paired rounds.

    python bench/bench_scaling.py                 # 3 rounds, about 8 min on 2 cores (< 10)
    python bench/bench_scaling.py --quick         # smoke test, under 2 min (numbers meaningless)
    python bench/bench_scaling.py --rounds 5 --drain-n 50000 --steady-rate 500
    python bench/bench_scaling.py --only drain    # or: --only decide
    python bench/bench_scaling.py --chart-from bench/results/scaling-<UTC>.json   # redraw

What runs, on one throwaway embedded PostgreSQL 18 (fsync on, synchronous_commit on):

* **drain** (per round, every configuration once, the order rotated per round): spectral's
  consumer (the one ``spectral-workers`` runs: 4 lanes x batch 100, LISTEN on, production
  logging to /dev/null, uvloop) and pgqueuer (5 consumers x batch ``--pgq-batch`` per
  process, asyncpg, uvloop) in K = 1, 2 and 4 worker processes.  Both through the peer
  harness's adapters (``bench/peer_spectral.py``, ``/work/shared/bench-peers/peer_pgqueuer.py``)
  and its worker handshake (``peers_common.WorkerSet``), run by the harness venv's python
  (it has pgqueuer) in a child of this script, with ``PYTHONPATH`` on this tree's ``src/``.
  Each configuration: a fresh database, ``--drain-n`` events filled (batches of 1,000),
  ``ANALYZE``, ``CHECKPOINT``; then (a) the drain: K processes start on the full backlog,
  rate = N / (go -> last handler call); (b) ``VACUUM ANALYZE``, ``CHECKPOINT``, K processes
  idle on the empty queue and one producer publishes single events (one transaction each)
  at ``--steady-rate`` for ``--steady-seconds``: latency = the publish call's start ->
  the handler's start (same clock), p50 / p99.  Same N and the same offered rate for every
  contender.
* **decide**: as many real ``spectral-api`` processes as the largest K (4; ``python -m
  spectral_api``, the binary's own boot: registry, fleet share, uvicorn with the guarded
  protocol; log level warning, so no access-log line per request) on one database, each on
  its own port,
  the tenant's limits raised to 1,000,000/s so the limiter is not what is measured.  The
  balancer is the load generator itself: its ``--concurrency`` keep-alive connections are
  spread round-robin over the K ports in use (connection i -> port i mod K); no
  SO_REUSEPORT.  K = 1, 2, 4 per round, the order rotated; all processes are started
  and warmed up once, before the rounds (with K < 4 the others idle, heartbeat only).
  Load generator: ``bench/bench_decide.py``'s (raw keep-alive HTTP/1.1 on anyio sockets,
  one process: this one).

Readings per configuration and round: the CPU time of the PostgreSQL server (postmaster
and every backend, exited ones included, from ``/proc``), of the processes under test
(worker or API processes, ``/proc``) and of the load generator (drain: none; steady: the
producer; decide: the HTTP client; each its own process's CPU minus the sampler thread's);
WAL bytes (``pg_current_wal_insert_lsn`` difference); what the server's active client
backends were doing, sampled every 50 ms from ``pg_stat_activity`` (the sampler's own
backend CPU is taken off the server's): running, waiting on a heavyweight lock or a non-WAL
LWLock (``locks``), on WAL (LWLock ``WALWrite``/``WALInsert``, IO ``WalSync``/``WalWrite``
...), on the client; and the whole machine's busy share (``/proc/stat``).  The ``limit``
column names what bounds the configuration: ``locks`` or ``WAL`` when at least a
quarter of the backends' samples wait on it (and on average at least half a backend was
active), else the busier of client CPU (processes under
test + load generator) and server CPU; when neither reaches half the cores (and ours
together less than three quarters), ``other load`` if the machine was 90 % busy anyway,
else ``none saturated`` (round trips: each process waits for its answers).  Beside it: the
share of the cores ours used, and the machine's.  A steady run that met its offered rate
says so instead.

Output: the tables on stdout and in ``bench/results/scaling-<UTC>.log``, every reading in
``bench/results/scaling-<UTC>.json``, the chart ``docs/perf/scaling.svg`` (hand-written SVG,
no dependency; ``--chart PATH``, ``--no-chart``).  Unattended: no stdin, every child has a
timeout, every process started is stopped by its pid at the end.  Needs the peer harness
venv (``bash /work/shared/bench-peers/setup.sh``; ``--venv`` / ``$VENV`` to override) for
the drain, and this interpreter with spectral's API dependencies for the decide part.
Figures of record need a quiet machine; on a shared box compare within a run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# top-level imports: the standard library only (the drain child and its spawned workers
# import this file with the harness venv's python)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = Path(os.environ.get("PEERS", str(ROOT.parent / "shared" / "bench-peers")))
if not PEERS.is_dir():
    PEERS = Path("/work/shared/bench-peers")
VENV = Path(os.environ.get("VENV", str(Path.home() / ".cache" / "bench-peers-venv")))
TICK = os.sysconf("SC_CLK_TCK")
CONTENDERS = ("spectral", "pgqueuer")

# -- readings (both interpreters) ------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def proc_cpu(pid: int) -> float:
    """user + system CPU seconds of a live process (0 when it is gone)."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / TICK if f else 0.0


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (joined worker processes)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class ServerCpu:
    """CPU seconds of the whole PostgreSQL server: the postmaster, its live children and
    (through the postmaster's cutime/cstime) the backends that already exited."""

    def __init__(self, uri: str) -> None:
        import psycopg

        with psycopg.connect(uri, autocommit=True) as c:  # the backend lives as long as c
            row = c.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            f = _stat(int(row[0]))
        assert f is not None, "the server's processes are not readable in /proc"
        self.pm = int(f[1])

    def read(self) -> float:
        f = _stat(self.pm)
        assert f is not None, "postmaster gone"
        total = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                c = _stat(int(entry.name))
                if c and int(c[1]) == self.pm:
                    total += int(c[11]) + int(c[12])
        return total / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every process's (``/proc/stat``)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(f)
    return (total - f[3] - f[4]) / TICK, total / TICK  # minus idle and iowait


class WaitSampler(threading.Thread):
    """Samples what the active client backends wait on, every ``step`` seconds."""

    def __init__(self, uri: str, step: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.uri, self.step = uri, step
        self.counts = {"run": 0, "locks": 0, "wal": 0, "client": 0, "other": 0}
        self.events: dict[str, int] = {}  # "type:event" -> backend samples (diagnosis)
        self.samples = 0
        self.cpu = 0.0  # this thread's CPU (the load generator's reading excludes it)
        self.server_cpu = 0.0  # its backend's CPU (the server's reading excludes it)
        self.halt = threading.Event()

    def run(self) -> None:
        import psycopg

        t0 = time.thread_time()
        with psycopg.connect(self.uri, autocommit=True) as c:
            row = c.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            while not self.halt.is_set():
                rows = c.execute(
                    "SELECT wait_event_type, wait_event, count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND state = 'active' "
                    "AND pid <> pg_backend_pid() GROUP BY 1, 2"
                ).fetchall()
                self.samples += 1
                for kind, event, n in rows:
                    if kind is None:
                        key = "run"
                    elif kind in ("LWLock", "IO") and event.lower().startswith("wal"):
                        # LWLock WALWrite / WALInsert / WALBufMapping, IO WalSync / WalWrite ...
                        key = "wal"
                    elif kind in ("Lock", "LWLock"):
                        key = "locks"
                    elif kind == "Client":
                        key = "client"
                    else:
                        key = "other"
                    self.counts[key] += int(n)
                    name = f"{kind}:{event}" if kind else "running"
                    self.events[name] = self.events.get(name, 0) + int(n)
                self.halt.wait(self.step)
            self.server_cpu = proc_cpu(int(row[0]))
        self.cpu = time.thread_time() - t0

    def result(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        return {
            "samples": self.samples,
            "backend_samples": total,
            "active_backends_avg": total / self.samples if self.samples else 0.0,
            "top": dict(sorted(self.events.items(), key=lambda kv: -kv[1])[:6]),
        } | {f"{k}_share": (v / total if total else 0.0) for k, v in self.counts.items()}


def wal_lsn(uri: str) -> int:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as c:
        row = c.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


class Probe:
    """Wall, CPU (server, processes under test, load generator), WAL bytes and wait samples
    around one timed phase.  The processes under test are read by pid at start; at stop
    either by pid again (``pids``: still alive) or as ``reaped`` CPU (joined children)."""

    def __init__(self, uri: str, server: ServerCpu) -> None:
        self.uri, self.server = uri, server

    def start(self, pids: list[int]) -> Probe:
        self.pids = pids
        self.sampler = WaitSampler(self.uri)
        self.wal0 = wal_lsn(self.uri)
        self.s0 = self.server.read()
        self.p0 = sum(proc_cpu(p) for p in pids)
        self.l0 = self_cpu()
        self.m0 = machine_cpu()
        self.t0 = time.perf_counter()
        self.sampler.start()
        return self

    def stop(self, reaped: float | None = None) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        m1 = machine_cpu()
        self.sampler.halt.set()
        self.sampler.join(10)
        loadgen = self_cpu() - self.l0 - self.sampler.cpu
        procs = (reaped if reaped is not None else sum(proc_cpu(p) for p in self.pids)) - self.p0
        time.sleep(0.3)  # backends that just closed: reaped into the postmaster's totals
        return {
            "wall_s": wall,
            # /proc counts in clock ticks (10 ms): the difference can dip below 0 on an idle
            # server
            "server_cpu_s": max(0.0, self.server.read() - self.s0 - self.sampler.server_cpu),
            "procs_cpu_s": procs,
            "loadgen_cpu_s": max(0.0, loadgen),
            "wal_bytes": wal_lsn(self.uri) - self.wal0,
            # the share of all the machine's cores busy with anything (ours and others')
            "machine_busy": (m1[0] - self.m0[0]) / max(1e-9, m1[1] - self.m0[1]),
            "waits": self.sampler.result(),
        }


# -- drain and steady: the child (harness venv) ---------------------------------------------


def _contender_cfg(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if a.contender == "spectral":
        cfg: dict[str, Any] = {
            "lanes": 4,
            "batch_size": 100,
            "listen": True,
            "cycle": "fused",
            "poll_interval_s": 1.0,
            "log_level": "info",
            "loop": "uvloop",
            "publish": "autocommit",
        }
        module = "peer_spectral"
    else:
        cfg = {"consumers": 5, "batch_size": a.pgq_batch, "driver": "apg", "loop": "uvloop"}
        module = "peer_pgqueuer"
    return module, cfg | {"procs": int(a.procs), "label": f"{a.procs}proc"}


def child(a: argparse.Namespace) -> None:
    """One configuration (contender, K processes): fill, drain, steady; prints one JSON line."""
    sys.path[:0] = [str(PEERS), str(HERE)]
    import importlib

    import peers_common as pc
    from common import analyze, checkpoint, recreate_db, vacuum_analyze

    module, cfg = _contender_cfg(a)
    adapter = importlib.import_module(module)
    cfg["family"] = adapter.FAMILY(cfg)
    runner = pc.loop_runner(cfg["loop"])
    uri = recreate_db(a.uri, f"bench_scaling_{a.contender}")
    runner(adapter.setup_db(uri, cfg))
    checkpoint(uri)
    server = ServerCpu(uri)

    async def fill() -> None:
        prod = await adapter.open_producer(uri, cfg)
        try:
            done = 0
            while done < a.n:
                k = min(1000, a.n - done)
                await adapter.enqueue_many(prod, [time.time()] * k)
                done += k
        finally:
            await adapter.close_producer(prod)

    probe = Probe(uri, server).start([])
    runner(fill())
    out: dict[str, Any] = {"fill": probe.stop() | {"n": a.n}}
    analyze(uri)
    checkpoint(uri)

    # (a) drain: K processes on the full backlog
    ws = pc.WorkerSet(module, uri, cfg, "drain")
    try:
        r0 = children_cpu()
        ws.start_and_wait_ready()
        pids = [p.pid for p in ws.procs if p.pid is not None]
        at_go = sum(proc_cpu(p) for p in pids)
        probe = Probe(uri, server).start(pids)
        probe.p0 = 0.0  # the reaped total below is every worker's whole life: minus at_go
        t_go = ws.release()
        res = ws.collect(a.timeout)
        reading = probe.stop(reaped=children_cpu() - r0 - at_go)
    finally:
        ws.kill()
    t_last = max(r["last"] or 0 for r in res)
    handled = sum(r["handled"] for r in res)
    left = runner(adapter.pending(uri))
    out["drain"] = reading | {
        "n": a.n,
        "handled": handled,
        "left": left,
        "rate": a.n / (t_last - t_go),
        "go_to_last_s": t_last - t_go,
        # cores busy over the drain itself (the workers' shutdown after the last handler
        # call is in the CPU, not in this wall: a slight overestimate, never an under-)
        "active_s": t_last - t_go,
    }

    # (b) steady: K processes idle, one producer at a fixed rate
    vacuum_analyze(uri)
    checkpoint(uri)
    ws = pc.WorkerSet(module, uri, cfg, "steady")
    try:
        r0 = children_cpu()
        ws.start_and_wait_ready()
        ws.release()
        time.sleep(1.0)  # the workers reach their idle / LISTEN state
        pids = [p.pid for p in ws.procs if p.pid is not None]
        at_go = sum(proc_cpu(p) for p in pids)
        probe = Probe(uri, server).start(pids)
        probe.p0 = 0.0
        produced, prod_wall, pend = runner(
            pc._produce_paced(adapter, uri, cfg, a.rate, a.seconds)  # noqa: SLF001 - harness's pacer
        )
        ws.stop.set()
        res = ws.collect(60)
        reading = probe.stop(reaped=children_cpu() - r0 - at_go)
    finally:
        ws.kill()
    lat = sorted(x for r in res for x in r["lat"])
    out["steady"] = (
        reading
        | {
            "n": produced,
            "handled": sum(r["handled"] for r in res),
            "left": pend,
            "rate": produced / prod_wall,
            "offered": a.rate,
        }
        | pc.percentiles(lat, ps=(50, 99))
    )
    print(json.dumps(out), flush=True)


# -- decide: K spectral-api processes --------------------------------------------------------


class Api:
    """``--api-max`` spectral-api processes on one database, each on its own port."""

    def __init__(self, admin_uri: str, n: int, logdir: Path) -> None:
        sys.path.insert(0, str(HERE))
        import bench_decide as bd
        import psycopg

        with psycopg.connect(admin_uri, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS bench_scaling_decide WITH (FORCE)")
            c.execute("CREATE DATABASE bench_scaling_decide")
        self.uri = admin_uri.rsplit("/", 1)[0] + "/bench_scaling_decide"
        generation, token, public = bd.prepare(self.uri)
        self.payload = bd.request_bytes("/api/decide", token, bd.BODY)
        self.bd = bd
        self.ports = self._ports(n)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT / "src"),
                "SPECTRAL_DATABASE_URL": self.uri,
                "SPECTRAL_GENERATION": str(generation),
                "SPECTRAL_OPERATOR_KEYS": public,
                "SPECTRAL_API_HOST": "127.0.0.1",
                "SPECTRAL_API_RATE": "1000000",
                "SPECTRAL_API_BURST": "1000000",
                "SPECTRAL_API_CONCURRENCY": "100000",
                "SPECTRAL_LOG_LEVEL": "warning",
                # they stop by themselves should this script die without stopping them
                "SPECTRAL_PARENT_PID": str(os.getpid()),
            }
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        for i, port in enumerate(self.ports):
            log = open(logdir / f"api{i}.log", "wb")  # noqa: SIM115 - the child holds it
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "spectral_api"],
                    env=env | {"SPECTRAL_API_PORT": str(port)},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        for port, proc in zip(self.ports, self.procs, strict=True):
            self._wait_live(port, proc, n)

    @staticmethod
    def _ports(n: int) -> list[int]:
        import socket

        socks = [socket.socket() for _ in range(n)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return [int(s.getsockname()[1]) for s in socks]
        finally:
            for s in socks:
                s.close()

    @staticmethod
    def _wait_live(port: int, proc: subprocess.Popen[bytes], n: int, timeout: float = 120) -> None:
        """Until ``/health`` on ``port`` counts ``n`` live API processes."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"spectral-api on {port} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    doc = json.loads(r.read())
            except (OSError, ValueError, urllib.error.URLError):
                time.sleep(0.2)
                continue
            live = doc.get("checks", {}).get("fleet:live", [{}])[0].get("observedValue")
            if live == n:
                return
            time.sleep(0.2)
        raise SystemExit(f"spectral-api on {port}: not {n} live API processes after {timeout}s")

    def load(self, k: int, concurrency: int, seconds: float) -> dict[str, Any]:
        """``concurrency`` keep-alive connections, connection i on port i mod k."""
        import anyio

        bd = self.bd
        latencies: list[float] = []
        statuses: dict[int, int] = {}

        async def run() -> float:
            started = time.perf_counter()
            stop_at = started + seconds
            async with anyio.create_task_group() as tg:
                for i in range(concurrency):
                    port = self.ports[i % k]
                    tg.start_soon(bd.connection, port, self.payload, stop_at, latencies, statuses)
            return time.perf_counter() - started

        elapsed = anyio.run(run, backend="asyncio")
        latencies.sort()
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        return {
            "n": len(latencies),
            "rate": len(latencies) / elapsed,
            "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000,
            "statuses": {str(s): c for s, c in statuses.items()},
        }

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


# -- the orchestrator ------------------------------------------------------------------------


class Log:
    """Everything printed goes to stdout and to the run's log file."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the run

    def __call__(self, msg: str = "") -> None:
        print(msg, flush=True)
        self.f.write(msg + "\n")


RUNNING: list[subprocess.Popen[str]] = []  # the drain child under way (its own group)


def run_child(a: argparse.Namespace, uri: str, contender: str, k: int, say: Log) -> dict[str, Any]:
    py = VENV / "bin" / "python"
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("SPECTRAL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(PEERS), str(HERE)])
    argv = [str(py), str(Path(__file__).resolve()), "--child", "--uri", uri]
    argv += ["--contender", contender, "--procs", str(k), "--drain-n", str(a.drain_n)]
    argv += ["--steady-rate", str(a.steady_rate), "--steady-seconds", str(a.steady_seconds)]
    argv += ["--pgq-batch", str(a.pgq_batch)]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its spawned workers too: killed as one group on timeout
    )
    RUNNING.append(proc)
    try:
        out, err = proc.communicate(timeout=a.child_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        say(f"  !! {contender} x{k}: timed out after {a.child_timeout:.0f}s\n{err[-2000:]}")
        return {"error": "timeout"}
    finally:
        RUNNING.remove(proc)
    if err.strip():
        say.f.write(err)
    if proc.returncode != 0:
        say(f"  !! {contender} x{k}: exit {proc.returncode}\n{err[-3000:]}")
        return {"error": f"exit {proc.returncode}"}
    return dict(json.loads(out.strip().splitlines()[-1]))


def check_venv() -> None:
    """The drain child's interpreter has pgqueuer and spectral_core's dependencies."""
    py = VENV / "bin" / "python"
    probe = "import pgqueuer, asyncpg, uvloop, psutil, spectral_core.outbox, spectral_core.db.pools"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    if not py.exists():
        raise SystemExit(f"no harness venv at {VENV}: bash {PEERS}/setup.sh (or --only decide)")
    r = subprocess.run(
        [str(py), "-c", probe], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if r.returncode != 0:
        raise SystemExit(
            f"the harness venv {VENV} cannot run the drain: {r.stderr.strip().splitlines()[-1]}\n"
            f"fix: bash {PEERS}/setup.sh && {VENV}/bin/pip install -e {ROOT}  (or --only decide)"
        )


def derive(m: dict[str, Any], steady: bool = False) -> dict[str, Any]:
    """Per-event costs, cores busy and the limit of one reading (``steady``: at an offered
    rate, limited only when the rate was not met)."""
    wall, n = m.get("active_s", m["wall_s"]), max(1, m["n"])
    ncpu = os.cpu_count() or 1
    d = {
        "server_cores": m["server_cpu_s"] / wall,
        "procs_cores": m["procs_cpu_s"] / wall,
        "loadgen_cores": m["loadgen_cpu_s"] / wall,
        "server_us": m["server_cpu_s"] / n * 1e6,
        "procs_us": m["procs_cpu_s"] / n * 1e6,
        "loadgen_us": m["loadgen_cpu_s"] / n * 1e6,
        "wal_per_event": m["wal_bytes"] / n,
    }
    w = m["waits"]
    # waits name the limit only where the database works: on average at least half a
    # backend active (a decide touches no table: a heartbeat's one WAL wait is not a limit)
    db_busy = w["active_backends_avg"] >= 0.5
    client = (d["procs_cores"] + d["loadgen_cores"]) / ncpu
    server = d["server_cores"] / ncpu
    box = client + server
    if steady and m["left"] == 0 and m["rate"] >= 0.95 * m["offered"]:
        limit = "none: offered rate met"
    elif db_busy and w["locks_share"] >= 0.25 and w["locks_share"] >= w["wal_share"]:
        limit = "locks"
    elif db_busy and w["wal_share"] >= 0.25:
        limit = "WAL"
    elif max(client, server) < 0.5 and box < 0.75:
        # nothing of ours saturated: the machine's other load, or round trips (each
        # process waits for its answers: more processes or lanes would help)
        limit = "other load" if m["machine_busy"] >= 0.9 else "none saturated"
    else:
        limit = "client CPU" if client >= server else "server CPU"
    d["limit"] = f"{limit} (ours {box:.0%}, machine {m['machine_busy']:.0%})"
    return d


def _med(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _ratio_line(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    rounds = ", ".join(f"{x:.2f}" for x in xs)
    return f"{statistics.median(xs):.2f} (rounds: {rounds})"


def summarize(res: dict[str, Any], say: Log) -> None:
    ks = res["ks"]
    if res["drain"]:
        for phase in ("drain", "steady"):
            say(f"\n{phase} (medians over rounds; cores = CPU seconds / wall seconds)")
            lat = " p50 ms | p99 ms |" if phase == "steady" else ""
            say(
                f"| contender | procs | events/s |{lat} workers us/ev | server us/ev | "
                "loadgen us/ev | WAL B/ev | locks / WAL waits | limit (median round) |"
            )
            say("|---|---|---|" + ("---|---|" if phase == "steady" else "") + "---|" * 6)
            for c in CONTENDERS:
                for k in ks:
                    rows = [r[phase] for r in res["drain"].get(f"{c}:{k}", []) if phase in r]
                    if not rows:
                        continue
                    ds = [derive(r, steady=phase == "steady") for r in rows]
                    mid = sorted(range(len(rows)), key=lambda i: rows[i]["rate"])[len(rows) // 2]
                    lat_s = ""
                    if phase == "steady":
                        lat_s = (
                            f" {_med([r['p50_ms'] for r in rows]):.1f} |"
                            f" {_med([r['p99_ms'] for r in rows]):.1f} |"
                        )
                    w = [r["waits"] for r in rows]
                    say(
                        f"| {c} | {k} | {_med([r['rate'] for r in rows]):,.0f} |{lat_s}"
                        f" {_med([d['procs_us'] for d in ds]):.0f} |"
                        f" {_med([d['server_us'] for d in ds]):.0f} |"
                        f" {_med([d['loadgen_us'] for d in ds]):.0f} |"
                        f" {_med([d['wal_per_event'] for d in ds]):,.0f} |"
                        f" {_med([x['locks_share'] for x in w]):.0%} /"
                        f" {_med([x['wal_share'] for x in w]):.0%} | {ds[mid]['limit']} |"
                    )
        say("\ndrain, medians of per-round ratios:")
        for k in ks:
            say(f"  spectral / pgqueuer, {k} procs: {_ratio_line(pair(res, 'drain', k))}")
        for c in CONTENDERS:
            for k in ks[1:]:
                say(f"  {c} {k} procs / 1 proc: {_ratio_line(scale(res, c, k))}")
        say("publish, batches of 1,000 (the fill before every drain; one producer):")
        for c in CONTENDERS:
            fills = [
                r["fill"]
                for key, rs in res["drain"].items()
                if key.startswith(f"{c}:")
                for r in rs
                if "fill" in r
            ]
            if fills:
                say(
                    f"  {c}: {_med([f['n'] / f['wall_s'] for f in fills]):,.0f} ev/s,"
                    f" server {_med([f['server_cpu_s'] / f['n'] * 1e6 for f in fills]):.1f} us/ev,"
                    f" producer {_med([f['loadgen_cpu_s'] / f['n'] * 1e6 for f in fills]):.1f} us/ev,"
                    f" WAL {_med([f['wal_bytes'] / f['n'] for f in fills]):,.0f} B/ev"
                )
    if res["decide"]:
        say("\ndecide (medians over rounds)")
        say(
            "| API procs | req/s | p50 ms | p99 ms | API us/req | server us/req | loadgen us/req "
            "| loadgen cores | WAL B/req | locks / WAL waits | limit (median round) |"
        )
        say("|---|---|---|---|---|---|---|---|---|---|---|")
        for k in ks:
            rows = res["decide"].get(str(k), [])
            if not rows:
                continue
            ds = [derive(r) for r in rows]
            mid = sorted(range(len(rows)), key=lambda i: rows[i]["rate"])[len(rows) // 2]
            say(
                f"| {k} | {_med([r['rate'] for r in rows]):,.0f} |"
                f" {_med([r['p50_ms'] for r in rows]):.2f} | {_med([r['p99_ms'] for r in rows]):.2f} |"
                f" {_med([d['procs_us'] for d in ds]):.0f} | {_med([d['server_us'] for d in ds]):.0f} |"
                f" {_med([d['loadgen_us'] for d in ds]):.0f} |"
                f" {_med([d['loadgen_cores'] for d in ds]):.2f} |"
                f" {_med([d['wal_per_event'] for d in ds]):,.1f} |"
                f" {_med([r['waits']['locks_share'] for r in rows]):.0%} /"
                f" {_med([r['waits']['wal_share'] for r in rows]):.0%} | {ds[mid]['limit']} |"
            )
            bad = {s: n for r in rows for s, n in r["statuses"].items() if s != "200"}
            if bad:
                say(f"  WARNING: {k} procs got non-200 answers: {bad}")
        for k in ks[1:]:
            say(f"  decide {k} procs / 1 proc (per-round ratios): {_ratio_line(dscale(res, k))}")
    doc_tables(res, say)


def _mid(rows: list[dict[str, Any]], steady: bool = False) -> str:
    """The limit of the median round (by rate)."""
    i = sorted(range(len(rows)), key=lambda j: rows[j]["rate"])[len(rows) // 2]
    return str(derive(rows[i], steady=steady)["limit"])


def doc_tables(res: dict[str, Any], say: Log) -> None:
    """The tables of docs/performance.md (issue 22 part 4), filled from this run."""
    ks = res["ks"]
    say("\nfor docs/performance.md (medians over rounds; K / 1: median of per-round ratios):")
    if res["drain"]:
        say(
            "\n| contender | worker procs | drain events/s | K / 1 | steady p50 / p99 ms | "
            "workers / server µs per event | WAL B per event (drain / steady) | limit |"
        )
        say("|---|---|---|---|---|---|---|---|")
        for c in CONTENDERS:
            for k in ks:
                runs = [r for r in res["drain"].get(f"{c}:{k}", []) if "drain" in r]
                if not runs:
                    continue
                d = [r["drain"] for r in runs]
                st = [r["steady"] for r in runs]
                dd = [derive(x) for x in d]
                ratio = "1" if k == ks[0] else f"{_med(scale(res, c, k)):.2f}"
                say(
                    f"| {c} | {k} | {_med([x['rate'] for x in d]):,.0f} | {ratio} |"
                    f" {_med([x['p50_ms'] for x in st]):.1f} / {_med([x['p99_ms'] for x in st]):.1f} |"
                    f" {_med([x['procs_us'] for x in dd]):.0f} / {_med([x['server_us'] for x in dd]):.0f} |"
                    f" {_med([x['wal_per_event'] for x in dd]):,.0f} /"
                    f" {_med([x['wal_bytes'] / max(1, x['n']) for x in st]):,.0f} | {_mid(d)} |"
                )
    if res["decide"]:
        say(
            "\n| API procs | requests/s | K / 1 | p50 / p99 ms | API / server µs per request | "
            "load generator cores | limit |"
        )
        say("|---|---|---|---|---|---|---|")
        for k in ks:
            rows = res["decide"].get(str(k), [])
            if not rows:
                continue
            ds = [derive(r) for r in rows]
            ratio = "1" if k == ks[0] else f"{_med(dscale(res, k)):.2f}"
            say(
                f"| {k} | {_med([r['rate'] for r in rows]):,.0f} | {ratio} |"
                f" {_med([r['p50_ms'] for r in rows]):.2f} / {_med([r['p99_ms'] for r in rows]):.2f} |"
                f" {_med([x['procs_us'] for x in ds]):.0f} / {_med([x['server_us'] for x in ds]):.0f} |"
                f" {_med([x['loadgen_cores'] for x in ds]):.2f} | {_mid(rows)} |"
            )


def pair(res: dict[str, Any], phase: str, k: int) -> list[float]:
    a, b = res["drain"].get(f"spectral:{k}", []), res["drain"].get(f"pgqueuer:{k}", [])
    return [
        x[phase]["rate"] / y[phase]["rate"]
        for x, y in zip(a, b, strict=True)
        if phase in x and phase in y
    ]


def scale(res: dict[str, Any], c: str, k: int) -> list[float]:
    a, b = res["drain"].get(f"{c}:{k}", []), res["drain"].get(f"{c}:{res['ks'][0]}", [])
    return [
        x["drain"]["rate"] / y["drain"]["rate"]
        for x, y in zip(a, b, strict=True)
        if "drain" in x and "drain" in y
    ]


def dscale(res: dict[str, Any], k: int) -> list[float]:
    a, b = res["decide"].get(str(k), []), res["decide"].get(str(res["ks"][0]), [])
    return [x["rate"] / y["rate"] for x, y in zip(a, b, strict=True)]


# -- chart -----------------------------------------------------------------------------------


def chart(res: dict[str, Any], path: Path) -> None:
    """Two panels: drain events/s and decide requests/s against processes (medians)."""
    ks = res["ks"]
    series: list[tuple[str, str, list[tuple[int, float]]]] = []
    for c, colour in (("spectral", "#1f77b4"), ("pgqueuer", "#d62728")):
        pts = [
            (
                k,
                _med(
                    [r["drain"]["rate"] for r in res["drain"].get(f"{c}:{k}", []) if "drain" in r]
                ),
            )
            for k in ks
        ]
        series.append((f"drain: {c}", colour, [p for p in pts if p[1] == p[1]]))
    dpts = [(k, _med([r["rate"] for r in res["decide"].get(str(k), [])])) for k in ks]
    panels = [
        ("drain (events/s) vs worker processes", series[:2]),
        (
            "decide (requests/s) vs API processes",
            [("decide: spectral-api", "#2ca02c", [p for p in dpts if p[1] == p[1]])],
        ),
    ]
    w, h, pad = 360, 260, 50
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w + 20}" height="{h + 60}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="10" y="16" font-size="13">spectral scaling, {res["started"]} '
        f"({res['rounds']} rounds, medians; {res['cpus']} CPUs shared by everything)"
        f"{' SMOKE RUN (--quick): numbers meaningless' if '--quick' in res['argv'] else ''}"
        "</text>",
    ]
    for i, (title, lines) in enumerate(panels):
        x0, y0 = 10 + i * (w + 10), 30
        ymax = max([v for _, _, pts in lines for _, v in pts] + [1.0]) * 1.15
        out.append(f'<text x="{x0 + pad}" y="{y0 + 12}">{title}</text>')
        gx0, gy0, gw, gh = x0 + pad, y0 + 20, w - pad - 10, h - 50

        def px(k: int, gx0: int = gx0, gw: int = gw) -> float:
            return float(gx0 + gw * (ks.index(k) / max(1, len(ks) - 1)))

        def py(v: float, gy0: int = gy0, gh: int = gh, ymax: float = ymax) -> float:
            return gy0 + gh - gh * v / ymax

        out.append(
            f'<rect x="{gx0}" y="{gy0}" width="{gw}" height="{gh}" fill="none" stroke="#999"/>'
        )
        for j in range(5):
            v = ymax * j / 4
            out.append(
                f'<text x="{gx0 - 4}" y="{py(v) + 4:.0f}" text-anchor="end">{v:,.0f}</text>'
                f'<line x1="{gx0}" x2="{gx0 + gw}" y1="{py(v):.0f}" y2="{py(v):.0f}" stroke="#eee"/>'
            )
        for k in ks:
            out.append(f'<text x="{px(k):.0f}" y="{gy0 + gh + 14}" text-anchor="middle">{k}</text>')
        for li, (name, colour, pts) in enumerate(lines):
            if pts:
                coords = " ".join(f"{px(k):.0f},{py(v):.0f}" for k, v in pts)
                out.append(
                    f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
                for k, v in pts:
                    out.append(f'<circle cx="{px(k):.0f}" cy="{py(v):.0f}" r="3" fill="{colour}"/>')
            out.append(
                f'<text x="{gx0 + 6}" y="{gy0 + 14 + 13 * li}" fill="{colour}">{name}</text>'
            )
        out.append(
            f'<text x="{gx0 + gw / 2:.0f}" y="{gy0 + gh + 28}" text-anchor="middle">'
            "processes (not to scale)</text>"
        )
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke test)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--procs", default="1,2,4", help="process counts K (first one is the base)")
    p.add_argument("--only", default="drain,decide", help="drain, decide or both")
    p.add_argument("--drain-n", type=int, default=20000, help="events per drain, every contender")
    p.add_argument("--steady-rate", type=float, default=200.0, help="offered events/s")
    p.add_argument("--steady-seconds", type=float, default=5.0)
    p.add_argument("--pgq-batch", type=int, default=100, help="pgqueuer batch size")
    p.add_argument("--concurrency", type=int, default=32, help="decide: HTTP connections")
    p.add_argument("--decide-seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=2.0, help="decide warm-up per process")
    p.add_argument("--child-timeout", type=float, default=300.0)
    p.add_argument("--chart", type=Path, default=ROOT / "docs" / "perf" / "scaling.svg")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--chart-from", type=Path, default=None, help="redraw from a results file")
    # the drain child (internal)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--uri", help=argparse.SUPPRESS)
    p.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        a.n, a.rate, a.seconds, a.timeout = a.drain_n, a.steady_rate, a.steady_seconds, 120.0
        child(a)
        return 0
    if a.chart_from:
        chart(json.loads(a.chart_from.read_text()), a.chart)
        print(f"chart: {a.chart}")
        return 0
    if a.quick:
        a.rounds, a.drain_n, a.steady_rate, a.steady_seconds = 1, 2000, 100.0, 2.0
        a.decide_seconds, a.warmup, a.procs = 1.5, 0.5, "1,2"
    ks = [int(x) for x in a.procs.split(",")]
    only = set(a.only.split(","))
    if "drain" in only:
        check_venv()
    if "decide" in only:
        import importlib.util

        missing = [
            m for m in ("uvicorn", "wasmtime", "starlette") if not importlib.util.find_spec(m)
        ]
        if missing:
            raise SystemExit(
                f"decide needs spectral's API dependencies in this interpreter ({sys.executable}"
                f" lacks {', '.join(missing)}): run it with the project's python, or --only drain"
            )
    ts = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    say = Log(results_dir / f"scaling-{ts}.log")
    say(f"command: python {shlex.join(['bench/bench_scaling.py', *sys.argv[1:]])}")
    say(
        f"started {ts}, python {platform.python_version()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}, venv {VENV}, peers {PEERS}"
    )
    res: dict[str, Any] = {
        "started": ts,
        "argv": sys.argv[1:],
        "ks": ks,
        "rounds": a.rounds,
        "drain_n": a.drain_n,
        "steady_rate": a.steady_rate,
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg()[0],
        "drain": {},
        "decide": {},
    }

    from spectral_core.embedded import EmbeddedPostgres

    # SIGTERM (a supervisor, `timeout`): clean up as on an error (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="spectral-bench-scaling-"))
    pg = EmbeddedPostgres(tmp / "pg", durable=True)
    api: Api | None = None
    t_start = time.monotonic()
    try:
        uri = pg.start()
        server = ServerCpu(uri)
        if "drain" in only:
            configs = [(c, k) for k in ks for c in CONTENDERS]
            for r in range(a.rounds):
                order = configs[r % len(configs) :] + configs[: r % len(configs)]
                say(f"== drain round {r + 1}/{a.rounds}: {' '.join(f'{c}x{k}' for c, k in order)}")
                t_round = time.monotonic()
                for c, k in order:
                    out = run_child(a, uri, c, k, say)
                    res["drain"].setdefault(f"{c}:{k}", []).append(out | {"round": r + 1})
                    if "drain" in out:
                        say(
                            f"  {c} x{k}: drain {out['drain']['rate']:,.0f} ev/s, steady "
                            f"p50 {out['steady']['p50_ms']} ms p99 {out['steady']['p99_ms']} ms"
                        )
                say(f"  (round took {time.monotonic() - t_round:.0f} s)")
        if "decide" in only:
            api = Api(uri, max(ks), tmp)
            for k in ks:  # warm-up: JIT, caches, pools of every process
                api.load(k, a.concurrency, a.warmup)
            probe = Probe(api.uri, ServerCpu(api.uri))
            for r in range(a.rounds):
                korder = ks[r % len(ks) :] + ks[: r % len(ks)]
                say(f"== decide round {r + 1}/{a.rounds}: {' '.join(map(str, korder))}")
                for k in korder:
                    probe.start([pr.pid for pr in api.procs[:k]])
                    out = api.load(k, a.concurrency, a.decide_seconds)
                    reading = probe.stop() | out
                    res["decide"].setdefault(str(k), []).append(reading | {"round": r + 1})
                    say(f"  {k} API procs: {out['rate']:,.0f} req/s, p99 {out['p99_ms']:.1f} ms")
        del server
    finally:
        for proc in RUNNING:  # interrupted: the drain child and its workers, by group id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if api is not None:
            api.stop()
        pg.destroy()
    res["seconds"] = time.monotonic() - t_start
    res["load_end"] = os.getloadavg()[0]
    out_json = results_dir / f"scaling-{ts}.json"
    out_json.write_text(json.dumps(res, indent=1, default=str))
    summarize(res, say)
    say(f"\nran {res['seconds']:.0f} s; load {res['load_start']:.1f} -> {res['load_end']:.1f}")
    say(f"results: {out_json}")
    if not a.no_chart:
        chart(res, a.chart)
        say(f"chart: {a.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
