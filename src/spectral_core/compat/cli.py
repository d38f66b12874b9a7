"""Command lines: ``spectral lint compat`` and ``spectral lint manifest``.

Exit codes: 0 clean (warnings and waived findings allowed), 1 blocking findings, 2 usage or
internal error.  pglast is imported only when the compat lint runs, so ``spectral lint
manifest`` works without the ``lint`` extra.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from spectral_core.errors import SpectralError

__all__ = ["EXIT_CLEAN", "EXIT_FINDINGS", "EXIT_USAGE", "compat_main", "manifest_main"]

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
_FORMATS = ("text", "json", "github", "sarif")


def _migration_number(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a migration number like 0004, got {value!r}")
    return int(value)


def _compat_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spectral lint compat",
        description="Check that migrations not yet deployed keep the prior generation's code "
        "working (expand/contract).  Every file given is a migration not yet deployed unless a "
        "baseline option marks it deployed; objects the migrations do not create count as "
        "existing, populated tables of the prior generation.",
        epilog="Waive the compat rules of one file with a line comment "
        "`-- compat: breaking (reason: <why>)`; waived findings are still printed.  "
        "Exit 0 clean, 1 blocking findings, 2 usage or internal error.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="migration files or directories of NNNN_name.sql (default: migrations)",
    )
    base = p.add_mutually_exclusive_group()
    base.add_argument(
        "--deployed-through",
        metavar="NNNN",
        type=_migration_number,
        help="files numbered up to NNNN are deployed: replayed, not linted",
    )
    base.add_argument(
        "--git-base",
        metavar="REF",
        help="files present at git REF are deployed (edits/deletions are errors)",
    )
    base.add_argument(
        "--ledger", metavar="FILE", help="text file listing applied migrations, one per line"
    )
    p.add_argument(
        "--locking",
        action="store_true",
        help="also run the locking-hazard gate (waived only by "
        "`-- locking: accepted (reason: ...)`)",
    )
    p.add_argument("--format", choices=_FORMATS, default="text", help="output format")
    return p


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _fail(prog: str, message: str, err: TextIO, sarif_out: TextIO | None = None) -> int:
    print(f"{prog}: error: {message}", file=err)
    if sarif_out is not None:  # a SARIF consumer still gets a log, with the failed invocation
        from spectral_core.compat.report import sarif_failure

        sarif_out.write(sarif_failure(message, tool=prog, exit_code=EXIT_USAGE))
    return EXIT_USAGE


def compat_main(argv: list[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``spectral lint compat`` with *argv*; return the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    prog = "spectral lint compat"
    args = _parse(_compat_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        from spectral_core.compat.baseline import (
            mark_deployed_through,
            mark_from_git,
            mark_from_ledger,
        )
        from spectral_core.compat.engine import lint_files
        from spectral_core.compat.report import render, summary
        from spectral_core.compat.source import collect_files
    except ImportError as exc:
        return _fail(prog, f"{exc}; install the lint extra: pip install 'spectral[lint]'", err)
    try:
        files, dirs = collect_files(args.paths or ["migrations"])
        findings = []
        if args.deployed_through is not None:
            mark_deployed_through(files, args.deployed_through)
        elif args.git_base is not None:
            findings.extend(mark_from_git(files, dirs, args.git_base))
        elif args.ledger is not None:
            findings.extend(mark_from_ledger(files, args.ledger))
        results = lint_files(files, locking=args.locking)
    except SpectralError as exc:
        return _fail(prog, exc.message, err, out if args.format == "sarif" else None)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: report, exit 2
        message = f"internal error: {exc!r}"
        return _fail(prog, message, err, out if args.format == "sarif" else None)
    for r in results:
        findings.extend(r.findings)
    linted = [r for r in results if not r.deployed]
    statements = sum(r.statements for r in linted)
    blocking = any(f.severity.value == "error" for f in findings)
    code = EXIT_FINDINGS if blocking else EXIT_CLEAN
    out.write(
        render(
            findings,
            args.format,
            tool=prog,
            files=len(linted),
            statements=statements,
            exit_code=code,
        )
    )
    if args.format in ("text", "github"):
        print(f"{prog}: {summary(findings, len(linted), statements)}", file=err)
    return code


def _manifest_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spectral lint manifest",
        description="Check that deploy/manifest.toml maps every directory under src/ and apps/ "
        "to a declared deploy target or lists it under non_deployed, and names no directory "
        "that no longer exists.  Exit 0 clean, 1 findings, 2 usage error.",
    )
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.add_argument(
        "--manifest", default=None, help="manifest path (default: ROOT/deploy/manifest.toml)"
    )
    p.add_argument("--format", choices=_FORMATS, default="text", help="output format")
    return p


def manifest_main(argv: list[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``spectral lint manifest`` with *argv*; return the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    prog = "spectral lint manifest"
    args = _parse(_manifest_parser(), argv)
    if isinstance(args, int):
        return args
    from spectral_core.compat.manifest import lint_manifest
    from spectral_core.compat.report import render, summary

    try:
        findings = lint_manifest(args.root, args.manifest)
    except SpectralError as exc:
        return _fail(prog, exc.message, err)
    out.write(render(findings, args.format, tool=prog, files=1))
    if args.format in ("text", "github"):
        print(f"{prog}: {summary(findings, 1)}", file=err)
    return EXIT_FINDINGS if any(f.severity.value == "error" for f in findings) else EXIT_CLEAN
