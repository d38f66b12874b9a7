"""Operator re-drive of dead World Agent turns (issue 17.4).

A dead turn keeps its row and its LangGraph checkpoints.  Re-driving it puts it back to
``pending`` *within its generation* with its attempts reset; the next claim by a worker of
that generation resumes the graph from the turn's last checkpoint, so the model calls and
tool calls that completed before it died are not made again.  Nothing here moves a turn
to another generation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg

from ..db._wrap import wrap_errors
from ..sql import query

__all__ = ["DeadTurn", "dead_turns", "redrive_dead_turns"]


class DeadTurn(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    org: str
    domain: str
    attempts: int
    finished_at: datetime | None
    last_error: str | None


def redrive_dead_turns(
    conn: psycopg.Connection[Any], generation: int, thread_ids: list[str] | None = None
) -> list[str]:
    """Dead turns of ``generation`` (all, or ``thread_ids``) back to ``pending``; returns
    the re-driven threads, sorted.  A named thread that is not a dead turn of that
    generation is left alone (and not returned)."""
    with wrap_errors():
        rows = conn.execute(
            query("redrive_dead_turns"), {"generation": generation, "thread_ids": thread_ids}
        ).fetchall()
    return sorted(r[0] for r in rows)


def dead_turns(
    conn: psycopg.Connection[Any], generation: int, *, limit: int = 100
) -> list[DeadTurn]:
    """Dead turns of ``generation``, oldest first (at most ``limit``)."""
    with wrap_errors():
        rows = conn.execute(
            query("list_dead_turns"), {"generation": generation, "limit": limit}
        ).fetchall()
    return [
        DeadTurn(
            thread_id=r[0],
            org=r[1],
            domain=r[2],
            attempts=r[3],
            finished_at=r[4],
            last_error=r[5],
        )
        for r in rows
    ]
