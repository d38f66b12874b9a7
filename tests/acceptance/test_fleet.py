"""The fleet with real ``spectral-api`` processes on one database (issue 22, ADR 0032).

- Part 2: every API process registers in ``core.api_processes``; ``deploy status`` and
  ``/health``'s ``fleet:live`` show them per generation, both generations side by side;
  a SIGKILLed process turns ``lost`` after the stale bound, a SIGTERMed one ``exited``.
- Part 1: a tenant's rate and burst hold for the whole fleet: a flooding tenant spread
  over 1, 3, 4 and 8 processes gets its fleet rate (not n x), a quiet tenant is
  unaffected, and a SIGKILLed process gives its share back within the stale bound.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from spectral_core.generations import allocate_generation
from spectral_core.outbox import generation_status
from spectral_core.ratelimit import TenantLimits, fleet_share
from spectral_core.tenants import create_api_key, create_tenant

from .procs import Proc, clean_env, start_api, start_workers, wait_for

pytestmark = pytest.mark.slow

STALE_S = 3.0  # procs.FAST: SPECTRAL_WORKER_STALE_AFTER_S


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: the sockets stay bound until all are chosen (one at a time,
    the kernel may hand out a just-closed port again: two processes then race for it)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def fleet_live(port: int) -> int | None:
    """``/health``'s ``fleet:live`` value on one process (None when it does not answer)."""
    try:
        doc = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    entry = doc.get("checks", {}).get("fleet:live", [{}])[0]
    value = entry.get("observedValue")
    return int(value) if isinstance(value, int) else None


def api_states(conn: psycopg.Connection[Any]) -> dict[int, dict[str, int]]:
    return {
        s.generation: s.as_dict()["api"]
        for s in generation_status(conn, stale_after_s=STALE_S, retention_s=3600)
    }


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def token_for(db_url: str, org: str, limits: TenantLimits) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
            await create_tenant(c, org, limits=limits)
            _, token = await create_api_key(c, org)
        return token

    return anyio.run(make)


def test_api_processes_are_registered_and_shown_per_generation(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path, procs: list[Proc]
) -> None:
    """Two API processes of generation N and one of N+1 are each shown live in their own
    generation (deploy status and /health's fleet:live); a SIGKILLed process is shown lost
    after the stale bound (and no longer counted by /health), a SIGTERMed one exited."""
    gen_n1 = allocate_generation(conn, "v-next")
    ports = free_ports(3)
    gens = [generation, generation, gen_n1]
    for i, (port, gen) in enumerate(zip(ports, gens, strict=True)):
        procs.append(start_api(db_url, gen, port, tmp_path / f"api{i}.log"))
    wait_for(lambda: fleet_live(ports[0]) == 2, 60, "both API processes of N live")
    wait_for(lambda: fleet_live(ports[2]) == 1, 60, "the API process of N+1 live")
    states = api_states(conn)
    assert states[generation] == {"live": 2, "reconnecting": 0, "lost": 0, "exited": 0}
    assert states[gen_n1] == {"live": 1, "reconnecting": 0, "lost": 0, "exited": 0}
    rows = conn.execute(
        "SELECT generation, pid FROM core.api_processes ORDER BY generation, pid"
    ).fetchall()
    assert sorted(rows) == sorted((g, p.p.pid) for g, p in zip(gens, procs, strict=True))
    # old code's view is untouched: API processes are not workers
    assert conn.execute("SELECT count(*) FROM core.workers").fetchone() == (0,)

    procs[1].signal(signal.SIGKILL)
    procs[1].wait(10)
    killed_at = time.monotonic()
    wait_for(lambda: api_states(conn)[generation]["lost"] == 1, STALE_S + 10, "lost shown")
    assert time.monotonic() - killed_at >= STALE_S - 0.5  # not before the stale bound
    wait_for(lambda: fleet_live(ports[0]) == 1, 10, "/health counts only the live one")

    procs[2].signal(signal.SIGTERM)
    assert procs[2].wait(30) == 0
    assert api_states(conn)[gen_n1] == {"live": 0, "reconnecting": 0, "lost": 0, "exited": 1}


