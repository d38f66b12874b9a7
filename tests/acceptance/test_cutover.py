"""Cutover rehearsal with real processes under load.

Generation N (supervisor: API + workers) serves and publishes; an expand migration is
applied; generation N+1 starts and passes its /health go/no-go; N drains and is stopped.
Zero lost events, zero cross-generation handling, and the API answers throughout.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Publisher
from spectral_core.generations import allocate_generation

from .procs import Proc, clean_env, scalar, wait_for

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(db_url: str, gen: int, port: int, log: Path) -> Proc:
    env = clean_env(
        SPECTRAL_DATABASE_URL=db_url,
        SPECTRAL_GENERATION=str(gen),
        SPECTRAL_API_PORT=str(port),
        SPECTRAL_VERSION=f"v{gen}",
    )
    return Proc([sys.executable, "-m", "spectral_cli.supervisor", "--grace", "10"], env, log)


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_cutover_rehearsal(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """The full deploy flow, under load, loses nothing and never crosses generations."""
    gen_n = generation
    port_n, port_n1 = free_port(), free_port()
    app_n = start_app(db_url, gen_n, port_n, tmp_path / "n.log")
    wait_for(lambda: health(port_n) == 200, 60, "generation N healthy")

    stop = threading.Event()
    published: dict[int, int] = {}
    live_port = {"port": port_n}
    api_failures: list[int] = []
    current = {"gen": gen_n}

    def publisher() -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                gen = current["gen"]
                with c.transaction():
                    Publisher(gen).publish(c, "platform.record", {"i": i}, idempotency_key=f"e{i}")
                published[gen] = published.get(gen, 0) + 1
                i += 1
                time.sleep(0.005)

    def prober() -> None:
        while not stop.is_set():
            code = health(live_port["port"])
            if code != 200:
                api_failures.append(code)
            time.sleep(0.1)

    threads = [threading.Thread(target=publisher), threading.Thread(target=prober)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        # expand migration: a nullable column the prior generation does not know about
        conn.execute("ALTER TABLE core.event_log ADD COLUMN IF NOT EXISTS note text")
        gen_n1 = allocate_generation(conn, "v-next")
        app_n1 = start_app(db_url, gen_n1, port_n1, tmp_path / "n1.log")
        wait_for(lambda: health(port_n1) == 200, 60, "generation N+1 go/no-go")
        live_port["port"] = port_n1  # the edge now routes to N+1
        time.sleep(0.5)
        current["gen"] = gen_n1  # publishers now run N+1 code
        time.sleep(1.0)
        drained = wait_for(
            lambda: (
                scalar(
                    db_url,
                    "SELECT count(*) FROM core.outbox WHERE generation = %s AND status IN "
                    "('pending', 'in_flight')",
                    (gen_n,),
                )
                == 0
            ),
            30,
            "generation N drained",
        )
        assert drained
        app_n.signal(signal.SIGTERM)
        assert app_n.wait(30) == 0, app_n.output()[-3000:]
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    wait_for(
        lambda: scalar(db_url, "SELECT count(*) FROM core.outbox WHERE status <> 'done'") == 0,
        30,
        "everything done",
    )
    app_n1.signal(signal.SIGTERM)
    assert app_n1.wait(30) == 0, app_n1.output()[-3000:]

    total = sum(published.values())
    assert published.get(gen_n, 0) > 50 and published.get(gen_n1, 0) > 50
    assert scalar(db_url, "SELECT count(*) FROM core.outbox") == total
    assert scalar(db_url, "SELECT count(DISTINCT idempotency_key) FROM core.event_log") == total
    assert scalar(db_url, "SELECT count(*) FROM core.event_log") == total
    assert scalar(db_url, "SELECT count(*) FROM core.event_log WHERE generation <> handled_by") == 0
    assert api_failures == []
