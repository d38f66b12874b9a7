"""``spectral outbox``: operator actions on one generation's rows."""

from __future__ import annotations

import argparse

from spectral_core import Settings
from spectral_core.outbox import purge_done, redrive_dead

from ._db import allocated, connect
from ._out import add_json_flag, emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("outbox", help="operator actions on outbox rows")
    verbs = p.add_subparsers(dest="outbox_verb", required=True, metavar="VERB")
    r = verbs.add_parser("redrive", help="dead rows of a generation back to pending")
    r.add_argument("--generation", type=int, required=True)
    r.add_argument("--id", type=int, action="append", dest="ids", help="only these rows")
    add_json_flag(r)
    r.set_defaults(run=redrive)
    g = verbs.add_parser("purge", help="delete done rows of a generation (retention)")
    g.add_argument("--generation", type=int, required=True)
    g.add_argument("--older-than", type=float, default=7 * 86400.0, help="seconds (default 7 days)")
    add_json_flag(g)
    g.set_defaults(run=purge)


def redrive(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        allocated(conn, args.generation)
        ids = redrive_dead(conn, args.generation, args.ids)
    emit(
        args,
        {"generation": args.generation, "redriven": sorted(ids)},
        f"{len(ids)} dead rows of generation {args.generation} re-pended",
    )
    return 0


def purge(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        allocated(conn, args.generation)
        n = purge_done(conn, args.generation, older_than_s=args.older_than)
    emit(
        args,
        {"generation": args.generation, "deleted": n},
        f"{n} done rows of generation {args.generation} deleted",
    )
    return 0
