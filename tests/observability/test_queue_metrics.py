"""Queue truth from PostgreSQL (issue 17.1, ADR 0029): the statements behind /metrics'
queue gauges read partial indexes, never the whole outbox or turn table; their values;
and the cache that makes many scrapers cost one read."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.types.json import Jsonb

from spectral_core import Settings
from spectral_core.db import Database
from spectral_core.generations import allocate_generation
from spectral_core.metrics import QueueStats
from spectral_core.sql import query

pytestmark = pytest.mark.anyio


def _scans(plan: dict[str, Any]) -> set[tuple[str, str]]:
    """(relation, index name or "seq scan") of every scan in a plan."""
    found: set[tuple[str, str]] = set()
    if "Relation Name" in plan:
        found.add((plan["Relation Name"], plan.get("Index Name") or plan["Node Type"].lower()))
    for child in plan.get("Plans", []):
        found |= _scans(child)
    return found


def _fill(conn: psycopg.Connection[Any], generation: int, done: int) -> None:
    """A large finished history plus a little live work of each kind, then ANALYZE."""
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
        "finished_at) SELECT %s, 't.x', '{}', 'd' || i, 'done', now() "
        "FROM generate_series(1, %s) AS i",
        (generation, done),
    )
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, created_at)"
        " SELECT %s, 't.x', '{}', 'l' || i, (ARRAY['pending', 'in_flight', 'dead'])[i %% 3 + 1],"
        " now() - make_interval(secs => 100 - i) FROM generate_series(1, 30) AS i",
        (generation,),
    )
    conn.execute(
        "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, "
        "observation, status, created_at) SELECT 't' || i, %s, 'acme', 'alpha', 'k' || i, '{}', "
        "CASE WHEN i <= %s THEN 'done' ELSE (ARRAY['pending', 'running', 'dead'])[i %% 3 + 1] "
        "END, now() - make_interval(secs => 50) FROM generate_series(1, %s + 9) AS i",
        (generation, done, done),
    )
    conn.execute("ANALYZE core.outbox")
    conn.execute("ANALYZE agent.turns")


def test_the_queue_statements_read_partial_indexes_not_the_tables(
    conn: psycopg.Connection[Any], generation: int
) -> None:
    """With 20,000 finished rows and turns beside a little live work, every count of
    /metrics is planned on the partial index that holds only its rows (pending, in flight,
    dead: migrations 0001, 0005, 0010, 0011, 0014): no sequential scan of core.outbox or
    agent.turns, so a scrape costs in proportion to the live work."""
    _fill(conn, generation, 20_000)
    outbox = _scans(
        conn.execute("EXPLAIN (FORMAT JSON) " + query("metrics_outbox")).fetchone()[0][0]["Plan"]
    )
    turns = _scans(
        conn.execute("EXPLAIN (FORMAT JSON) " + query("metrics_turns")).fetchone()[0][0]["Plan"]
    )
    assert ("outbox", "seq scan") not in outbox
    assert ("turns", "seq scan") not in turns
    assert {i for r, i in outbox if r == "outbox"} >= {"outbox_in_flight_v2", "outbox_dead_v1"}
    assert {i for r, i in outbox if r == "outbox"} & {"outbox_pending_v1", "outbox_pending_id_v1"}
    assert {i for r, i in turns} == {"turns_pending_v1", "turns_running_v1", "turns_dead_v1"}
    # control: a plain count of done rows is a scan of the table (why it is not a gauge)
    control = _scans(
        conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT generation, count(*) FROM core.outbox "
            "WHERE status = 'done' GROUP BY generation"
        ).fetchone()[0][0]["Plan"]
    )
    assert ("outbox", "seq scan") in control


async def test_queue_stats_counts_ages_workers_and_stranded_generations(
    settings: Settings, db: Database, conn: psycopg.Connection[Any], generation: int
) -> None:
    """The snapshot has per generation the pending / in-flight / dead rows, the age of the
    oldest pending row, turns by status, workers by state (lost past the stale bound)
    with their snapshots, the planner's estimates; a generation with live work and no
    live worker is stranded, one with a live worker is not."""
    _fill(conn, generation, 100)
    other = allocate_generation(conn, "test-2")
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key) "
        "VALUES (%s, 't.x', '{}', 'o1')",
        (other,),
    )
    live, stale = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO core.workers (id, generation, state, host, pid, version, last_seen, metrics)"
        " VALUES (%s, %s, 'running', 'h', 1, 'v', now(), %s),"
        " (%s, %s, 'running', 'h', 2, 'v', now() - interval '1 minute', NULL),"
        " (%s, %s, 'exited', 'h', 3, 'v', now(), NULL)",
        (live, other, Jsonb({"v": 1}), stale, generation, uuid.uuid4(), generation),
    )
    stats = QueueStats(db, cache_s=60, stale_after_s=settings.worker_stale_after_s)
    snap = await stats.refresh()
    assert snap is not None
    assert {k: v for k, v in snap.outbox.items() if k[0] == generation} == {
        (generation, "pending"): 10,
        (generation, "in_flight"): 10,
        (generation, "dead"): 10,
    }
    assert snap.outbox[(other, "pending")] == 1
    # the oldest pending row was created 100 - 3 = 97 s ago (i = 3 is the first pending)
    assert 96 <= snap.outbox_oldest_pending_s[generation] <= 120
    assert snap.turns == {
        (generation, "pending"): 3,
        (generation, "running"): 3,
        (generation, "dead"): 3,
    }
    assert 49 <= snap.turns_oldest_pending_s[generation] <= 80
    states = {w.id: (w.generation, w.state, w.metrics) for w in snap.workers}
    assert states == {
        str(live): (other, "running", {"v": 1}),
        str(stale): (generation, "lost", None),
    }
    assert snap.stranded(generation) and not snap.stranded(other)
    assert snap.estimates["outbox"] >= 100


async def test_many_concurrent_scrapes_within_the_cache_interval_cost_one_read(
    db: Database,
) -> None:
    """Fifty scrapes at once, then more within the interval, run the statements once; the
    next read happens only after ``cache_s``."""
    stats = QueueStats(db, cache_s=0.5, stale_after_s=10)
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(stats.refresh)
    assert stats.reads == 1
    await stats.refresh()
    assert stats.reads == 1
    await anyio.sleep(0.6)
    await stats.refresh()
    assert stats.reads == 2
