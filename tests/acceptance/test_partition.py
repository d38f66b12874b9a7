"""A worker cut off from its database by a real network partition (its namespace's link
goes down: packets dropped both ways, no FIN, no RST) comes back by itself: TCP keepalives,
tcp_user_timeout and connect_timeout on every connection let it see the dead connections,
and once the link heals it is `running` and handling again."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from spectral_core import Publisher
from spectral_core.outbox import EventIn

from .netns import Forwarder, namespace
from .procs import Proc, clean_env, scalar, wait_for

pytestmark = pytest.mark.slow


def publish(url: str, gen: int, n: int, prefix: str, topic: str, **payload: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        Publisher(gen).publish_many(
            conn,
            [
                EventIn(topic=topic, payload=payload, idempotency_key=f"{prefix}{i}")
                for i in range(n)
            ],
        )


def worker_row(url: str, pid: int) -> tuple[str, float] | None:
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT state, extract(epoch FROM now() - last_seen) FROM core.workers "
            "WHERE pid = %s ORDER BY started_at DESC LIMIT 1",
            (pid,),
        ).fetchone()
    return (row[0], float(row[1])) if row else None


def test_partitioned_worker_comes_back_by_itself(
    db_url: str, generation: int, tmp_path: Path
) -> None:
    """A worker is partitioned from the server for 60 s (its pool and LISTEN connections
        idle, so nothing tells it).  Events published meanwhile wait; after the heal the worker
        is `running` again (a fresh heartbeat) and has handled them within the reconnect cap
    (1 s here) plus a noisy machine's slack, with no
        operator action (held rows and the server-side sessions they keep are the reaper's
        part of issue 16.1, not tested here)."""
    params = conninfo_to_dict(db_url)
    with namespace() as ns:
        fwd = Forwarder(ns.host_ip, (str(params["host"]), int(params["port"])))
        via_link = make_conninfo(db_url, host=ns.host_ip, port=str(fwd.port))
        env = clean_env(
            SPECTRAL_DATABASE_URL=via_link,  # pool, LISTEN session, heartbeat, checkpointer
            SPECTRAL_GENERATION=str(generation),
            SPECTRAL_RECONNECT_BACKOFF_CAP_S="1",
        )
        argv = [*ns.prefix(), sys.executable, "-m", "spectral_workers"]
        worker = Proc(argv, env, tmp_path / "w.log")
        try:
            wait_for(lambda: worker_row(db_url, worker.p.pid) is not None, 60, "worker up")
            publish(db_url, generation, 10, "before", "platform.record")
            wait_for(lambda: handled(db_url, "before") == 10, 30, "handling before the cut")
            seen = len(worker.output())
            ns.cut()
            cut_at = time.monotonic()
            # nothing tells the worker: its keepalives / tcp_user_timeout must
            wait_for(
                lambda: "consumer.reconnecting" in worker.output()[seen:],
                40,
                "the worker noticing its dead connections",
            )
            detect_s = time.monotonic() - cut_at
            time.sleep(max(0.0, 60 - detect_s))
            assert worker.p.poll() is None, worker.output()[-3000:]
            publish(db_url, generation, 10, "during", "platform.record")
            assert handled(db_url, "during") == 0
            ns.heal()
            healed = time.monotonic()
            wait_for(lambda: handled(db_url, "during") == 10, 60, "handling after the heal")
            handling_s = time.monotonic() - healed

            def running_again() -> bool:
                row = worker_row(db_url, worker.p.pid)
                return row is not None and row[0] == "running" and row[1] < 2.0

            wait_for(running_again, 60, "the worker running again")
            running_s = time.monotonic() - healed
            print(
                f"partition: noticed {detect_s:.2f}s after the cut; handling {handling_s:.2f}s, "
                f"running {running_s:.2f}s after the heal"
            )
            # SPECTRAL_DATABASE_TCP_TIMEOUT_S (10 s) plus slack; the kernel default is ~15 min
            assert detect_s < 15, worker.output()[-3000:]
            assert handling_s < 5, worker.output()[-3000:]
            assert running_s < 5, worker.output()[-3000:]
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0
        finally:
            worker.kill()
            fwd.close()


def handled(url: str, prefix: str) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM core.event_log WHERE idempotency_key LIKE %s",
            (prefix + "%",),
        )
    )
