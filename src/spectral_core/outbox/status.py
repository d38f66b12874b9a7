"""Drain visibility: per generation, outbox rows by status, workers and API processes by
state.

Workers are counted as ``live``, ``reconnecting``, ``lost`` or ``exited``.  ``lost`` is a
derived state (ADR 0027): a worker that did not exit but whose heartbeat is older than the
stale bound, whatever its row last said; its claims are reaped and its server sessions
terminated by its generation's reapers.  Rows of workers not seen within the retention are
not shown (the reapers delete them).

A generation is ``drained`` when it has no ``pending`` or ``in_flight`` rows,
``draining`` when it has some and at least one live worker, and ``stranded`` when it has
some and no live worker (nobody will ever claim them: deploy that generation again, or
re-drive by hand).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from ..db._wrap import wrap_errors
from ..sql import query

__all__ = ["GenerationStatus", "generation_status", "drain", "redrive_dead", "purge_done"]

Verdict = Literal["drained", "draining", "stranded"]

#: the per-handler counters of the workers' snapshots summed in GenerationStatus.events
_EVENT_COUNTS = ("handled", "failed", "retried", "dead")


@dataclass(slots=True)
class GenerationStatus:
    generation: int
    version: str
    outbox: dict[str, int] = field(default_factory=dict)
    #: workers by state: live / reconnecting / lost / exited
    workers: dict[str, int] = field(default_factory=dict)
    #: World Agent turns by status (pending / running / done / dead)
    turns: dict[str, int] = field(default_factory=dict)
    #: handled / failed / retried / dead handler counts summed over the generation's
    #: workers that have not exited, from their snapshots in core.workers (ADR 0029)
    events: dict[str, int] = field(default_factory=dict)
    #: API processes by state: live / reconnecting / lost / exited (ADR 0032)
    api: dict[str, int] = field(default_factory=dict)

    @property
    def live_rows(self) -> int:
        """Unfinished work: pending or in-flight outbox rows and pending or running turns."""
        return (
            self.outbox.get("pending", 0)
            + self.outbox.get("in_flight", 0)
            + self.turns.get("pending", 0)
            + self.turns.get("running", 0)
        )

    @property
    def verdict(self) -> Verdict:
        if self.live_rows == 0:
            return "drained"
        if self.workers.get("live", 0) + self.workers.get("reconnecting", 0) > 0:
            return "draining"
        return "stranded"

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "version": self.version,
            "outbox": {s: self.outbox.get(s, 0) for s in ("pending", "in_flight", "done", "dead")},
            "workers": {
                s: self.workers.get(s, 0) for s in ("live", "reconnecting", "lost", "exited")
            },
            "turns": {s: self.turns.get(s, 0) for s in ("pending", "running", "done", "dead")},
            "events": {s: self.events.get(s, 0) for s in _EVENT_COUNTS},
            "api": {s: self.api.get(s, 0) for s in ("live", "reconnecting", "lost", "exited")},
            "verdict": self.verdict,
        }


def generation_status(
    conn: psycopg.Connection[Any], *, stale_after_s: float, retention_s: float = 86400.0
) -> list[GenerationStatus]:
    """Status of every allocated generation, oldest first; workers not seen within
    ``retention_s`` are left out."""
    with wrap_errors():
        gens = conn.execute(query("list_generations")).fetchall()
        counts = conn.execute(query("count_by_generation_status")).fetchall()
        turns = conn.execute(query("count_turns_by_generation_status")).fetchall()
        workers = conn.execute(
            query("workers_by_generation"),
            {"stale_after_s": stale_after_s, "retention_s": retention_s},
        ).fetchall()
        snapshots = conn.execute(query("worker_snapshots")).fetchall()
        api = conn.execute(
            query("api_processes_by_generation"),
            {"stale_after_s": stale_after_s, "retention_s": retention_s},
        ).fetchall()
    out = {g: GenerationStatus(g, v) for g, v, _note, _at in gens}
    for g, status, n in counts:
        out[g].outbox[status] = n
    for g, status, n in turns:
        out[g].turns[status] = n
    for g, _id, state, *_rest, lost in workers:
        key = _display_state(state, lost)
        out[g].workers[key] = out[g].workers.get(key, 0) + 1
    for g, snap in snapshots:
        if g not in out or not isinstance(snap, dict):
            continue
        events = out[g].events
        for handler in (snap.get("handlers") or {}).values():
            for name in _EVENT_COUNTS:
                events[name] = events.get(name, 0) + int(handler.get(name, 0))
    for g, _id, state, *_rest, lost in api:
        key = _display_state(state, lost)
        out[g].api[key] = out[g].api.get(key, 0) + 1
    return list(out.values())


def _display_state(state: str, lost: bool) -> str:
    if state == "exited":
        return "exited"
    return "lost" if lost else "reconnecting" if state == "reconnecting" else "live"


def drain(
    conn: psycopg.Connection[Any],
    generation: int,
    *,
    timeout_s: float,
    poll_s: float = 0.5,
    on_poll: Callable[[int, int], None] | None = None,
) -> tuple[bool, int, int]:
    """Wait until ``generation`` has no pending or in-flight rows (nor unfinished turns).

    ``on_poll(pending, in_flight)`` is called after every count that is not yet drained
    (progress display).  Returns ``(drained, pending, in_flight)`` at the end of the wait.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with wrap_errors():
            row = conn.execute(
                query("count_live_for_generation"), {"generation": generation}
            ).fetchone()
        pending, in_flight = row or (0, 0)
        if pending + in_flight == 0:
            return True, 0, 0
        if on_poll is not None:
            on_poll(pending, in_flight)
        if time.monotonic() >= deadline:
            return False, pending, in_flight
        time.sleep(poll_s)


def redrive_dead(
    conn: psycopg.Connection[Any], generation: int, ids: list[int] | None = None
) -> list[int]:
    """Operator action: ``dead`` rows of ``generation`` back to ``pending``."""
    with wrap_errors():
        rows = conn.execute(
            query("redrive_dead"), {"generation": generation, "ids": ids}
        ).fetchall()
        conn.execute(query("notify_channel"), {"channel": f"spectral_outbox_g{generation}"})
    return [r[0] for r in rows]


def purge_done(conn: psycopg.Connection[Any], generation: int, *, older_than_s: float) -> int:
    """Operator retention action: delete ``done`` rows of ``generation`` (nothing else)."""
    with wrap_errors():
        cur = conn.execute(
            query("purge_done"), {"generation": generation, "older_than_s": older_than_s}
        )
    return cur.rowcount
