"""The checkpointer's own connection pool (langgraph-checkpoint-postgres on psycopg 3).

The pool is separate from the outbox pool: turns write checkpoints on their own
connections, in autocommit, so each checkpoint is durable the moment it is written and no
outbox batch transaction is ever held open by a turn.  Its connections use

- ``autocommit=True`` and ``row_factory=dict_row``, as the saver expects;
- ``prepare_threshold=None``: no server-side prepared statements, so the same pool works
  directly and through a transaction pooler (ADR 0041);
- ``options=-c search_path=agent``: the saver's SQL names its tables unqualified; they live
  in schema ``agent``, created by migration ``0005_world_agent.sql`` (never by
  ``setup()``).  A pooler that drops startup options needs
  ``SPECTRAL_AGENT_DATABASE_URL`` pointed at a session-mode endpoint (see the reference).

The saver serializes its statements on one lock per instance, so :func:`saver_for_turn`
makes one (cheap) saver per turn over the shared pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from ..db._wrap import wrap_errors
from ..db.pools import POOL_CLOSE_TIMEOUT_S, open_pool, wait_ready
from ..settings import Settings

__all__ = ["CHECKPOINT_SCHEMA", "checkpointer_kwargs", "open_checkpointer_pool", "saver_for_turn"]

CHECKPOINT_SCHEMA = "agent"

CheckpointPool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]


def checkpointer_kwargs() -> dict[str, Any]:
    """psycopg connection options of the checkpointer pool."""
    return {
        "autocommit": True,
        "row_factory": dict_row,
        "prepare_threshold": None,
        "options": f"-c search_path={CHECKPOINT_SCHEMA}",
    }


@asynccontextmanager
async def open_checkpointer_pool(settings: Settings) -> AsyncIterator[CheckpointPool]:
    """Open the checkpointer pool (waits for one connection, so a bad URL fails at boot).

    Raises:
        ConnectionLost: the server could not be reached in time.
    """
    url = settings.agent_database_url or settings.require_database_url()
    pool: CheckpointPool = open_pool(
        url,
        settings,
        kwargs=checkpointer_kwargs(),
        min_size=1,
        max_size=max(2, min(settings.agent_concurrency, settings.database_pool_max) + 1),
        name="spectral-agent",
    )
    await pool.open(wait=False)
    try:
        await wait_ready(pool, settings, what="checkpointer database")
        yield pool
    finally:
        await pool.close(timeout=POOL_CLOSE_TIMEOUT_S)


def saver_for_turn(pool: CheckpointPool) -> AsyncPostgresSaver:
    """A checkpointer for one turn over the shared pool."""
    with wrap_errors():
        return AsyncPostgresSaver(pool)
