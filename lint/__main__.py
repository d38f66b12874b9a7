"""``python -m lint {compat,manifest,ci} [ARGS...]``.

``rules`` prints the rule reference generated from the registry; ``rules --write`` puts it in
``docs/reference/lint.md`` and ``rules --check`` exits 1 when that file has drifted.

``ci`` runs both lints with the CI defaults: the compat lint over ``migrations/`` with the
deployed baseline taken from the base of the change (``--git-base HEAD~1``: CI runs on a clone
of main where the change is the last commit), then the manifest lint.  When HEAD has no parent
(the first commit) every migration is new.  A shallow clone without the parent fails (exit 2)
rather than silently linting against the wrong baseline: fetch with depth >= 2.
Pass ``--git-base REF`` to ``ci`` to use another base, ``--format github`` for annotations.
Exit: the worst of the two lints (2 > 1 > 0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable

from lint import REPO_ROOT

__all__ = ["ci_main", "main"]

_USAGE = "usage: python -m lint {compat,manifest,ci,rules} [ARGS...]"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
    )


def default_base() -> str | None:
    """``HEAD~1`` when HEAD has a parent; None when HEAD is a root commit.

    Raises:
        SystemExit: the clone is shallow and the parent is missing (exit 2).
    """
    if _git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}").returncode == 0:
        return "HEAD~1"
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        print(
            "python -m lint ci: error: shallow clone without HEAD~1; fetch with depth >= 2 "
            "or pass --git-base REF",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return None


def ci_main(argv: list[str]) -> int:
    """Run the compat lint (CI baseline) and the manifest lint; return the worst exit code."""
    from lint.compat import main as compat
    from lint.manifest import main as manifest

    p = argparse.ArgumentParser(
        prog="python -m lint ci",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--git-base", metavar="REF", help="deployed baseline (default: HEAD~1)")
    p.add_argument("--format", choices=("text", "json", "github", "sarif"), default="text")
    p.add_argument("--locking", action="store_true", help="also run the locking gate")
    try:
        args = p.parse_args(argv)
        base = args.git_base or default_base()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    compat_argv = ["--format", args.format, os.path.relpath(REPO_ROOT / "migrations")]
    if base is not None:
        compat_argv[:0] = ["--git-base", base]
    else:
        print("python -m lint ci: HEAD has no parent; every migration is new", file=sys.stderr)
    if args.locking:
        compat_argv.insert(0, "--locking")
    codes = [compat(compat_argv), manifest(["--format", args.format])]
    return max(codes)


def rules_main(argv: list[str]) -> int:
    """Print, write (``--write``) or check (``--check``) the generated rule reference."""
    from spectral_core.compat.ruledoc import render_examples, render_rules, replace_section

    doc_path = REPO_ROOT / "docs" / "reference" / "lint.md"
    if not argv:
        print(render_rules() + "\n\n" + render_examples())
        return 0
    if argv not in (["--write"], ["--check"]):
        print("usage: python -m lint rules [--write | --check]", file=sys.stderr)
        return 2
    doc = doc_path.read_text(encoding="utf-8")
    new = replace_section(doc)
    if argv == ["--check"]:
        if new != doc:
            print(f"{doc_path}: rule reference out of date; run python -m lint rules --write")
            return 1
        return 0
    doc_path.write_text(new, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a lint."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE + "\n\n" + (__doc__ or ""), file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    cmd, rest = argv[0], argv[1:]
    run: Callable[[list[str]], int]
    if cmd == "compat":
        from lint.compat import main as run
    elif cmd == "manifest":
        from lint.manifest import main as run
    elif cmd == "ci":
        run = ci_main
    elif cmd == "rules":
        run = rules_main
    else:
        print(f"{_USAGE}\npython -m lint: error: unknown command {cmd!r}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
