"""Automatic retention (issue 17.3, ADR 0030): the pruner on the real database."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest

from spectral_core.errors import ConfigError
from spectral_core.generations import allocate_generation
from spectral_core.retention import Pruner, RetentionConfig
from spectral_core.settings import Settings

pytestmark = pytest.mark.anyio

DAY = 86400.0


def _config(batch: int = 3) -> RetentionConfig:
    # a small batch so that every table is walked over several windows
    return RetentionConfig(outbox_s=DAY, ledger_s=2 * DAY, turns_s=DAY, batch=batch)


def _row(
    conn: psycopg.Connection[Any], generation: int, status: str, age_s: float, key: str
) -> int:
    """An outbox row created and (unless live) finished ``age_s`` seconds ago."""
    finished = status in ("done", "dead")
    row = conn.execute(
        """
        INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status,
                                 created_at, finished_at)
        VALUES (%s, 't', '{}', %s, %s, now() - make_interval(secs => %s),
                CASE WHEN %s THEN now() - make_interval(secs => %s) END)
        RETURNING id
        """,
        (generation, key, status, age_s, finished, age_s),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _ledger(
    conn: psycopg.Connection[Any], generation: int, key: str, outbox_id: int | None, age_s: float
) -> None:
    conn.execute(
        """
        INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, generation,
                                        handled_at)
        VALUES ('h', %s, %s, %s, now() - make_interval(secs => %s))
        """,
        (key, outbox_id, generation, age_s),
    )


def _statuses(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(conn.execute("SELECT idempotency_key, status FROM core.outbox").fetchall())


async def _prune(db_url: str, config: RetentionConfig) -> Any:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        return await Pruner(config).prune(aconn, pause=False)


async def test_prunes_only_old_done_rows(conn: psycopg.Connection[Any], db_url: str) -> None:
    """Only ``done`` rows finished before the cutoff go; pending, in-flight and dead rows
    stay whatever their age, and so do recent done rows (across several batch windows)."""
    g = allocate_generation(conn, "v1")
    for i in range(5):
        _row(conn, g, "done", 3 * DAY, f"old-done-{i}")
    for status in ("pending", "in_flight", "dead"):
        for i in range(3):
            _row(conn, g, status, 3 * DAY, f"old-{status}-{i}")
    for i in range(4):
        _row(conn, g, "done", 60, f"new-done-{i}")
    result = await _prune(db_url, _config())
    left = _statuses(conn)
    assert result.outbox == 5
    assert not [k for k in left if k.startswith("old-done")]
    assert sorted(left) == sorted(
        [f"old-{s}-{i}" for s in ("pending", "in_flight", "dead") for i in range(3)]
        + [f"new-done-{i}" for i in range(4)]
    )
    assert result.batches > 3  # the walk took several bounded windows


async def test_never_deletes_a_non_done_row(conn: psycopg.Connection[Any], db_url: str) -> None:
    """However old, a row that is not ``done`` survives any number of passes, also in a
    drained generation with every kind of finished row around it."""
    old = allocate_generation(conn, "v1")
    allocate_generation(conn, "v2")
    keep = {}
    for i in range(30):
        status = ("pending", "in_flight", "dead", "done")[i % 4]
        gen = old if status in ("dead", "done") else old + 1
        _row(conn, gen, status, 30 * DAY, f"r{i}")
        if status != "done":
            keep[f"r{i}"] = status
    for _ in range(3):
        await _prune(db_url, _config(batch=4))
    assert _statuses(conn) == keep


async def test_ledger_respects_its_window(conn: psycopg.Connection[Any], db_url: str) -> None:
    """Ledger rows go once older than the ledger retention, not before; a ledger row whose
    outbox row can still be delivered (pending or dead) stays whatever its age."""
    g = allocate_generation(conn, "v1")
    _ledger(conn, g, "old", None, 2 * DAY + 60)
    _ledger(conn, g, "inside", None, 2 * DAY - 60)
    _ledger(conn, g, "old-done", _row(conn, g, "done", 60, "k1"), 3 * DAY)
    _ledger(conn, g, "old-pending", _row(conn, g, "pending", 3 * DAY, "k2"), 3 * DAY)
    _ledger(conn, g, "old-dead", _row(conn, g, "dead", 3 * DAY, "k3"), 3 * DAY)
    result = await _prune(db_url, _config(batch=2))
    left = sorted(r[0] for r in conn.execute("SELECT idempotency_key FROM core.event_handled"))
    assert left == ["inside", "old-dead", "old-pending"]
    assert result.ledger == 2


async def test_an_undrained_older_generation_keeps_its_rows(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """An older generation with live work (draining during a cutover) keeps its done rows
    and ledger rows until it is drained; the newest generation is pruned meanwhile."""
    g1 = allocate_generation(conn, "v1")
    g2 = allocate_generation(conn, "v2")
    _row(conn, g1, "done", 3 * DAY, "g1-done")
    _ledger(conn, g1, "g1-ledger", None, 3 * DAY)
    live = _row(conn, g1, "in_flight", 60, "g1-live")
    _row(conn, g2, "done", 3 * DAY, "g2-done")
    _row(conn, g2, "pending", 60, "g2-pending")
    result = await _prune(db_url, _config())
    assert result.generations == [g2]
    assert sorted(_statuses(conn)) == ["g1-done", "g1-live", "g2-pending"]
    assert conn.execute("SELECT count(*) FROM core.event_handled").fetchone() == (1,)
    conn.execute(
        "UPDATE core.outbox SET status = 'done', finished_at = now() WHERE id = %s", (live,)
    )
    result = await _prune(db_url, _config())
    assert result.generations == [g1, g2]
    assert sorted(_statuses(conn)) == ["g1-live", "g2-pending"]
    assert conn.execute("SELECT count(*) FROM core.event_handled").fetchone() == (0,)


def _turn(conn: psycopg.Connection[Any], g: int, thread: str, status: str, age_s: float) -> None:
    conn.execute(
        """
        INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key,
                                 observation, status, finished_at)
        VALUES (%s, %s, 'o', 'd', %s, '{}', %s,
                CASE WHEN %s IN ('done', 'dead') THEN now() - make_interval(secs => %s) END)
        """,
        (thread, g, thread, status, status, age_s),
    )
    conn.execute(
        "INSERT INTO agent.checkpoints (thread_id, checkpoint_id, checkpoint) "
        "VALUES (%s, '1', '{}')",
        (thread,),
    )
    conn.execute(
        "INSERT INTO agent.checkpoint_blobs (thread_id, channel, version, type) "
        "VALUES (%s, 'c', '1', 'empty')",
        (thread,),
    )
    conn.execute(
        "INSERT INTO agent.checkpoint_writes "
        "(thread_id, checkpoint_id, task_id, idx, channel, blob) VALUES (%s, '1', 't', 0, 'c', '')",
        (thread,),
    )


async def test_done_turns_go_with_their_checkpoints(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """Old done turns are deleted with their checkpoints, blobs and writes; dead, pending
    and running turns (and recent done ones) keep their rows and checkpoints."""
    g = allocate_generation(conn, "v1")
    for i in range(4):
        _turn(conn, g, f"o:d:old-done-{i}", "done", 3 * DAY)
    _turn(conn, g, "o:d:new-done", "done", 60)
    _turn(conn, g, "o:d:dead", "dead", 3 * DAY)
    _turn(conn, g, "o:d:pending", "pending", 3 * DAY)
    _turn(conn, g, "o:d:running", "running", 3 * DAY)
    result = await _prune(db_url, _config())
    kept = ["o:d:dead", "o:d:new-done", "o:d:pending", "o:d:running"]
    assert result.turns == 4
    for table in ("turns", "checkpoints", "checkpoint_blobs", "checkpoint_writes"):
        rows = conn.execute(f"SELECT thread_id FROM agent.{table} ORDER BY 1").fetchall()
        assert [r[0] for r in rows] == kept, table


async def test_one_pruner_at_a_time_and_never_waiting(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    """While another pruner holds the lock, a pass deletes nothing and returns at once."""
    g = allocate_generation(conn, "v1")
    _row(conn, g, "done", 3 * DAY, "old")
    with psycopg.connect(db_url) as other:  # a transaction holding the pruner's lock
        other.execute("SELECT pg_advisory_xact_lock(7262551240391537017)")
        with anyio.fail_after(5):
            result = await _prune(db_url, _config())
        assert result.contended and result.deleted == 0
        assert _statuses(conn) == {"old": "done"}
    result = await _prune(db_url, _config())
    assert result.outbox == 1 and not result.contended


async def test_the_pace_is_honoured(conn: psycopg.Connection[Any], db_url: str) -> None:
    """A pass examines at most ``rows_per_s`` rows per second over every table: 300 old
    done outbox rows and 300 old ledger rows at 200 rows/s take at least 3 s to prune
    (generous upper bound: it does finish), and the pending, in-flight and dead rows
    examined on the way stay."""
    g = allocate_generation(conn, "v1")
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
        "created_at, finished_at) SELECT %s, 't', '{}', 'o' || i, 'done', "
        "now() - interval '3 days', now() - interval '3 days' FROM generate_series(1, 300) i",
        (g,),
    )
    for status in ("pending", "in_flight", "dead"):
        _row(conn, g, status, 3 * DAY, f"old-{status}")
    conn.execute(
        "INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, "
        "generation, handled_at) SELECT 'h', 'l' || i, NULL, %s, now() - interval '3 days' "
        "FROM generate_series(1, 300) i",
        (g,),
    )
    config = RetentionConfig(outbox_s=DAY, ledger_s=2 * DAY, turns_s=DAY, batch=50, rows_per_s=200)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        t0 = anyio.current_time()
        result = await Pruner(config).prune(aconn)
        took = anyio.current_time() - t0
    assert (result.outbox, result.ledger) == (300, 300)
    assert took >= 0.95 * 603 / 200, took  # 303 outbox + 300 ledger rows examined at 200/s
    assert took < 60, took
    assert sorted(_statuses(conn)) == ["old-dead", "old-in_flight", "old-pending"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SPECTRAL_RETENTION_ROWS_PER_S": "0"}, "SPECTRAL_RETENTION_ROWS_PER_S"),
        ({"SPECTRAL_RETENTION_ROWS_PER_S": "fast"}, "SPECTRAL_RETENTION_ROWS_PER_S"),
        ({"SPECTRAL_RETENTION_ROWS_PER_S": "2000000"}, "SPECTRAL_RETENTION_ROWS_PER_S"),
        (
            {"SPECTRAL_RETENTION_ROWS_PER_S": "100", "SPECTRAL_RETENTION_BATCH_SIZE": "500"},
            "SPECTRAL_RETENTION_BATCH_SIZE must not exceed SPECTRAL_RETENTION_ROWS_PER_S",
        ),
    ],
)
def test_a_bad_pace_is_refused(env: dict[str, str], message: str) -> None:
    """A pace that is not a positive number within bounds, or a batch larger than one
    second of the pace (a burst), is refused with an error naming the variable."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
    ok = Settings.from_env(
        {"SPECTRAL_RETENTION_ROWS_PER_S": "500", "SPECTRAL_RETENTION_BATCH_SIZE": "500"}
    )
    assert (ok.retention_rows_per_s, ok.retention_batch_size) == (500, 500)


