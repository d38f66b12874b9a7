"""The World Agent inside a real ``spectral-workers`` process: SIGKILL mid-turn and a
burst of slow turns beside ordinary events."""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Publisher
from spectral_core.outbox import EventIn
from spectral_core.testing import read_calls, repeated_completed_calls, write_script

from ..acceptance.procs import start_workers, wait_for
from .helpers import rows

pytestmark = pytest.mark.slow


def agent_env(script: Path, **extra: str) -> dict[str, str]:
    env = {
        "SPECTRAL_AGENT_PROVIDER": "scripted",
        "SPECTRAL_AGENT_SCRIPT_PATH": str(script),
        "SPECTRAL_LLM_CREDENTIAL__ALPHA": "sk-alpha-secret",
        "SPECTRAL_AGENT_POLL_INTERVAL_S": "0.2",
    }
    env.update(extra)
    return env


def observe_many(conn: psycopg.Connection[Any], gen: int, n: int, prefix: str = "ev") -> None:
    Publisher(gen).publish_many(
        conn,
        [
            EventIn(
                topic="world.observe",
                payload={"org": "acme", "domain": "alpha", "observation": {"i": i}},
                idempotency_key=f"{prefix}{i}",
            )
            for i in range(n)
        ],
    )


def test_sigkill_mid_turn_resumes_from_the_checkpoint(
    db_url: str, generation: int, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A worker SIGKILLed during a turn's second LLM call: after a restart the turn resumes
    from its checkpoint; the completed first call is not made again, the interrupted one is,
    and exactly one world.decided is published."""
    script = write_script(
        tmp_path / "s.json",
        [
            {"tool_calls": [{"name": "write_fact", "args": {"key": "seen", "value": True}}]},
            {"content": {"action": "buy"}, "delay_s": 3.0},
        ],
    )
    env = agent_env(script)
    observe_many(conn, generation, 1)
    w1 = start_workers(db_url, generation, tmp_path / "w1.log", **env)
    try:
        wait_for(
            lambda: any(c["phase"] == "start" and c["step"] == 1 for c in read_calls(script)),
            30,
            "the second LLM call",
        )
        time.sleep(0.3)
        w1.signal(signal.SIGKILL)
        w1.wait(10)
    finally:
        w1.kill()
    assert rows(db_url, "SELECT status FROM agent.turns") == [("running",)]
    assert not rows(db_url, "SELECT 1 FROM core.outbox WHERE topic = 'world.decided'")

    w2 = start_workers(db_url, generation, tmp_path / "w2.log", **env)
    try:
        wait_for(
            lambda: rows(db_url, "SELECT 1 FROM core.outbox WHERE topic = 'world.decided'"),
            40,
            "world.decided after the restart",
        )
        w2.signal(signal.SIGTERM)
        assert w2.wait(30) == 0
    finally:
        w2.kill()
    calls = read_calls(script)
    starts = [c["step"] for c in calls if c["phase"] == "start"]
    dones = [c["step"] for c in calls if c["phase"] == "done"]
    assert starts == [0, 1, 1]  # step 0 once; step 1 interrupted, then re-run
    assert dones == [0, 1]
    assert repeated_completed_calls(script) == []
    assert len({c["pid"] for c in calls}) == 2
    assert rows(db_url, "SELECT status, attempts FROM agent.turns") == [("done", 2)]
    assert rows(
        db_url,
        "SELECT count(*), min(payload->'decision'->>'action') FROM core.outbox "
        "WHERE topic = 'world.decided'",
    ) == [(1, "buy")]
    assert "turn_resumed" in w2.output()
    assert "sk-alpha-secret" not in w1.output() + w2.output()


def test_burst_of_slow_turns_keeps_ordinary_event_latency(
    db_url: str, generation: int, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """50 turns of ~1 s each arrive at once; ordinary platform.record events published
    during the burst are still handled within a bounded latency (< 2 s), and no more than
    SPECTRAL_AGENT_CONCURRENCY turns run at once."""
    script = write_script(tmp_path / "s.json", [{"content": {"ok": True}, "delay_s": 1.0}])
    w = start_workers(
        db_url,
        generation,
        tmp_path / "w.log",
        **agent_env(script, SPECTRAL_AGENT_CONCURRENCY="8", SPECTRAL_OUTBOX_LANES="2"),
    )
    try:
        wait_for(
            lambda: rows(db_url, "SELECT 1 FROM core.workers WHERE state = 'running'"),
            30,
            "worker up",
        )
        observe_many(conn, generation, 50)
        pub = Publisher(generation)
        i = 0
        deadline = time.monotonic() + 60
        while rows(db_url, "SELECT count(*) FROM agent.turns WHERE status = 'done'") != [(50,)]:
            assert time.monotonic() < deadline, "the burst did not finish in 60 s"
            pub.publish(conn, "platform.record", {"i": i}, idempotency_key=f"ord{i}")
            i += 1
            time.sleep(0.1)
        wait_for(
            lambda: (
                rows(db_url, "SELECT count(*) FROM core.event_log WHERE topic = 'platform.record'")
                == [(i,)]
            ),
            10,
            "every ordinary event handled",
        )
        w.signal(signal.SIGTERM)
        assert w.wait(30) == 0
    finally:
        w.kill()
    latencies = [
        r[0]
        for r in rows(
            db_url,
            """
        SELECT extract(epoch FROM l.handled_at - o.created_at)::float8
        FROM core.event_log l JOIN core.outbox o ON o.id = l.outbox_id
        WHERE l.topic = 'platform.record'""",
        )
    ]
    calls = read_calls(script)
    spans = sorted((c["t"], 1 if c["phase"] == "start" else -1) for c in calls)
    running = peak = 0
    for _t, d in spans:
        running += d
        peak = max(peak, running)
    print(
        f"\nburst: {len(latencies)} ordinary events during 50 turns; latency "
        f"median {statistics.median(latencies):.3f}s max {max(latencies):.3f}s; "
        f"peak concurrent turns {peak}"
    )
    assert len(latencies) >= 20  # the burst lasted several seconds
    assert max(latencies) < 2.0
    assert peak <= 8
    assert rows(db_url, "SELECT count(*) FROM core.outbox WHERE topic = 'world.decided'") == [(50,)]
    assert repeated_completed_calls(script) == []
