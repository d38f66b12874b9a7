"""``spectral agent``: operator actions on one generation's World Agent turns."""

from __future__ import annotations

import argparse

from spectral_core import Settings
from spectral_core.agent.redrive import dead_turns, redrive_dead_turns

from ._db import allocated, connect
from ._out import add_json_flag, emit, table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="operator actions on World Agent turns")
    verbs = p.add_subparsers(dest="agent_verb", required=True, metavar="VERB")
    r = verbs.add_parser(
        "redrive",
        help="dead turns of a generation back to pending (they resume from their checkpoint)",
    )
    r.add_argument("--generation", type=int, required=True)
    r.add_argument(
        "--thread", action="append", dest="threads", metavar="THREAD_ID", help="only these turns"
    )
    add_json_flag(r)
    r.set_defaults(run=redrive)
    d = verbs.add_parser("dead", help="list the dead turns of a generation")
    d.add_argument("--generation", type=int, required=True)
    d.add_argument("--limit", type=int, default=100)
    add_json_flag(d)
    d.set_defaults(run=dead)


def redrive(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        allocated(conn, args.generation)
        threads = redrive_dead_turns(conn, args.generation, args.threads)
    emit(
        args,
        {"generation": args.generation, "redriven": threads},
        f"{len(threads)} dead turns of generation {args.generation} re-pended",
    )
    return 0


def dead(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        allocated(conn, args.generation)
        turns = dead_turns(conn, args.generation, limit=max(args.limit, 1))
    rows = [
        (
            t.thread_id,
            t.attempts,
            t.finished_at.isoformat() if t.finished_at else None,
            (t.last_error or "")[:80],
        )
        for t in turns
    ]
    emit(
        args,
        {"generation": args.generation, "dead": turns},
        table(["thread", "attempts", "finished", "error"], rows),
    )
    return 0
