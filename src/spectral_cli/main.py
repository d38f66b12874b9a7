"""``spectral``: the operator CLI.

Every verb has ``--help``; it exits 0 on success and non-zero with a one-line reason
otherwise.  Settings come from ``SPECTRAL_*`` variables, read once here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from spectral_core import Settings
from spectral_core.errors import SpectralError

from . import demo, deploy, migrate, modules, outbox, tenants, up

Command = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectral", description="spectral operator CLI")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (up, demo, migrate, deploy, outbox, tenants, modules):
        module.register(sub)
    lint = sub.add_parser(
        "lint", help="migration compat lint and deploy-manifest lint", add_help=False
    )
    lint.add_argument("what", choices=["compat", "manifest"], nargs="?")
    lint.add_argument("rest", nargs=argparse.REMAINDER)
    lint.set_defaults(run=_lint, needs_settings=False)
    return parser


def _lint(args: argparse.Namespace, _settings: Settings | None) -> int:
    from spectral_core.compat.cli import compat_main, manifest_main

    if args.what is None:
        print("usage: spectral lint {compat,manifest} [--help]", file=sys.stderr)
        return 2
    return (compat_main if args.what == "compat" else manifest_main)(list(args.rest))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        code: int = args.run(args, settings)
        return code
    except SpectralError as exc:
        print(f"spectral: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))
