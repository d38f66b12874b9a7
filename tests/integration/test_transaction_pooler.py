"""Everything works through a transaction pooler (PgBouncer, pool_mode=transaction):
migrations, generation allocation, publish, claim/handle via the consumer, the reaper and
the heartbeat.  LISTEN goes over the session URL (direct), as SPEC §2 prescribes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
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
from spectral_core.generations import allocate_generation
from spectral_core.migrate import run_migrations
from spectral_core.outbox import Claimer
from tests.tools import require_tool


class _CountingClaimer(Claimer):
    """Counts one-message cycles (which need server-side prepared statements)."""

    fused_cycles = 0

    async def claim_started(self, *args: Any, **kwargs: Any) -> Any:
        self.fused_cycles += 1
        return await super().claim_started(*args, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pgbouncer() -> str:
    """The pgbouncer binary (Debian installs it outside a user's PATH); missing: skip
    locally, fail under CI=true."""
    return require_tool("pgbouncer", "/usr/sbin/pgbouncer")


@pytest.fixture
def pooler_url(pgbouncer: str, empty_db_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of a fresh, empty database."""
    params = conninfo_to_dict(empty_db_url)
    root = Path(tempfile.mkdtemp(prefix="spectral-pgbouncer-"))
    os.chmod(root, 0o777)
    port = _free_port()
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={params['host']} port={params['port']}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        "auth_type = trust\n"
        f"auth_file = {root}/users.txt\n"
        "pool_mode = transaction\n"
        "max_client_conn = 200\ndefault_pool_size = 5\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {root}/pgbouncer.log\npidfile = {root}/pgbouncer.pid\n"
    )
    (root / "users.txt").write_text('"postgres" ""\n')
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        kwargs["user"] = "nobody"
    proc = subprocess.Popen([pgbouncer, str(root / "pgbouncer.ini")], **kwargs)
    url = make_conninfo(empty_db_url, port=str(port))
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(url, autocommit=True, prepare_threshold=None).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.anyio
async def test_outbox_round_trip_through_transaction_pooler(
    pooler_url: str, empty_db_url: str
) -> None:
    """With SPECTRAL_DATABASE_TRANSACTION_POOLER, no statement relies on session state or
    server-side prepared statements: the full publish -> consume -> done cycle, migrations,
    heartbeat and reaper all run through PgBouncer in transaction mode."""
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
        database_transaction_pooler=True,
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
        consumer.claimer = consumer.processor.claimer = _CountingClaimer(gen, info.id)
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
    # behind the pooler the consumer keeps to the general path (no server-side prepared
    # statements there), even with a ConsumerConfig built by hand
    assert consumer.claimer.fused_cycles == 0
    assert [e for e in logs if e["event"] == "consumer.db_error"] == []
    assert sorted(seen) == sorted(f"k{i}" for i in range(120))
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        assert c.execute("SELECT status, count(*) FROM core.outbox GROUP BY 1").fetchall() == [
            ("done", 120)
        ]
