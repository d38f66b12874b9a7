"""``spectral migrate``: apply pending migrations (idempotent) or ``--check`` them."""

from __future__ import annotations

import argparse

from spectral_core import Settings
from spectral_core.migrate import plan, run_migrations

from ._db import connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply pending migrations (forward-only)",
        description="Apply pending migrations in order. With --check, report "
        "applied and pending migrations without applying; exit 1 if any is "
        "pending or the ledger disagrees with the files.",
    )
    p.add_argument("--check", action="store_true", help="report only; exit 1 when not at head")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        if args.check:
            current = plan(conn)
            for m in current.applied:
                print(f"applied  {m.name}")
            for mig in current.pending:
                print(f"pending  {mig.name}")
            print("at head" if current.at_head else f"{len(current.pending)} pending")
            return 0 if current.at_head else 1
        applied = run_migrations(conn)
    for mig in applied:
        print(f"applied  {mig.name}")
    print(f"{len(applied)} applied; at head")
    return 0
