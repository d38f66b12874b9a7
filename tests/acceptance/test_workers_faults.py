"""spectral-workers as a real process: boot refusals, SIGTERM, SIGKILL, dropped
connections, a PostgreSQL restart and two generations side by side."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Publisher
from spectral_core.generations import allocate_generation
from spectral_core.outbox import EventIn

from .procs import scalar, start_workers, wait_for

pytestmark = pytest.mark.slow
SLOW = {"SPECTRAL_WORKER_HANDLERS": "tests.acceptance.slow_handlers:install"}


def publish(
    conn: psycopg.Connection[Any],
    gen: int,
    n: int,
    topic: str = "platform.record",
    payload: dict[str, Any] | None = None,
    prefix: str = "k",
) -> None:
    Publisher(gen).publish_many(
        conn,
        [
            EventIn(topic=topic, payload=payload or {}, idempotency_key=f"{prefix}{i}")
            for i in range(n)
        ],
    )


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as c:
        return dict(c.execute("SELECT status, count(*) FROM core.outbox GROUP BY 1").fetchall())


def exactly_once(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        total, distinct = c.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM core.event_log"
        ).fetchone()
    assert (total, distinct) == (n, n)


def test_refuses_to_start_without_or_with_unknown_generation(db_url: str, tmp_path: Path) -> None:
    """Missing or never-allocated SPECTRAL_GENERATION: exit code 3 and a clear message."""
    p = start_workers(db_url, None, tmp_path / "a.log")
    assert p.wait(30) == 3
    assert "SPECTRAL_GENERATION" in p.output()
    p = start_workers(db_url, 999, tmp_path / "b.log")
    assert p.wait(30) == 3
    assert "never allocated" in p.output()
    p = start_workers(db_url, 1, tmp_path / "c.log", SPECTRAL_BOGUS="1")
    assert p.wait(30) == 3
    assert "SPECTRAL_BOGUS" in p.output()


def test_fails_fast_when_database_unreachable(tmp_path: Path) -> None:
    """An unreachable database at boot: bounded wait, then a non-zero (non-3) exit."""
    started = time.monotonic()
    p = start_workers(
        "postgresql://postgres@127.0.0.1:1/none",
        1,
        tmp_path / "w.log",
        SPECTRAL_DATABASE_CONNECT_TIMEOUT_S="2",
    )
    assert p.wait(30) == 1
    assert time.monotonic() - started < 20


def test_sigterm_under_load_exits_zero_and_loses_nothing(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """SIGTERM mid-drain: exit 0 within the grace period, worker marked exited, no row left
    in flight; a second worker finishes the rest, each event handled exactly once."""
    publish(conn, generation, 400, topic="drill.slow", payload={"sleep_s": 0.02})
    w = start_workers(
        db_url,
        generation,
        tmp_path / "w1.log",
        SPECTRAL_SHUTDOWN_GRACE_S="5",
        SPECTRAL_OUTBOX_BATCH_SIZE="5",
        **SLOW,
    )
    wait_for(lambda: scalar(db_url, "SELECT count(*) FROM core.event_log") > 20, 30, "progress")
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert time.monotonic() - t0 < 7
    left = counts(db_url)
    assert left.get("in_flight", 0) == 0 and left.get("pending", 0) > 0
    assert scalar(db_url, "SELECT state FROM core.workers") == "exited"
    w2 = start_workers(db_url, generation, tmp_path / "w2.log", **SLOW)
    wait_for(lambda: counts(db_url) == {"done": 400}, 60, "drain")
    w2.signal(signal.SIGTERM)
    assert w2.wait(15) == 0
    exactly_once(db_url, 400)


def test_sigkill_holding_a_batch_is_recovered_exactly_once(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """SIGKILL while holding claimed rows: the reaper (in a surviving worker) re-pends them
    after the stale period, and every event takes effect exactly once."""
    publish(conn, generation, 60, topic="drill.slow", payload={"sleep_s": 0.2})
    victim = start_workers(
        db_url, generation, tmp_path / "victim.log", SPECTRAL_OUTBOX_BATCH_SIZE="10", **SLOW
    )
    wait_for(lambda: counts(db_url).get("in_flight", 0) > 0, 30, "a claimed batch")
    victim.kill()
    killed_at = time.monotonic()
    survivor = start_workers(
        db_url, generation, tmp_path / "survivor.log", SPECTRAL_OUTBOX_BATCH_SIZE="10", **SLOW
    )
    wait_for(
        lambda: (
            scalar(
                db_url, "SELECT count(*) FROM core.outbox WHERE last_error LIKE 'claim reaped%%'"
            )
            > 0
        ),
        30,
        "reaping",
    )
    recovery_s = time.monotonic() - killed_at
    wait_for(lambda: counts(db_url) == {"done": 60}, 60, "drain")
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(15) == 0
    exactly_once(db_url, 60)
    assert recovery_s < 15, f"recovery took {recovery_s:.1f}s"
    print(f"SIGKILL recovery: {recovery_s:.2f}s")


def test_terminated_connections_show_reconnecting_and_recover(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """pg_terminate_backend on the listener: another process sees `reconnecting` in
    core.workers within about one heartbeat; the worker returns to running; nothing lost."""
    w = start_workers(
        db_url,
        generation,
        tmp_path / "w.log",
        SPECTRAL_RECONNECT_BACKOFF_CAP_S="3",
        SPECTRAL_HEARTBEAT_INTERVAL_S="0.3",
    )
    wait_for(lambda: scalar(db_url, "SELECT state FROM core.workers") == "running", 30, "boot")
    wait_for(
        lambda: (
            scalar(
                db_url,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                "'LISTEN%%' AND datname = current_database()",
            )
            == 1
        ),
        30,
        "listen",
    )
    seen: list[str] = []
    for attempt in range(3):
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
        )
        state = wait_for(
            lambda: (
                scalar(db_url, "SELECT state FROM core.workers") == "reconnecting"
                and "reconnecting"
            ),
            0.3 + 0.2,
            "reconnecting state within one heartbeat",
            step=0.01,
        )
        seen.append(state)
        assert scalar(db_url, "SELECT reconnects FROM core.workers") == attempt + 1
        wait_for(
            lambda: scalar(db_url, "SELECT state FROM core.workers") == "running", 15, "recovery"
        )
        seen.append("running")
    publish(conn, generation, 50)
    # kill the pool connections too
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
        "pg_backend_pid() AND datname = current_database() AND application_name = ''"
    )
    wait_for(lambda: counts(db_url) == {"done": 50}, 30, "drain after reconnect")
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0
    exactly_once(db_url, 50)
    assert seen == ["reconnecting", "running"] * 3


def test_postgres_restart_under_load(
    pg_server: Any, db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """Restarting PostgreSQL mid-drain: the worker reconnects, no loss, no double effect."""
    if pg_server.embedded is None:
        pytest.skip("needs the embedded server (cannot restart an external one)")
    publish(conn, generation, 600, topic="drill.slow", payload={"sleep_s": 0.005})
    w = start_workers(
        db_url,
        generation,
        tmp_path / "w.log",
        SPECTRAL_RECONNECT_BACKOFF_CAP_S="1",
        SPECTRAL_WORKER_STALE_AFTER_S="6",
        **SLOW,
    )
    wait_for(lambda: scalar(db_url, "SELECT count(*) FROM core.event_log") > 50, 30, "progress")
    conn.close()
    pg_server.embedded.restart(wait_down_s=1.0)
    wait_for(lambda: counts(db_url) == {"done": 600}, 90, "drain after restart")
    after = scalar(db_url, "SELECT count(*) FROM core.event_log")
    w.signal(signal.SIGTERM)
    assert w.wait(15) == 0, w.output()[-2000:]
    assert after == 600
    exactly_once(db_url, 600)


def test_two_generations_side_by_side(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """N and N+1 both publishing and consuming: every handler run's generation equals its
    row's generation; N drains and stops; nothing is left behind."""
    g2 = allocate_generation(conn, "test-2")
    w1 = start_workers(db_url, generation, tmp_path / "g1.log")
    w2 = start_workers(db_url, g2, tmp_path / "g2.log")
    for i in range(10):
        publish(conn, generation, 30, prefix=f"a{i}-")
        publish(conn, g2, 30, prefix=f"b{i}-")
        time.sleep(0.05)
    assert scalar(db_url, "SELECT count(*) FROM core.event_log WHERE generation <> handled_by") == 0
    wait_for(
        lambda: (
            scalar(
                db_url,
                "SELECT count(*) FROM core.outbox WHERE generation = %s AND status <> 'done'",
                (generation,),
            )
            == 0
        ),
        30,
        "gen N drained",
    )
    w1.signal(signal.SIGTERM)
    assert w1.wait(15) == 0
    publish(conn, g2, 30, prefix="late-")
    wait_for(lambda: counts(db_url) == {"done": 630}, 30, "all done")
    w2.signal(signal.SIGTERM)
    assert w2.wait(15) == 0
    assert scalar(db_url, "SELECT count(*) FROM core.event_log WHERE generation <> handled_by") == 0
    exactly_once(db_url, 630)
