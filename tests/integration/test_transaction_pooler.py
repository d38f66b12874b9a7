"""Everything works through a transaction pooler (PgBouncer, pool_mode=transaction), with
the configuration of a direct connection and no setting that says so (ADR 0041):
migrations, generation allocation, publish, claim/handle via the consumer, the reaper and
the heartbeat.  LISTEN goes over the session URL (direct) when one is set, as SPEC §2
prescribes; without one the consumer sees the pooler and polls."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from structlog.testing import capture_logs

from spectral_core import (
    Consumer,
    ConsumerConfig,
    Event,
    HandlerRegistry,
    Heartbeat,
    Publisher,
    Reaper,
    Settings,
    WorkerInfo,
    open_pools,
)
from spectral_core.db import connect_kwargs
from spectral_core.generations import allocate_generation
from spectral_core.migrate import run_migrations
from tests.acceptance.procs import scalar, start_workers, wait_for
from tests.tools import require_tool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pgbouncer() -> str:
    """The pgbouncer binary (Debian installs it outside a user's PATH); missing: skip
    locally, fail under CI=true."""
    return require_tool("pgbouncer", "/usr/sbin/pgbouncer")


DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "poolers.md"


def documented_settings() -> dict[str, str]:
    """The ``[pgbouncer]`` settings of the configuration in docs/howto/poolers.md."""
    block = DOC.read_text().split("```ini", 1)[1].split("```", 1)[0]
    section = block.split("[pgbouncer]", 1)[1]
    pairs = (line.split("=", 1) for line in section.strip().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@contextmanager
def run_pgbouncer(binary: str, db_url: str, **settings: str) -> Iterator[str]:
    """A PgBouncer in front of the server of ``db_url`` (``settings`` override the
    documented ones); yields the URL through it."""
    params = conninfo_to_dict(db_url)
    root = Path(tempfile.mkdtemp(prefix="spectral-pgbouncer-"))
    os.chmod(root, 0o777)
    port = _free_port()
    conf = {
        **documented_settings(),
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "auth_type": "trust",
        "auth_file": f"{root}/users.txt",
        "logfile": f"{root}/pgbouncer.log",
        "pidfile": f"{root}/pgbouncer.pid",
        **settings,
    }
    (root / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={params['host']} port={params['port']}\n[pgbouncer]\n"
        + "".join(f"{k} = {v}\n" for k, v in conf.items())
    )
    (root / "users.txt").write_text('"postgres" ""\n')
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        kwargs["user"] = "nobody"
    proc = subprocess.Popen([binary, str(root / "pgbouncer.ini")], **kwargs)
    url = make_conninfo(db_url, port=str(port))
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                psycopg.connect(url, autocommit=True, prepare_threshold=None).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pooler_url(pgbouncer: str, empty_db_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode (the documented configuration) in front of a
    fresh, empty database."""
    with run_pgbouncer(pgbouncer, empty_db_url) as url:
        yield url


@pytest.mark.anyio
async def test_outbox_round_trip_through_transaction_pooler(
    pooler_url: str, empty_db_url: str
) -> None:
    """No statement relies on session state or server-side prepared statements, with no
    pooler setting: the full publish -> consume -> done cycle, migrations, heartbeat and
    reaper all run through PgBouncer in transaction mode."""
    with psycopg.connect(pooler_url, autocommit=True, prepare_threshold=None) as conn:
        run_migrations(conn)
        gen = allocate_generation(conn, "pooled")
        with conn.transaction():
            ids = Publisher(gen).publish_many(conn, [])  # empty batch is a no-op
            for i in range(120):
                Publisher(gen).publish(conn, "t.x", {"i": i}, idempotency_key=f"k{i}")
    assert ids == []
    settings = Settings(
        database_url=pooler_url,
        database_session_url=empty_db_url,
        generation=gen,
        database_pool_max=6,
    )
    seen: list[str] = []
    reg = HandlerRegistry()

    async def fn(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
        await c.execute("SELECT %s::text", (ev.idempotency_key,))
        seen.append(ev.idempotency_key)

    reg.register("workers.pooled.seen", "t.x", fn)
    async with open_pools(settings) as db:
        info = WorkerInfo(uuid.uuid4(), gen, "h", 1, "v")
        beat = Heartbeat(db, info, interval_s=0.2)
        await beat.register()
        consumer = Consumer(
            db,
            generation=gen,
            worker_id=info.id,
            registry=reg,
            config=ConsumerConfig(batch_size=7, lanes=3, poll_interval_s=0.2),
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer.run)
                tg.start_soon(beat.run)
                with anyio.fail_after(30):
                    while len(seen) < 120:
                        await anyio.sleep(0.05)
                async with db.pool.connection() as c:
                    assert await Reaper(gen, stale_after_s=30, max_attempts=5).reap(c) == {
                        "pending": 0,
                        "dead": 0,
                    }
                consumer.stop()
                tg.cancel_scope.cancel()
        await beat.mark_exited()
    assert [e for e in logs if e["event"] == "consumer.db_error"] == []
    assert sorted(seen) == sorted(f"k{i}" for i in range(120))
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        assert c.execute("SELECT status, count(*) FROM core.outbox GROUP BY 1").fetchall() == [
            ("done", 120)
        ]


def _publish(url: str, gen: int, n: int, prefix: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for i in range(n):
            Publisher(gen).publish(conn, "platform.record", {}, idempotency_key=f"{prefix}{i}")


def _outcome(url: str, gen: int, prefix: str) -> dict[str, Any]:
    """Rows by (status, attempts) and ledger/log counts of the events named ``prefix*``."""
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            "SELECT status, attempts, count(*) FROM core.outbox "
            "WHERE generation = %s AND idempotency_key LIKE %s GROUP BY 1, 2 ORDER BY 1, 2",
            (gen, prefix + "%"),
        ).fetchall()
        logged = c.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM core.event_log "
            "WHERE idempotency_key LIKE %s",
            (prefix + "%",),
        ).fetchone()
        sessions = c.execute(
            "SELECT count(*) FROM core.worker_sessions AS s JOIN core.workers AS w "
            "ON w.id = s.worker_id WHERE w.generation = %s",
            (gen,),
        ).fetchone()
    assert logged is not None and sessions is not None
    return {"rows": rows, "logged": tuple(logged), "sessions": sessions[0]}


@pytest.mark.slow
def test_worker_and_publisher_through_pgbouncer_with_no_setting(
    pgbouncer: str, db_url: str, generation: int, tmp_path: Path
) -> None:
    """Issue 20 / ADR 0041: a publisher and a worker process (4 lanes, heartbeat, reaper)
    both through PgBouncer 1.18 in transaction mode on 3 server connections, configured as
    on a direct connection: no SPECTRAL_DATABASE_TRANSACTION_POOLER, no session URL.  Every
    event is handled exactly once on its first attempt (0 retries, 0 lost, 0 duplicates),
    no handler fails, no server session is recorded for the reaper (the backends are
    shared), and the consumer polls instead of listening through the pooler.  (With
    psycopg's prepared statements, the configuration of a direct connection before ADR
    0038, this run had handler failures and retries.)"""
    with run_pgbouncer(pgbouncer, db_url, default_pool_size="3") as url:
        w = start_workers(
            url,
            generation,
            tmp_path / "w.log",
            # the checkpointer's search_path goes in the `options` startup parameter, which
            # PgBouncer refuses (test_pooler_refusing_options_names_the_fix)
            SPECTRAL_AGENT_DATABASE_URL=db_url,
        )
        try:
            with psycopg.connect(url, **connect_kwargs()) as conn:
                for batch in range(30):  # while the worker consumes, 10 per transaction
                    with conn.transaction():
                        for i in range(10):
                            Publisher(generation).publish(
                                conn, "platform.record", {"i": i}, idempotency_key=f"n{batch}-{i}"
                            )
                    time.sleep(0.02)
            wait_for(
                lambda: _outcome(db_url, generation, "n")["logged"][0] >= 300,
                60,
                "300 events handled through the pooler",
            )
            time.sleep(1)  # a late duplicate or retry would show now
            running = _outcome(db_url, generation, "n")  # sessions: while the worker runs
            w.signal(15)
            assert w.wait(30) == 0, w.output()[-3000:]
        finally:
            w.kill()
    out = w.output()
    assert running == {"rows": [("done", 1, 300)], "logged": (300, 300), "sessions": 0}, out[-3000:]
    assert _outcome(db_url, generation, "n")["logged"] == (300, 300)
    for bad in ("consumer.db_error", "outbox.handler_failed", "outbox.failed", '"_pg3_'):
        assert bad not in out, out[-3000:]
    assert "consumer.polling_only" in out
    assert "worker.sessions_not_recorded" in out


@pytest.mark.slow
def test_pooler_refusing_options_names_the_fix(
    pgbouncer: str, db_url: str, generation: int, tmp_path: Path
) -> None:
    """A pooler that refuses the `options` startup parameter (PgBouncer without it in
    ignore_startup_parameters) stops the worker at boot with a message that says what
    was refused and which setting fixes it, not just "unreachable"."""
    with run_pgbouncer(pgbouncer, db_url) as url:
        w = start_workers(
            url,
            generation,
            tmp_path / "w.log",
            SPECTRAL_DATABASE_SESSION_URL=db_url,
        )
        assert w.wait(60) == 1
    out = w.output()
    assert "checkpointer database unreachable at boot" in out
    assert "unsupported startup parameter: options" in out
    assert "SPECTRAL_AGENT_DATABASE_URL" in out


@pytest.mark.slow
def test_documented_config_recovers_from_a_postgres_restart(
    pgbouncer: str, pg_server: Any, db_url: str, generation: int, tmp_path: Path
) -> None:
    """The PgBouncer configuration of docs/howto/poolers.md: a worker through it handles
    events, and after PostgreSQL restarts behind the pooler it handles again within a few
    seconds (server_login_retry = 1 s; PgBouncer's 15 s default alone took 15 s)."""
    if pg_server.embedded is None:
        pytest.skip("needs the embedded server (cannot restart an external one)")
    assert documented_settings()["server_login_retry"] == "1"
    with run_pgbouncer(pgbouncer, db_url) as url:
        w = start_workers(
            url,
            generation,
            tmp_path / "w.log",
            SPECTRAL_DATABASE_SESSION_URL=db_url,
            SPECTRAL_AGENT_DATABASE_URL=db_url,
            SPECTRAL_RECONNECT_BACKOFF_CAP_S="1",
        )
        try:
            _publish(db_url, generation, 20, "a")
            wait_for(lambda: _handled(db_url, "a") == 20, 60, "handling through the pooler")
            pg_server.embedded.restart(wait_down_s=1.0)
            back = time.monotonic()
            _publish(db_url, generation, 5, "b")
            wait_for(lambda: _handled(db_url, "b") == 5, 60, "handling after the restart")
            recovery_s = time.monotonic() - back
            print(f"recovery behind PgBouncer: {recovery_s:.2f}s")
            assert recovery_s < 6, w.output()[-3000:]
            assert w.p.poll() is None
            w.signal(15)
            assert w.wait(30) == 0
        finally:
            w.kill()


def _handled(url: str, prefix: str) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM core.event_log WHERE idempotency_key LIKE %s",
            (prefix + "%",),
        )
    )


