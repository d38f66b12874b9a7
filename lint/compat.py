"""``python -m lint compat [ARGS...]``: the compat lint with ``migrations/`` as the default path.

With no baseline option, every file is a migration not yet deployed; ``python -m lint ci``
adds the CI baseline (the parent commit).
"""

from __future__ import annotations

import os
import sys

from lint import REPO_ROOT
from spectral_core.compat.cli import compat_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the compat lint; PATHS default to the repository's ``migrations/``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(not a.startswith("-") for a in _positionals(argv)):
        argv.append(os.path.relpath(REPO_ROOT / "migrations"))
    return compat_main(argv)


def _positionals(argv: list[str]) -> list[str]:
    """The arguments that are paths (skipping option values)."""
    takes_value = {"--deployed-through", "--git-base", "--ledger", "--format"}
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in takes_value:
            skip = True
        elif not a.startswith("-"):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
