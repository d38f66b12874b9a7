"""World Agent turns against a real PostgreSQL checkpointer (in-process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Settings
from spectral_core.db import Database
from spectral_core.testing import read_calls, repeated_completed_calls, write_script

from .helpers import agent_settings, observe, rows, running_agent, wait_for

pytestmark = pytest.mark.anyio

TWO_STEP = [
    {
        "tool_calls": [
            {"name": "read_fact", "args": {"key": "price"}},
            {"name": "write_fact", "args": {"key": "price", "value": 10}},
        ],
        "input_tokens": 50,
        "output_tokens": 10,
    },
    {
        "content": {"action": "hold", "reason": "price stable"},
        "input_tokens": 80,
        "output_tokens": 12,
    },
]


def decided(url: str) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT payload, idempotency_key FROM core.outbox "
        "WHERE topic = 'world.decided' ORDER BY id",
    )


async def test_a_turn_completes_and_publishes_its_decision(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """An observe event runs one turn: the model is called per step, tools write the
    domain's facts, checkpoints land in schema agent, and world.decided is published in
    the same generation with the decision."""
    script = write_script(tmp_path / "s.json", TWO_STEP)
    s = agent_settings(settings)
    observe(conn, s.generation or 0)
    async with running_agent(s, db, script):
        await wait_for(lambda: decided(db_url))
    [(payload, key)] = decided(db_url)
    assert payload["decision"] == {"action": "hold", "reason": "price stable"}
    assert payload["org"] == "acme" and payload["domain"] == "alpha"
    assert payload["thread_id"] == "acme:alpha:ev-1" and payload["steps"] == 2
    assert payload["tokens"] == 152
    assert key == "world.decided:acme:alpha:ev-1"
    assert rows(db_url, "SELECT generation FROM core.outbox WHERE topic = 'world.decided'") == [
        (s.generation,)
    ]
    assert rows(db_url, "SELECT status, attempts FROM agent.turns") == [("done", 1)]
    assert rows(db_url, "SELECT org, domain, key, value FROM agent.world_facts") == [
        ("acme", "alpha", "price", 10)
    ]
    assert rows(
        db_url, "SELECT count(*) > 0 FROM agent.checkpoints WHERE thread_id = 'acme:alpha:ev-1'"
    ) == [(True,)]
    calls = read_calls(script)
    assert [(c["phase"], c["step"]) for c in calls] == [
        ("start", 0),
        ("done", 0),
        ("start", 1),
        ("done", 1),
    ]
    assert rows(db_url, "SELECT status FROM core.outbox WHERE topic = 'world.observe'") == [
        ("done",)
    ]


async def test_the_same_event_delivered_twice_runs_one_turn(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A duplicate publish and a redelivery of the same event (same idempotency key) are
    deduplicated by the ledger: one turn, one set of model calls, one world.decided."""
    script = write_script(tmp_path / "s.json", TWO_STEP)
    s = agent_settings(settings)
    gen = s.generation or 0
    observe(conn, gen, key="dup")
    observe(conn, gen, key="dup")  # duplicate publish
    async with running_agent(s, db, script):
        await wait_for(lambda: decided(db_url))
        # redelivery of an already handled row (as after a crash before settlement)
        conn.execute("UPDATE core.outbox SET status = 'pending' WHERE topic = 'world.observe'")
        await wait_for(
            lambda: (
                rows(
                    db_url,
                    "SELECT count(*) FROM core.outbox WHERE "
                    "topic = 'world.observe' AND status = 'done'",
                )
                == [(2,)]
            )
        )
        await wait_for(
            lambda: (
                rows(
                    db_url,
                    "SELECT count(*) FROM core.outbox WHERE "
                    "topic = 'world.observe' AND attempts = 2",
                )
                == [(2,)]
            )
        )
    assert len(decided(db_url)) == 1
    assert rows(db_url, "SELECT count(*) FROM agent.turns") == [(1,)]
    assert [c["step"] for c in read_calls(script) if c["phase"] == "done"] == [0, 1]
    assert repeated_completed_calls(script) == []
    assert rows(
        db_url,
        "SELECT count(*) FROM core.event_handled "
        "WHERE handler_name = 'workers.world_agent.observe'",
    ) == [(1,)]