@pytest.mark.anyio
async def test_lanes_sharing_two_server_connections_claim_and_settle_cleanly(
    pgbouncer: str, empty_db_url: str
) -> None:
    """Issue 20.1 (ADR 0034): the one claim path holds no session state, so four lanes whose
    transactions PgBouncer runs on only two server connections claim and settle every row
    once, with no handler failure, retry or database error, and with no pooler setting
    (ADR 0041: no connection prepares statements)."""
    with run_pgbouncer(pgbouncer, empty_db_url, default_pool_size="2") as url:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            run_migrations(conn)
            gen = allocate_generation(conn, "shared")
            for i in range(200):
                Publisher(gen).publish(conn, "t.x", {"i": i}, idempotency_key=f"k{i}")
        settings = Settings(
            database_url=url,
            database_session_url=empty_db_url,
            generation=gen,
            database_pool_max=6,
        )
        seen: list[str] = []
        reg = HandlerRegistry()

        async def fn(ev: Event, c: psycopg.AsyncConnection[Any]) -> None:
            await c.execute("SELECT %s::text", (ev.idempotency_key,))
            seen.append(ev.idempotency_key)

        reg.register("workers.shared.seen", "t.x", fn)
        async with open_pools(settings) as db:
            consumer = Consumer(
                db,
                generation=gen,
                worker_id=uuid.uuid4(),
                registry=reg,
                config=ConsumerConfig(batch_size=7, lanes=4, poll_interval_s=0.2),
            )
            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(consumer.run)
                    with anyio.fail_after(30):
                        while len(seen) < 200:
                            await anyio.sleep(0.05)
                    consumer.stop()
    assert [e["event"] for e in logs if e.get("log_level") in ("warning", "error")] == []
    assert sorted(seen) == sorted(f"k{i}" for i in range(200))
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        assert c.execute(
            "SELECT status, attempts, count(*) FROM core.outbox GROUP BY 1, 2"
        ).fetchall() == [("done", 1, 200)]


@pytest.mark.anyio
async def test_deprecated_pooler_setting_is_accepted_and_warned(settings: Settings) -> None:
    """ADR 0041: SPECTRAL_DATABASE_TRANSACTION_POOLER is still accepted, so a deployment
    that sets it starts, and the start-up warns that it is ignored (and names it)."""
    from spectral_core.boot import booted

    s = Settings.from_env(
        {"SPECTRAL_DATABASE_TRANSACTION_POOLER": "true"},
        database_url=settings.database_url,
        generation=settings.generation,
    )
    with capture_logs() as logs:
        async with booted(s, process="workers"):
            pass
    warned = [e for e in logs if e["event"] == "settings.deprecated"]
    assert [e["setting"] for e in warned] == ["SPECTRAL_DATABASE_TRANSACTION_POOLER"]
    assert warned[0]["log_level"] == "warning"
