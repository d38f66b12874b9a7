"""Tools scoped to the turn's org and domain; the checkpointer's schema and pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from spectral_core import Settings
from spectral_core.agent import PlatformTools, ToolContext, ToolError, open_checkpointer_pool
from spectral_core.agent.checkpoint import checkpointer_kwargs
from spectral_core.db import Database
from spectral_core.testing import write_script

from .helpers import agent_settings, observe, rows, running_agent, wait_for

pytestmark = pytest.mark.anyio


async def test_tools_are_scoped_to_the_turns_org_and_domain(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A turn's tools read and write only its own (org, domain) facts, publish events
    under a derived idempotency key, and draft modules awaiting approval (never approved)."""
    conn.execute(
        "INSERT INTO agent.world_facts (org, domain, key, value) VALUES "
        "('other', 'alpha', 'secret', '42'), ('acme', 'beta', 'secret', '7')"
    )
    script = write_script(
        tmp_path / "s.json",
        [
            {
                "tool_calls": [
                    {"name": "read_fact", "args": {"key": "secret"}},
                    {"name": "write_fact", "args": {"key": "secret", "value": "mine"}},
                    {
                        "name": "publish_event",
                        "args": {"topic": "world.alert", "payload": {"x": 1}},
                    },
                    {"name": "publish_event", "args": {"topic": "world.observe", "payload": {}}},
                    {
                        "name": "draft_module",
                        "args": {
                            "action": "price",
                            "world_model_version": "v2",
                            "source": "(module)",
                            "note": "cheaper",
                        },
                    },
                ]
            },
            {"content": {"done": True}},
        ],
    )
    s = agent_settings(settings)
    observe(conn, s.generation or 0)
    async with running_agent(s, db, script):
        await wait_for(
            lambda: rows(db_url, "SELECT 1 FROM core.outbox WHERE topic = 'world.decided'")
        )
    facts = rows(db_url, "SELECT org, domain, key, value FROM agent.world_facts ORDER BY 1, 2")
    assert facts == [
        ("acme", "alpha", "secret", "mine"),
        ("acme", "beta", "secret", 7),
        ("other", "alpha", "secret", 42),
    ]
    [(payload, key)] = rows(
        db_url, "SELECT payload, idempotency_key FROM core.outbox WHERE topic = 'world.alert'"
    )
    assert payload == {
        "org": "acme",
        "domain": "alpha",
        "thread_id": "acme:alpha:ev-1",
        "data": {"x": 1},
    }
    assert key == "acme:alpha:ev-1:call_0_2"
    assert rows(db_url, "SELECT count(*) FROM core.outbox WHERE topic = 'world.observe'") == [
        (1,)
    ]  # the reserved topic was refused (no self-triggering)
    assert rows(db_url, "SELECT org, domain, action, status FROM agent.module_drafts") == [
        ("acme", "alpha", "price", "awaiting_approval")
    ]
    assert rows(db_url, "SELECT count(*) FROM core.module_approvals") == [(0,)]
    # the tool results the model saw: the other org's fact was invisible
    [(blob,)] = rows(db_url, "SELECT count(*) FROM agent.checkpoint_writes")
    assert blob > 0


async def test_tool_calls_are_idempotent_and_validated(
    db: Database, generation: int, db_url: str
) -> None:
    """Re-running a tool call (as after a crash before the checkpoint) has no second effect;
    bad arguments are reported as ToolError, never executed."""
    tools = PlatformTools(db, generation)
    ctx = ToolContext(org="acme", domain="alpha", thread_id="acme:alpha:k", tool_call_id="c1")
    args = {"action": "a", "world_model_version": "v1", "source": "s"}
    first = await tools.call(ctx, "draft_module", args)
    again = await tools.call(ctx, "draft_module", args)
    assert first == again
    await tools.call(ctx, "publish_event", {"topic": "world.x", "payload": {}})
    assert rows(db_url, "SELECT count(*) FROM agent.module_drafts") == [(1,)]
    for name, bad in [
        ("write_fact", {"key": "", "value": 1}),
        ("read_fact", {"key": 3}),
        ("publish_event", {"topic": "core.x", "payload": {}}),
        ("nope", {}),
    ]:
        with pytest.raises(ToolError):
            await tools.call(ctx, name, bad)
    assert await tools.call(ctx, "list_facts", {"prefix": "%"}) == {}


def test_migration_owns_the_checkpointer_schema(conn: psycopg.Connection[Any]) -> None:
    """Migration 0005 creates exactly the checkpointer's tables in schema agent and records
    every checkpointer migration, so the package's setup() has nothing left to do; a package
    upgrade with a new migration fails here (add a new spectral migration then)."""
    tables = {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'agent'"
        )
    }
    assert {
        "checkpoints",
        "checkpoint_blobs",
        "checkpoint_writes",
        "checkpoint_migrations",
    } <= tables
    [(top,)] = conn.execute("SELECT max(v) FROM agent.checkpoint_migrations").fetchall()
    assert top == len(AsyncPostgresSaver.MIGRATIONS) - 1
    assert not conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_name "
        "LIKE 'checkpoint%%' AND table_schema <> 'agent'"
    ).fetchall()


async def test_saver_works_against_the_migrated_schema(
    settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    """AsyncPostgresSaver on the agent pool (autocommit, dict rows, search_path=agent):
    setup() is a no-op and a checkpoint round-trips; nothing lands in public."""
    assert checkpointer_kwargs()["prepare_threshold"] is None
    s = agent_settings(settings)
    async with open_checkpointer_pool(s) as pool:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        cfg: Any = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        from langgraph.checkpoint.base import empty_checkpoint

        ckpt = empty_checkpoint()
        await saver.aput(cfg, ckpt, {"source": "input", "step": -1}, {})
        got = await saver.aget_tuple(cfg)
        assert got is not None and got.checkpoint["id"] == ckpt["id"]
    assert conn.execute("SELECT count(*) FROM agent.checkpoints").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM agent.checkpoint_migrations").fetchone() == (
        len(AsyncPostgresSaver.MIGRATIONS),
    )
    assert not conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
