"""Re-drive of dead World Agent turns (issue 17.4): within the generation, resuming from
the last checkpoint, without repeating completed model calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Settings, allocate_generation
from spectral_core.agent import AgentConfig, CallPolicy
from spectral_core.agent.redrive import dead_turns, redrive_dead_turns
from spectral_core.db import Database
from spectral_core.testing import read_calls, repeated_completed_calls, write_script

from ..acceptance.procs import clean_env
from .helpers import agent_settings, observe, rows, running_agent, wait_for

pytestmark = pytest.mark.anyio

WRITE = {"tool_calls": [{"name": "write_fact", "args": {"key": "k", "value": 1}}]}


def _turn(url: str) -> tuple[Any, ...]:
    """The one turn's (thread, generation, status, attempts); empty before it exists."""
    found = rows(url, "SELECT thread_id, generation, status, attempts FROM agent.turns")
    assert len(found) <= 1
    return found[0] if found else ("", 0, None, 0)


async def test_a_dead_turn_redriven_resumes_without_repeating_model_calls(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A turn whose second model call fails (once, with no retry and one attempt) ends dead
    after its first call and tool call completed.  Re-driven (the model now answers), it
    resumes from its
    checkpoint: the first call is not made again, the fact is written once, the turn ends
    done in its own generation and world.decided is published."""
    script = write_script(
        tmp_path / "s.json", [WRITE, {"content": {"action": "hold"}, "fail_times": 1}]
    )
    s = agent_settings(settings)
    config = AgentConfig.from_settings(
        s, max_attempts=1, policy=CallPolicy(timeout_s=5, retries=0, backoff_base_s=0.01)
    )
    gen = s.generation or 0
    observe(conn, gen, key="ev-redrive")
    async with running_agent(s, db, script, config=config):
        await wait_for(lambda: _turn(db_url)[2] == "dead")
        thread = _turn(db_url)[0]
        [dead] = dead_turns(conn, gen)
        assert dead.thread_id == thread and "scripted transient failure" in (dead.last_error or "")
        calls_before = read_calls(script)
        assert [(c["step"], c["phase"]) for c in calls_before] == [
            (0, "start"),
            (0, "done"),
            (1, "start"),
        ]
        assert redrive_dead_turns(conn, gen) == [thread]
        await wait_for(lambda: _turn(db_url)[2] == "done")
        await wait_for(
            lambda: rows(db_url, "SELECT 1 FROM core.outbox WHERE topic = 'world.decided'")
        )
    assert _turn(db_url) == (thread, gen, "done", 1)
    calls = read_calls(script)
    assert [(c["step"], c["phase"]) for c in calls[len(calls_before) :]] == [
        (1, "start"),
        (1, "done"),
    ]
    assert repeated_completed_calls(script) == []
    assert rows(db_url, "SELECT key, value FROM agent.world_facts") == [("k", 1)]
    assert redrive_dead_turns(conn, gen) == []  # nothing dead any more


async def test_redrive_stays_within_its_generation(
    conn: psycopg.Connection[Any], db_url: str, generation: int
) -> None:
    """Re-driving generation N touches only N's dead turns (never another generation's,
    never a turn that is not dead), and named threads limit it further."""
    other = allocate_generation(conn, "test-2")
    for g, thread, status in [
        (generation, "o:d:a", "dead"),
        (generation, "o:d:b", "dead"),
        (generation, "o:d:c", "done"),
        (other, "o:d:x", "dead"),
    ]:
        conn.execute(
            "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, "
            "observation, status, attempts) VALUES (%s, %s, 'o', 'd', %s, '{}', %s, 5)",
            (thread, g, thread, status),
        )
    assert redrive_dead_turns(conn, generation, ["o:d:b", "o:d:c", "o:d:x"]) == ["o:d:b"]
    assert redrive_dead_turns(conn, generation) == ["o:d:a"]
    got = dict(rows(db_url, "SELECT thread_id, status || ':' || attempts FROM agent.turns"))
    assert got == {"o:d:a": "pending:0", "o:d:b": "pending:0", "o:d:c": "done:5", "o:d:x": "dead:5"}


def test_cli_redrive_prints_json(
    conn: psycopg.Connection[Any], db_url: str, generation: int
) -> None:
    """`spectral agent redrive --generation N --json` prints the re-driven threads."""
    conn.execute(
        "INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, "
        "observation, status) VALUES ('o:d:a', %s, 'o', 'd', 'a', '{}', 'dead')",
        (generation,),
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spectral_cli",
            "agent",
            "redrive",
            "--generation",
            str(generation),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(SPECTRAL_DATABASE_URL=db_url),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"generation": generation, "redriven": ["o:d:a"]}
