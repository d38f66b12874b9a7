"""Failover and outages on real servers: a primary with a streaming hot standby (built
with ``pg_basebackup`` from the embedded binaries, promoted with ``pg_ctl promote``) and a
single server stopped for a while.  Real ``spectral-workers`` and ``spectral-api``
processes; times are measured from the moment the database takes writes again."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Publisher
from spectral_core.generations import allocate_generation
from spectral_core.migrate import run_migrations
from spectral_core.outbox import EventIn

from .cluster import Cluster
from .procs import Proc, health_status, scalar, start_api, start_workers, wait_for

pytestmark = pytest.mark.slow

#: the reconnect backoff cap under test; the bound allows a noisy machine on top
CAP_S = 2.0
SLACK_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        with psycopg.connect(c.primary.url, autocommit=True) as conn:
            run_migrations(conn)
        yield c
    finally:
        c.destroy()


def publish(url: str, gen: int, n: int, prefix: str, **payload: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        Publisher(gen).publish_many(
            conn,
            [
                EventIn(topic="platform.record", payload=payload, idempotency_key=f"{prefix}{i}")
                for i in range(n)
            ],
        )


def writable_at(url: str, timeout: float) -> float:
    """Poll until ``url`` takes a write; return the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=1) as c:
                c.execute("CREATE TEMP TABLE probe (x int)")
                return time.monotonic()
        except psycopg.Error:
            time.sleep(0.02)
    raise AssertionError("the database never became writable")


def handled(url: str, prefix: str) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM core.event_log WHERE idempotency_key LIKE %s",
            (prefix + "%",),
        )
    )


class HealthWatch:
    """Probes ``/health`` every 50 ms in a thread; keeps (sent, answered, status) per probe:
    a probe reads its facts somewhere between the two (one sent before a crash may answer
    after it with facts read before it; one sent before a promotion may read after it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[tuple[float, int | None]] = []  # (sent, status)
        self.answered: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            status = health_status(self.port)
            self.seen.append((sent, status))
            self.answered.append(time.monotonic())
            time.sleep(0.05)

    def first_pass_after(self, t: float) -> float | None:
        return next((at for at, status in self.seen if at >= t and status == 200), None)

    def passes_between(self, t0: float, t1: float) -> int:
        """Passing probes that read their facts inside [t0, t1] for sure: sent after t0 and
        answered before t1."""
        return sum(
            1
            for (sent, status), answered in zip(self.seen, self.answered, strict=False)
            if t0 <= sent and answered <= t1 and status == 200
        )


_started: list[Proc] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    """A drill that fails half-way leaves no worker or API running (its process handle
    would otherwise warn, unraisably, in whichever test runs next)."""
    yield
    while _started:
        _started.pop().kill()


def boot(url: str, gen: int, tmp_path: Path, **extra: str) -> tuple[Proc, Proc, int]:
    port = free_port()
    env = {
        "SPECTRAL_RECONNECT_BACKOFF_CAP_S": str(CAP_S),
        "SPECTRAL_OUTAGE_LIMIT_S": "120",
        "SPECTRAL_API_HEALTH_CACHE_S": "0",
        **extra,
    }
    workers = start_workers(url, gen, tmp_path / "workers.log", **env)
    api = start_api(url, gen, port, tmp_path / "api.log", **env)
    _started.extend([workers, api])
    wait_for(
        lambda: scalar(url, "SELECT count(*) FROM core.workers WHERE state = 'running'") == 1,
        60,
        "a running worker",
    )
    wait_for(lambda: health_status(port) == 200, 60, "api up")
    return workers, api, port


def stop(*procs: Proc) -> None:
    for p in procs:
        p.signal(15)
    for p in procs:
        assert p.wait(30) == 0, p.output()[-3000:]


def test_failover_with_delayed_promotion_is_handled_within_the_backoff_cap(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The primary crashes and the standby is promoted 20 s later (an HA tool deciding):
    the worker handles a new event, and /health passes, within the reconnect backoff cap
    of the new primary taking writes (psycopg_pool's own backoff had reached 16-32 s);
    nothing published before the crash is lost or handled twice."""
    url = cluster.url(read_write=True)
    with psycopg.connect(cluster.primary.url, autocommit=True) as conn:
        gen = allocate_generation(conn, "failover")
    publish(cluster.primary.url, gen, 100, "before-")
    workers, api, port = boot(url, gen, tmp_path)
    wait_for(lambda: handled(cluster.primary.url, "before-") == 100, 60, "first drain")
    cluster.wait_replayed()
    with HealthWatch(port) as watch:
        cluster.crash_primary()
        crashed = time.monotonic()
        time.sleep(20)
        promoting = time.monotonic()  # from here the API may see the new primary first
        cluster.promote()
        writable = writable_at(url, 30)
        publish(url, gen, 20, "after-")
        wait_for(lambda: handled(url, "after-") > 0, 60, "handling after the failover")
        handled_s = time.monotonic() - writable
        wait_for(lambda: health_status(port) == 200, 60, "health after the failover")
    health_s = (watch.first_pass_after(writable) or time.monotonic()) - writable
    print(f"failover: handled {handled_s:.2f}s, /health {health_s:.2f}s after writable")
    assert workers.p.poll() is None and api.p.poll() is None
    assert watch.passes_between(crashed + 0.5, promoting) == 0, watch.seen
    assert handled_s < CAP_S + SLACK_S, workers.output()[-3000:]
    assert health_s < CAP_S + SLACK_S, api.output()[-3000:]
    wait_for(lambda: handled(url, "after-") == 20, 60, "drain after the failover")
    with psycopg.connect(url, autocommit=True) as c:
        total, distinct = c.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM core.event_log"
        ).fetchone()  # type: ignore[misc]
    assert total == distinct
    stop(workers, api)


