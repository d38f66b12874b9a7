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
from typing import TextIO

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
from ._out import add_json_flag, emit


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
    add_json_flag(p)
    p.set_defaults(run=run)


def lint_gate(
    current: MigrationPlan, directory: object = None, *, out: TextIO | None = None
) -> int:
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
    (out or sys.stdout).write(render(findings, "text", tool=prog, files=len(linted)))
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
            return _report(args, plans, {s.name for s in sets}, ledger_sets(conn))
        if args.no_lint:
            print("compat lint skipped (--no-lint)", file=sys.stderr if args.json else sys.stdout)
        else:
            for s, current in zip(sets, plans, strict=True):
                # with --json, stdout carries only the result: the lint's report goes to stderr
                code = lint_gate(current, s.directory, out=sys.stderr if args.json else None)
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
    names = [f"{s.name}/{mig.name}" for s, applied in done for mig in applied]
    emit(
        args,
        {"applied": names, "at_head": True},
        "\n".join([*(f"applied  {n}" for n in names), f"{len(names)} applied; at head"]),
    )
    return 0


def _say(event: MigrationEvent) -> None:
    """Lock waits and retries, as they happen, on stderr."""
    print(f"spectral: {event.describe()}", file=sys.stderr, flush=True)


def _report(
    args: argparse.Namespace, plans: list[MigrationPlan], given: set[str], ledger: list[LedgerSet]
) -> int:
    lines: list[str] = []
    sets: list[dict[str, object]] = []
    pending = 0
    for p in plans:
        applied = [m.name for m in p.applied]
        waiting = [mig.name for mig in p.pending]
        lines += [f"applied  {p.migration_set}/{n}" for n in applied]
        lines += [f"pending  {p.migration_set}/{n}" for n in waiting]
        sets.append({"set": p.migration_set, "applied": applied, "pending": waiting})
        pending += len(waiting)
    unchecked = [{"set": e.name, "applied": e.applied} for e in ledger if e.name not in given]
    lines += [
        f"unchecked set {u['set']}: {u['applied']} applied, its directory "
        "was not given (--dir, SPECTRAL_MIGRATION_DIRS)"
        for u in unchecked
    ]
    lines.append("at head" if not pending else f"{pending} pending")
    emit(args, {"sets": sets, "unchecked": unchecked, "at_head": not pending}, "\n".join(lines))
    return 0 if not pending else 1
