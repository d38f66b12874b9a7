"""``spectral migrate``: apply pending migrations (idempotent) or ``--check`` them.

Before applying anything, the pending migrations go through the compat lint (the deploy
gate): the applied ones are the deployed baseline, the pending ones must keep the running
generation working.  ``--no-lint`` skips the gate (and says so).
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files

from spectral_core import Settings
from spectral_core.migrate import MigrationPlan, plan, run_migrations

from ._db import connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply pending migrations (forward-only)",
        description="Apply pending migrations in order, after the compat lint accepted them. "
        "With --check, report applied and pending migrations without applying; exit 1 if "
        "any is pending or the ledger disagrees with the files.",
    )
    p.add_argument("--check", action="store_true", help="report only; exit 1 when not at head")
    p.add_argument(
        "--no-lint", action="store_true", help="skip the compat lint gate on pending migrations"
    )
    p.set_defaults(run=run)


def lint_gate(current: MigrationPlan, directory: object = None) -> int:
    """Run the compat lint over the pending migrations of ``directory`` (default: the
    bundled ones); the applied ones are the deployed baseline.  Returns its exit code."""
    if not current.pending:
        return 0
    try:
        from spectral_core.compat.cli import compat_main
    except ImportError:
        print(
            "spectral: error: the compat lint needs pglast (pip install 'spectral[lint]'); "
            "or pass --no-lint",
            file=sys.stderr,
        )
        return 2
    deployed = max((m.number for m in current.applied), default=0)
    if directory is None:
        directory = files("spectral_core") / "migrations"
    return compat_main(["--deployed-through", f"{deployed:04d}", str(directory)])


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        current = plan(conn)
        if args.check:
            for m in current.applied:
                print(f"applied  {m.name}")
            for mig in current.pending:
                print(f"pending  {mig.name}")
            print("at head" if current.at_head else f"{len(current.pending)} pending")
            return 0 if current.at_head else 1
        if args.no_lint:
            print("compat lint skipped (--no-lint)")
        else:
            code = lint_gate(current)
            if code != 0:
                print(
                    "spectral: error: the compat lint refused the pending migrations; "
                    "nothing was applied",
                    file=sys.stderr,
                )
                return code
        applied = run_migrations(conn)
    for mig in applied:
        print(f"applied  {mig.name}")
    print(f"{len(applied)} applied; at head")
    return 0
