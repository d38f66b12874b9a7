# PYTHON_ARGCOMPLETE_OK
"""The ``spectral`` console script.

``spectral lint compat|manifest ...`` goes straight to the lint, which needs neither the
database layer (psycopg) nor the CLI's other verbs: importing them cost most of a lint run
(0.33 s, issue 19).  Everything else, shell completion included, is :func:`spectral_cli.main.main`.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main() -> int:
    argv = sys.argv[1:]
    if (
        len(argv) >= 2
        and argv[0] == "lint"
        and argv[1] in ("compat", "manifest")
        and "_ARGCOMPLETE" not in os.environ
    ):
        from spectral_core.compat.cli import compat_main, manifest_main

        return (compat_main if argv[1] == "compat" else manifest_main)(argv[2:])
    from spectral_cli.main import main as full

    return full()
