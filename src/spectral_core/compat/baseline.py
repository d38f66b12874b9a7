"""Which migrations are already deployed: by number, by a git base, or by a ledger file.

Deployed migrations are replayed into the schema model (their tables are known and populated)
and are not judged; every other file is a migration not yet deployed.
"""

from __future__ import annotations

from pathlib import Path

from spectral_core.compat.errors import LintError
from spectral_core.compat.finding import Finding, Severity
from spectral_core.compat.source import MigrationFile

__all__ = ["mark_deployed_through", "mark_from_git", "mark_from_ledger"]


def mark_deployed_through(files: list[MigrationFile], number: int) -> None:
    """Mark every file numbered <= *number* as deployed."""
    for f in files:
        f.deployed = f.number is not None and f.number <= number


def _error(path: str, rule: str, message: str, line: int = 1) -> Finding:
    return Finding(
        path=path, line=line, column=1, rule=rule, severity=Severity.ERROR, message=message
    )


def mark_from_ledger(files: list[MigrationFile], ledger: str) -> list[Finding]:
    """Mark the files the ledger lists as deployed.

    The ledger is a text file with one applied migration per line (file name, stem or number;
    ``#`` starts a comment; anything after the first word is ignored, e.g. a checksum).

    Returns:
        ``deleted-migration`` findings for ledger entries that match no file.

    Raises:
        LintError: the ledger cannot be read.
    """
    try:
        lines = Path(ledger).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LintError(f"cannot read ledger {ledger}: {exc}", path=ledger) from exc
    findings = []
    for lineno, raw in enumerate(lines, 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        entry = words[0]
        matched = [
            f
            for f in files
            if entry in (f.path.name, f.path.stem) or (entry.isdigit() and f.number == int(entry))
        ]
        for f in matched:
            f.deployed = True
        if not matched:
            findings.append(
                _error(
                    ledger,
                    "deleted-migration",
                    f"applied migration {entry} is "
                    "missing from the linted files (deleted or renamed)",
                    lineno,
                )
            )
    return findings


def _git(args: list[str], cwd: Path) -> str:
    import subprocess  # only --git-base needs it (start-up time)

    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise LintError(f"cannot run git: {exc}") from exc
    if proc.returncode != 0:
        raise LintError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _blob_id(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def mark_from_git(files: list[MigrationFile], dirs: list[Path], ref: str) -> list[Finding]:
    """Mark the files present at git *ref* as deployed.

    A deployed file whose content differs from *ref* is an edited migration; a ``.sql`` file
    present at *ref* in a linted directory but gone now is a deleted one.  The model replays
    the content at *ref*, which is what the database applied.

    Raises:
        LintError: not a git work tree, or *ref* is not a commit.
    """
    anchors = [f.path for f in files] + list(dirs)
    if not anchors:
        return []
    first = anchors[0].resolve()
    top = Path(
        _git(["rev-parse", "--show-toplevel"], first if first.is_dir() else first.parent).strip()
    ).resolve()
    try:
        _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top)
    except LintError as exc:
        raise LintError(f"--git-base {ref} is not a commit in {top}", ref=ref) from exc

    def rel(p: Path) -> str:
        try:
            return p.resolve().relative_to(top).as_posix()
        except ValueError as exc:
            raise LintError(f"{p} is outside the git work tree {top}", path=str(p)) from exc

    reldirs = sorted({rel(f.path.parent) for f in files} | {rel(d) for d in dirs})
    listing = _git(["ls-tree", "-r", "--full-tree", ref, "--", *reldirs], top)
    at_ref: dict[str, str] = {}
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            at_ref[path] = parts[2]
    findings = []
    for f in files:
        blob = at_ref.get(rel(f.path))
        if blob is None:
            continue
        f.deployed = True
        if _blob_id(f.path.read_bytes()) != blob:
            findings.append(
                _error(
                    f.display,
                    "edited-migration",
                    f"{f.path.name} is deployed "
                    f"(present at {ref}) but was edited; migrations are "
                    "forward-only: revert it and add a new migration",
                )
            )
            f.text = _git(["show", f"{ref}:{rel(f.path)}"], top)
    present = {rel(f.path) for f in files}
    for d in dirs:
        prefix = rel(d).rstrip("/") + "/"
        for path in sorted(at_ref):
            if path.startswith(prefix) and path.endswith(".sql") and "/" not in path[len(prefix) :]:
                if path not in present:
                    name = path[len(prefix) :]
                    findings.append(
                        _error(
                            str(d / name),
                            "deleted-migration",
                            f"{name} is deployed (present at {ref}) but was "
                            "deleted or renamed; migrations are forward-only",
                        )
                    )
    return findings