def flood(ports: list[int], token: str, seconds: float, clients: int = 6) -> tuple[int, int]:
    """Requests of one tenant round-robin over ``ports`` as fast as ``clients`` loops
    can send them for ``seconds``; returns (admitted, refused)."""
    counts = {"ok": 0, "refused": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(offset: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            i = offset
            while time.monotonic() < deadline:
                port = ports[i % len(ports)]
                i += 1
                status = client.get(f"http://127.0.0.1:{port}/api/fleet-probe").status_code
                with lock:
                    counts["refused" if status == 429 else "ok"] += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts["ok"], counts["refused"]


@pytest.mark.parametrize("n", [1, 3, 4, 8])
def test_tenant_rate_holds_for_the_fleet_and_a_killed_process_gives_its_share_back(
    db_url: str, generation: int, tmp_path: Path, procs: list[Proc], n: int
) -> None:
    """Fleet rate 20/s, burst 8, over ``n`` processes (1, 3, 4 and 8): a tenant flooding
    all of them round-robin for 6 s is admitted at most burst + rate x t (+10 %), not
    n x that; a quiet tenant meanwhile gets every request through.  With two or more: after
    one process is SIGKILLed, the ones left take over its share within the stale bound (the
    flood is admitted at the fleet rate again, not (n - 1) / n of it); when a new process
    joins, all go back to 1 / n each (not (n + 1) / n of the rate)."""
    rate, burst, seconds = 20.0, 8, 6.0  # burst >= n: every share is a real split
    noisy = token_for(db_url, "noisy", TenantLimits(rate=rate, burst=burst, concurrency=64))
    quiet = token_for(db_url, "quiet", TenantLimits(rate=rate, burst=burst, concurrency=64))
    ports = free_ports(n)
    for i, port in enumerate(ports):
        procs.append(start_api(db_url, generation, port, tmp_path / f"api{i}.log"))
    for port in ports:
        wait_for(lambda port=port: fleet_live(port) == n, 90, f"{n} live API processes")
    time.sleep(1.0)  # one heartbeat after the last registration: every process knows N = n

    quiet_codes: list[int] = []
    stop = threading.Event()

    def quiet_tenant() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {quiet}"}, timeout=10) as client:
            i = 0
            while not stop.is_set():
                port = ports[i % n]
                i += 1
                quiet_codes.append(
                    client.get(f"http://127.0.0.1:{port}/api/fleet-probe").status_code
                )
                time.sleep(0.25)

    q = threading.Thread(target=quiet_tenant)
    q.start()
    try:
        admitted, refused = flood(ports, noisy, seconds)
    finally:
        stop.set()
        q.join()

    def cap(k: int) -> float:
        """burst + rate x t for a fleet of k (each burst part at least 2, ADR 0032)"""
        limits = TenantLimits(rate=rate, burst=burst, concurrency=64)
        return sum(fleet_share(limits, k, r).burst for r in range(k)) + rate * seconds

    bound = cap(n)
    assert refused > 0, "the flood was never limited"
    assert admitted <= 1.1 * bound, f"fleet of {n} admitted {admitted} > {bound} (+10%)"
    assert admitted >= 0.6 * rate * seconds, f"fleet of {n} admitted only {admitted}"
    assert quiet_codes and 429 not in quiet_codes, quiet_codes
    if n == 1:
        return

    procs[-1].signal(signal.SIGKILL)
    procs[-1].wait(10)
    wait_for(lambda: fleet_live(ports[0]) == n - 1, STALE_S + 10, "the killed process not counted")
    time.sleep(1.5)  # a heartbeat: every survivor enforces rate / (n - 1)
    time.sleep(burst / rate * 2)  # every bucket refilled
    admitted, refused = flood(ports[:-1], noisy, seconds)
    assert refused > 0
    # with the dead process's share kept: at most burst + (n - 1) / n x rate x t
    # (88 with 3 processes and 98 with 4, below 0.85 x 128 = 108.8); with 8 a kept share
    # (113) and a returned one (128) are too close to tell apart on a noisy box (a CI run
    # read 106), so the 3- and 4-process runs check it and the 8-process run checks the
    # survivors' registry count and their limit above
    if n <= 4:
        assert admitted >= 0.85 * (burst + rate * seconds), f"share not given back: {admitted}"
    assert admitted <= 1.1 * cap(n - 1), admitted

    # a process joins: the others shrink their share to 1 / n within a heartbeat
    ports[-1] = free_port()
    procs.append(start_api(db_url, generation, ports[-1], tmp_path / "api-joined.log"))
    for port in ports:
        wait_for(lambda port=port: fleet_live(port) == n, 90, f"{n} live API processes again")
    time.sleep(1.5 + burst / rate * 2)  # a heartbeat, and every bucket refilled
    admitted, refused = flood(ports, noisy, seconds)
    assert refused > 0
    # without re-sharing: (n - 1) x rate / (n - 1) + rate / n = (n + 1) / n x the fleet rate
    assert admitted <= 1.1 * cap(n), f"join not re-shared: {admitted}"


def client_backends(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_connection_budget_is_checked_before_connecting_and_printed(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path, procs: list[Proc]
) -> None:
    """ADR 0035: a spectral-api or spectral-workers whose settings need more connections
    than SPECTRAL_DATABASE_MAX_CONNECTIONS exits 3 with the count and its parts, without
    opening one; an API process at exactly its budget starts and opens exactly the
    connections the formula says (pool + registry); deploy status prints the formula for
    the live fleet."""
    before = client_backends(conn)
    api = start_api(
        db_url,
        generation,
        free_port(),
        tmp_path / "over.log",
        SPECTRAL_DATABASE_POOL_MAX="4",
        SPECTRAL_DATABASE_MAX_CONNECTIONS="4",
    )
    assert api.wait(60) == 3, api.output()
    assert "spectral-api needs 5 database connections (pool 4 + registry 1)" in api.output()
    assert "SPECTRAL_DATABASE_MAX_CONNECTIONS is 4" in api.output()
    workers = start_workers(
        db_url,
        generation,
        tmp_path / "w-over.log",
        SPECTRAL_DATABASE_POOL_MAX="4",
        SPECTRAL_AGENT_CONCURRENCY="2",
        SPECTRAL_DATABASE_MAX_CONNECTIONS="8",
    )
    assert workers.wait(60) == 3, workers.output()
    # pool 4 + heartbeat 1 + LISTEN 1 + checkpointer max(2, min(2, 4) + 1) = 3
    assert "spectral-workers needs 9 database connections" in workers.output()
    assert conn.execute("SELECT count(*) FROM core.api_processes").fetchone() == (0,)
    assert client_backends(conn) == before

    port = free_port()
    procs.append(
        start_api(
            db_url,
            generation,
            port,
            tmp_path / "api.log",
            SPECTRAL_DATABASE_POOL_MIN="4",
            SPECTRAL_DATABASE_POOL_MAX="4",
            SPECTRAL_DATABASE_MAX_CONNECTIONS="5",
        )
    )
    wait_for(lambda: fleet_live(port) == 1, 60, "the API at its budget serves")
    wait_for(lambda: client_backends(conn) - before == 5, 10, "pool 4 + registry 1 open")

    out = subprocess.run(
        [sys.executable, "-m", "spectral_cli", "deploy", "status"],
        env=clean_env(SPECTRAL_DATABASE_URL=db_url, SPECTRAL_DATABASE_POOL_MAX="4"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "per API process:       5 = pool 4 + registry 1" in out.stdout
    assert "live fleet: 1 x 5 + 0 x " in out.stdout, out.stdout
