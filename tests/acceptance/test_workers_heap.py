"""spectral-workers as a real process: its start-up heap is frozen once it is booted."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Publisher
from spectral_core.outbox import EventIn

from .procs import scalar, start_workers, wait_for

pytestmark = pytest.mark.slow


def started_line(out: str) -> dict[str, Any] | None:
    for line in out.splitlines():
        if line.startswith("{") and '"worker.started"' in line:
            doc: dict[str, Any] = json.loads(line)
            return doc
    return None


def test_workers_freeze_their_start_up_heap_and_still_handle_events(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """Once booted, spectral-workers moves what it holds out of the collector's sight
    (``gc.freeze``, ADR 0047: a full collection walked it for tens of ms, the p99 at 1,000
    events/s), says so in ``worker.started``, and goes on handling events."""
    w = start_workers(db_url, generation, tmp_path / "w.log")
    try:
        started = wait_for(lambda: started_line(w.output()), 60, "worker.started")
        # the imported modules, settings, pools and consumer: tens of thousands of objects
        assert started["heap_frozen"] > 10_000, started
        Publisher(generation).publish_many(
            conn,
            [
                EventIn(topic="platform.record", payload={}, idempotency_key=f"h{i}")
                for i in range(20)
            ],
        )
        wait_for(
            lambda: scalar(db_url, "SELECT count(*) FROM core.outbox WHERE status = 'done'") == 20,
            30,
            "the events handled",
        )
        w.signal(signal.SIGTERM)
        assert w.wait(15) == 0
    finally:
        w.kill()
