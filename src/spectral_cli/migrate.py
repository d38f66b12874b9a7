"""``spectral migrate``: apply pending migrations (idempotent) or ``--check`` them.

Migration sets (ADR 0019): spectral's own set first, then one set per app directory given
with ``--dir`` (repeatable) or ``SPECTRAL_MIGRATION_DIRS``.  Before applying anything, the
pending migrations of every set go through the compat lint with its locking rules (the
deploy gate): the applied ones are the deployed baseline, the pending ones must keep the
running generation working and must not lock an existing table for long.  ``--no-lint``
skips the gate (and says so).
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files

from spectral_core import Settings
from spectral_core.errors import SpectralError
from spectral_core.migrate import (
    NO_TRANSACTION,
    LedgerSet,
    LockPolicy,
    MigrationEvent,
    MigrationPlan,
    MigrationSet,
    ledger_sets,
    migration_sets,
    plan_sets,
    run_sets,
)

from ._db import connect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply pending migrations (forward-only)",
        description="Apply pending migrations in order, spectral's own set first, then one "
        "set per app directory (--dir, SPECTRAL_MIGRATION_DIRS), after the compat lint "
        "accepted them. With --check, report applied and pending migrations of every set "
        "without applying; exit 1 if any is pending or the ledger disagrees with the files.",
    )
    p.add_argument("--check", action="store_true", help="report only; exit 1 when not at head")
    p.add_argument(
        "--dir",
        action="append",
        default=[],
        dest="dirs",
        metavar="PATH",
        help="an app's migration directory (repeatable; after those of "
        "SPECTRAL_MIGRATION_DIRS); the directory's name names its set",
    )
    p.add_argument(
        "--no-lint", action="store_true", help="skip the compat lint gate on pending migrations"
    )
    p.set_defaults(run=run)


def lint_gate(current: MigrationPlan, directory: object = None) -> int:
    """Run the compat lint with its locking rules over the pending migrations of
    ``directory`` (default: the bundled ones); the applied ones are the deployed baseline,
    so the locking rules judge the files that touch existing tables.  The runner sets a
    lock_timeout on every transactional file itself (ADR 0019), so the ``lock-timeout``
    rule is satisfied there and left out.  Returns the lint's exit code."""
    if not current.pending:
        return 0
    prog = "spectral lint compat"
    try:
        from spectral_core.compat.baseline import mark_deployed_through
        from spectral_core.compat.engine import lint_files
        from spectral_core.compat.report import render, summary
        from spectral_core.compat.source import collect_files
    except ImportError:
        print(
            "spectral: error: the compat lint needs pglast (pip install 'spectral[lint]'); "
            "or pass --no-lint",
            file=sys.stderr,
        )
        return 2
    if directory is None:
        directory = files("spectral_core") / "migrations"
    try:
        found, _ = collect_files([str(directory)])
        mark_deployed_through(found, current.deployed_through)
        wrapped = {f.display: not f.read().lstrip().startswith(NO_TRANSACTION) for f in found}
        results = lint_files(found, locking=True)
    except SpectralError as exc:
        print(f"{prog}: error: {exc.message}", file=sys.stderr)
        return 2
    findings = [
        f
        for r in results
        for f in r.findings
        if not (f.rule == RUNNER_SETS and wrapped.get(r.path, False))
    ]
    linted = [r for r in results if not r.deployed]
    statements = sum(r.statements for r in linted)
    sys.stdout.write(render(findings, "text", tool=prog, files=len(linted)))
    print(f"{prog}: {summary(findings, len(linted), statements)}", file=sys.stderr)
    return 1 if any(f.severity.value == "error" for f in findings) else 0


#: the locking rule the runner satisfies itself on transactional files
RUNNER_SETS = "lock-timeout"


def _sets(args: argparse.Namespace, settings: Settings) -> list[MigrationSet]:
    return migration_sets([*settings.migration_dir_list, *args.dirs])


def run(args: argparse.Namespace, settings: Settings) -> int:
    sets = _sets(args, settings)
    with connect(settings) as conn:
        plans = plan_sets(conn, sets)
        if args.check:
            return _report(plans, {s.name for s in sets}, ledger_sets(conn))
        if args.no_lint:
            print("compat lint skipped (--no-lint)")
        else:
            for s, current in zip(sets, plans, strict=True):
                code = lint_gate(current, s.directory)
                if code != 0:
                    print(
                        f"spectral: error: the compat lint refused pending migrations of set "
                        f"{s.name}; nothing was applied",
                        file=sys.stderr,
                    )
                    return code
        done = run_sets(
            conn,
            sets,
            lock=LockPolicy(
                timeout_s=settings.migration_lock_timeout_s,
                retries=settings.migration_lock_retries,
            ),
            on_event=_say,
            observer=lambda: connect(settings),
        )
    total = 0
    for s, applied in done:
        for mig in applied:
            print(f"applied  {s.name}/{mig.name}")
        total += len(applied)
    print(f"{total} applied; at head")
    return 0


def _say(event: MigrationEvent) -> None:
    """Lock waits and retries, as they happen, on stderr."""
    print(f"spectral: {event.describe()}", file=sys.stderr, flush=True)


def _report(plans: list[MigrationPlan], given: set[str], ledger: list[LedgerSet]) -> int:
    pending = 0
    for p in plans:
        for m in p.applied:
            print(f"applied  {p.migration_set}/{m.name}")
        for mig in p.pending:
            print(f"pending  {p.migration_set}/{mig.name}")
        pending += len(p.pending)
    for entry in ledger:
        name = entry.name
        if name not in given:
            print(
                f"unchecked set {name}: {entry.applied} applied, its directory "
                "was not given (--dir, SPECTRAL_MIGRATION_DIRS)"
            )
    print("at head" if not pending else f"{pending} pending")
    return 0 if not pending else 1
