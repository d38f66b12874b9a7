# PYTHON_ARGCOMPLETE_OK
"""``spectral``: the operator CLI.

Every verb has ``--help``; it exits 0 on success and non-zero with a one-line reason
otherwise.  Settings come from ``SPECTRAL_*`` variables, read once here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

import argcomplete

from spectral_core import Settings, __version__
from spectral_core.errors import SpectralError
from spectral_core.logging import configure_logging

from . import agent, demo, deploy, env, migrate, modules, outbox, tenants, up

Command = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectral", description="spectral operator CLI")
    parser.add_argument("--version", action="version", version=f"spectral {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (up, env, demo, migrate, deploy, outbox, agent, tenants, modules):
        module.register(sub)
    lint = sub.add_parser(
        "lint",
        help="migration compat lint and deploy-manifest lint",
        description="The lints; each takes its own options (spectral lint compat --help).",
    )
    kinds = lint.add_subparsers(dest="lint_kind", required=True, metavar="LINT")
    # the options of each lint are parsed by the lint itself (spectral_core.compat.cli):
    # these parsers only route and list them
    kinds.add_parser("compat", help="expand/contract compat lint of migrations", add_help=False)
    kinds.add_parser("manifest", help="deploy-manifest coverage lint", add_help=False)
    return parser


def _lint(argv: list[str]) -> int:
    from spectral_core.compat.cli import compat_main, manifest_main

    return (compat_main if argv[0] == "compat" else manifest_main)(argv[1:])


class _CurrentStderr(io.TextIOBase):
    """``sys.stderr`` as it is at each write: loggers cached by structlog outlive a
    replaced ``sys.stderr`` (``main`` called in-process, as tests and embedding tools do)."""

    class _Buffer(io.RawIOBase):
        def write(self, data: Any) -> int:
            sys.stderr.flush()
            return sys.stderr.buffer.write(data)

        def flush(self) -> None:
            sys.stderr.buffer.flush()

    def __init__(self) -> None:
        self.buffer = self._Buffer()

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:  # a real command line: answer shell completion first (argcomplete)
        argcomplete.autocomplete(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "lint" and argv[1] in ("compat", "manifest"):
        return _lint(argv[1:])  # the lint's own parser, --help included
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        # results on stdout, log lines on stderr (in the format the settings ask for)
        # a TextIO by duck typing: write, flush, isatty and buffer are what logging uses
        stream = cast(TextIO, _CurrentStderr())
        # no logger caching: main() also runs in-process (tests, embedding tools), and a
        # logger cached under this configuration would keep it after main() returns
        configure_logging(
            fmt=settings.log_format, level=settings.log_level, stream=stream, cache_loggers=False
        )
        code: int = args.run(args, settings)
        return code
    except SpectralError as exc:
        print(f"spectral: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))
