"""The API registry (``core.api_processes``, ADR 0032) on the real database."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import psycopg
import pytest

from spectral_core.db import Database
from spectral_core.liveness import ApiRegistry, FleetView, WorkerInfo

pytestmark = pytest.mark.anyio


def registry(db: Database, generation: int, views: list[FleetView]) -> ApiRegistry:
    return ApiRegistry(
        db,
        WorkerInfo(uuid.uuid4(), generation, "h", 1, "v"),
        interval_s=0.1,
        stale_after_s=3.0,
        retention_s=60.0,
        on_view=views.append,
    )


def add_peer(
    conn: psycopg.Connection[Any], generation: int, *, age_s: float = 0.0, state: str = "running"
) -> None:
    conn.execute(
        "INSERT INTO core.api_processes (id, generation, state, host, pid, version, last_seen) "
        "VALUES (%s, %s, %s, 'peer', 2, 'v', now() - make_interval(secs => %s))",
        (uuid.uuid4(), generation, state, age_s),
    )


async def test_view_counts_fresh_peers_of_every_generation_and_prunes_old_rows(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """The view counts this process and every fresh peer of any generation (a cutover
    serves both), not a stale or exited one; ranks are distinct; registration prunes rows
    older than the retention."""
    other = conn.execute(
        "INSERT INTO core.deployments (version) VALUES ('next') RETURNING generation"
    ).fetchone()
    assert other is not None
    add_peer(conn, generation)
    add_peer(conn, other[0])
    add_peer(conn, generation, age_s=10)  # stale: not counted
    add_peer(conn, generation, age_s=3600)  # beyond the retention: pruned
    add_peer(conn, generation, state="exited")  # not counted
    views: list[FleetView] = []
    a, b = registry(db, generation, views), registry(db, generation, views)
    await a.register()
    await b.register()
    await a.beat()
    assert a.view.live == b.view.live == 4
    assert {a.view.rank, b.view.rank} <= set(range(4)) and a.view.rank != b.view.rank
    row = conn.execute("SELECT count(*) FROM core.api_processes").fetchone()
    assert row == (6,)  # the hour-old row is gone; the exited one stays within retention
    await a.mark_exited()
    await b.beat()
    assert b.view.live == 3
    await b.mark_exited()


async def test_database_errors_keep_the_last_view_and_never_stop_the_registry(
    db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """A heartbeat that fails with a database error that is not a lost connection (here
    the table is missing) is logged and retried; the last view is kept meanwhile (the
    process goes on enforcing its last share) and the next good beat updates it."""
    add_peer(conn, generation)
    views: list[FleetView] = []
    reg = registry(db, generation, views)
    await reg.register()
    assert reg.view == FleetView(live=2, rank=reg.view.rank)
    conn.execute("ALTER TABLE core.api_processes RENAME TO api_processes_away")
    async with anyio.create_task_group() as tg:
        tg.start_soon(reg.run)
        await anyio.sleep(0.6)  # several failed beats
        assert reg.view.live == 2
        conn.execute("ALTER TABLE core.api_processes_away RENAME TO api_processes")
        conn.execute(
            "UPDATE core.api_processes SET last_seen = now() - interval '1 minute' "
            "WHERE host = 'peer'"
        )
        deadline = time.monotonic() + 10
        while reg.view.live != 1:
            assert time.monotonic() < deadline, "the registry did not recover"
            await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    await reg.mark_exited()