def test_ledger_retention_must_cover_the_dedup_window() -> None:
    """A ledger retention shorter than the deduplication window is refused (it would let a
    repeated publish run its handlers again inside the window)."""
    with pytest.raises(ConfigError, match="SPECTRAL_LEDGER_RETENTION_S"):
        Settings.from_env({"SPECTRAL_DEDUP_WINDOW_S": "100", "SPECTRAL_LEDGER_RETENTION_S": "99"})
    ok = Settings.from_env({"SPECTRAL_DEDUP_WINDOW_S": "100", "SPECTRAL_LEDGER_RETENTION_S": "100"})
    assert ok.ledger_retention_s == 100


def test_batches_walk_an_index_never_the_whole_table(
    conn: psycopg.Connection[Any],
) -> None:
    """With 20,000 finished rows in each table (analyzed), every retention statement reads
    through an index: no sequential scan of the outbox, the ledger or the turns, so a
    batch costs its window, not the table."""
    from spectral_core.sql import query

    g = allocate_generation(conn, "v1")
    n = 20_000
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
        "finished_at) SELECT %s, 't', '{}', 'k' || i, 'done', now() FROM generate_series(1, %s) i",
        (g, n),
    )
    conn.execute(
        "INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, generation) "
        "SELECT 'h', 'k' || i, i, %s FROM generate_series(1, %s) i",
        (g, n),
    )
    conn.execute(
        "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, "
        "observation, status, finished_at) SELECT 'o:d:' || i, %s, 'o', 'd', i::text, '{}', "
        "'done', now() FROM generate_series(1, %s) i",
        (g, n),
    )
    for table in ("core.outbox", "core.event_handled", "agent.turns"):
        conn.execute(f"ANALYZE {table}")
    params: dict[str, Any] = {
        "batch": 1000,
        "generations": [g],
        "older_than_s": DAY,
        "after": 0,
        "after_handler": "",
        "after_key": "",
    }
    for name, after in [
        ("prunable_generations", None),
        ("prune_outbox_batch", 0),
        ("prune_ledger_batch", None),
        ("prune_turns_batch", ""),
    ]:
        p = dict(params) if after is None else {**params, "after": after}
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query(name), p).fetchall())
        for table in ("outbox", "event_handled", "turns"):
            assert f"Seq Scan on {table}" not in plan, (name, plan)
