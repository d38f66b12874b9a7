"""``python -m lint manifest [ARGS...]``: the deploy-manifest coverage lint on this repository."""

from __future__ import annotations

import sys

from lint import REPO_ROOT
from spectral_core.compat.cli import manifest_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the manifest lint with ``--root`` defaulting to the repository root."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--root" not in argv and not any(a.startswith("--root=") for a in argv):
        argv = ["--root", str(REPO_ROOT), *argv]
    return manifest_main(argv)


if __name__ == "__main__":
    sys.exit(main())
