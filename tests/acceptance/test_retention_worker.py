"""spectral-workers runs the pruner (issue 17.3, ADR 0030): a real worker process."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Publisher

from .procs import scalar, start_workers, wait_for

pytestmark = pytest.mark.slow


def test_worker_prunes_handled_rows_and_keeps_dead_ones(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """A worker with short retentions handles 20 events, then its pruner deletes their
    done rows and ledger rows; a dead row stays; SIGTERM still exits 0."""
    pub = Publisher(generation)
    for i in range(20):
        pub.publish(conn, "platform.record", {"i": i}, idempotency_key=f"k{i}")
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
        "finished_at) VALUES (%s, 'platform.record', '{}', 'dead-1', 'dead', "
        "now() - interval '30 days')",
        (generation,),
    )
    p = start_workers(
        db_url,
        generation,
        tmp_path / "w.log",
        SPECTRAL_RETENTION_INTERVAL_S="1",
        SPECTRAL_OUTBOX_RETENTION_S="1",
        SPECTRAL_DEDUP_WINDOW_S="1",
        SPECTRAL_LEDGER_RETENTION_S="1",
    )
    try:
        wait_for(
            lambda: scalar(db_url, "SELECT count(*) FROM core.event_handled") >= 20,
            30,
            "the events handled",
        )
        wait_for(
            lambda: (
                scalar(db_url, "SELECT count(*) FROM core.outbox WHERE status = 'done'") == 0
                and scalar(db_url, "SELECT count(*) FROM core.event_handled") == 0
            ),
            30,
            "the pruner",
        )
        assert scalar(db_url, "SELECT string_agg(status, ',') FROM core.outbox") == "dead"
        assert "retention.pruned" in p.output()
        p.signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        p.kill()


def test_worker_prunes_at_its_pace(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """A worker at SPECTRAL_RETENTION_ROWS_PER_S=100 (batch 20) deletes 600 old done rows no
    faster than its pace (the rows left after its first batch take at least (left - 20) /
    100 s, with a 20 % margin), yet deletes them all; the dead row beside them stays."""
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
        "created_at, finished_at) SELECT %s, 'platform.record', '{}', 'old-' || i, 'done', "
        "now() - interval '30 days', now() - interval '30 days' FROM generate_series(1, 600) i",
        (generation,),
    )
    conn.execute(
        "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
        "finished_at) VALUES (%s, 'platform.record', '{}', 'dead-1', 'dead', "
        "now() - interval '30 days')",
        (generation,),
    )

    def done() -> int:
        return int(scalar(db_url, "SELECT count(*) FROM core.outbox WHERE status = 'done'"))

    p = start_workers(
        db_url,
        generation,
        tmp_path / "w.log",
        SPECTRAL_RETENTION_INTERVAL_S="1",
        SPECTRAL_RETENTION_ROWS_PER_S="100",
        SPECTRAL_RETENTION_BATCH_SIZE="20",
    )
    try:
        left = wait_for(lambda: (n := done()) < 600 and n + 1, 30, "the first batch") - 1
        t0 = time.monotonic()
        wait_for(lambda: done() == 0, 60, "the pruner to finish")
        took = time.monotonic() - t0
        # the last `left` rows went in batches of 20, each batch and its pause 0.2 s long
        assert took >= 0.8 * (left - 20) / 100, (left, took)
        assert scalar(db_url, "SELECT string_agg(status, ',') FROM core.outbox") == "dead"
        p.signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        p.kill()