@pytest.mark.parametrize("outage_s", [10, 35, 60])
def test_outage_of_a_single_server_is_handled_within_the_backoff_cap(
    cluster: Cluster, tmp_path: Path, outage_s: float
) -> None:
    """The only server is down for 10, 35 or 60 s (the lengths issue 23 names): once it is
    back, the worker handles within the cap and /health passes within the cap (the pool
    retries at least every cap seconds instead of 1, 2, 4, 8, 16, 32 s apart)."""
    url = cluster.primary.url
    with psycopg.connect(url, autocommit=True) as conn:
        gen = allocate_generation(conn, "outage")
    workers, api, port = boot(url, gen, tmp_path)
    with HealthWatch(port) as watch:
        cluster.primary.stop(mode="immediate")
        time.sleep(outage_s)
        cluster.primary.start()
        writable = writable_at(url, 30)
        publish(url, gen, 5, "back-")
        wait_for(lambda: handled(url, "back-") > 0, 60, "handling after the outage")
        handled_s = time.monotonic() - writable
        wait_for(lambda: health_status(port) == 200, 60, "health after the outage")
    health_s = (watch.first_pass_after(writable) or time.monotonic()) - writable
    print(f"outage {outage_s}s: handled {handled_s:.2f}s, /health {health_s:.2f}s after writable")
    assert handled_s < CAP_S + SLACK_S, workers.output()[-3000:]
    assert health_s < CAP_S + SLACK_S, api.output()[-3000:]
    stop(workers, api)


def test_a_read_only_session_is_an_outage_not_a_database(cluster: Cluster, tmp_path: Path) -> None:
    """A multi-host URL without target_session_attrs=read-write: after the primary
    crashes both processes land on the standby.  No process exits, /health never passes
    while only the read-only standby is reachable, every event ends done once the
    standby is promoted, and the boot log named the fix."""
    url = cluster.url(read_write=False)
    with psycopg.connect(cluster.primary.url, autocommit=True) as conn:
        gen = allocate_generation(conn, "read-only")
    publish(cluster.primary.url, gen, 400, "slow-", sleep_ms=10)
    workers, api, port = boot(url, gen, tmp_path)
    wait_for(lambda: handled(cluster.primary.url, "slow-") > 20, 60, "progress")
    with HealthWatch(port) as watch:
        cluster.crash_primary()
        crashed = time.monotonic()
        time.sleep(8)
        assert workers.p.poll() is None, workers.output()[-3000:]
        assert api.p.poll() is None, api.output()[-3000:]
        promoted = time.monotonic()
        cluster.promote()
        writable = writable_at(cluster.standby.url, 30)
        wait_for(lambda: health_status(port) == 200, 60, "health after promotion")
    assert watch.passes_between(crashed + 0.5, promoted) == 0, [
        (round(at - crashed, 2), s) for at, s in watch.seen if at > crashed
    ]
    assert any(at <= promoted and s == 503 for at, s in watch.seen if at > crashed)
    new = cluster.standby.url
    wait_for(
        lambda: scalar(new, "SELECT count(*) FROM core.outbox WHERE status <> 'done'") == 0,
        90,
        "every event done",
    )
    assert handled(new, "slow-") == 400
    print(f"read-only: writable {writable - promoted:.2f}s after promote")
    assert "target_session_attrs=read-write" in workers.output()
    assert "target_session_attrs=read-write" in api.output()
    stop(workers, api)
