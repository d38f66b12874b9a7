"""spectral-workers runs the pruner (issue 17.3, ADR 0030): a real worker process."""

from __future__ import annotations

import signal
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
