"""The deploy-manifest coverage lint over ``deploy/manifest.toml``.

Every immediate subdirectory of the manifest's ``roots`` (default ``src`` and ``apps``, each
when present) must be mapped under ``[paths]`` to one or more declared ``[targets.*]`` or be
listed in ``non_deployed``; an entry naming a directory that no longer exists is stale.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from spectral_core.compat.errors import LintError
from spectral_core.compat.finding import RULES, Finding, Severity

__all__ = ["DEFAULT_MANIFEST", "lint_manifest"]

DEFAULT_MANIFEST = "deploy/manifest.toml"
_SKIP_SUFFIXES = (".egg-info", ".dist-info")


def _line_of(lines: list[str], needle: str) -> int:
    for i, line in enumerate(lines, 1):
        if needle in line:
            return i
    return 1


def _dirs(root: Path, roots: list[str]) -> list[str]:
    found = []
    for r in roots:
        base = root / r
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if (
                child.is_dir()
                and not child.name.startswith((".", "_"))
                and not child.name.endswith(_SKIP_SUFFIXES)
            ):
                found.append(f"{r.rstrip('/')}/{child.name}")
    return found


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def lint_manifest(root: str | Path = ".", manifest: str | Path | None = None) -> list[Finding]:
    """Check that the manifest covers every deployable directory of the repository at *root*.

    Raises:
        LintError: the manifest file does not exist or cannot be read.
    """
    root = Path(root)
    mpath = Path(manifest) if manifest is not None else root / DEFAULT_MANIFEST
    shown = str(mpath)
    try:
        text = mpath.read_text(encoding="utf-8")
    except OSError as exc:
        raise LintError(f"cannot read manifest {shown}: {exc}", path=shown) from exc
    lines = text.splitlines()

    def err(rule: str, message: str, line: int = 1) -> Finding:
        sev = Severity.ERROR if RULES[rule].blocking else Severity.WARNING
        return Finding(path=shown, line=line, column=1, rule=rule, severity=sev, message=message)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [err("manifest-invalid", f"not valid TOML: {exc}")]
    out: list[Finding] = []
    roots = _strings(data.get("roots", ["src", "apps"]))
    targets = data.get("targets", {})
    paths = data.get("paths", {})
    non_deployed = _strings(data.get("non_deployed", []))
    if roots is None:
        out.append(err("manifest-invalid", "`roots` must be a list of directory names"))
        roots = ["src", "apps"]
    if non_deployed is None:
        out.append(
            err(
                "manifest-invalid",
                "`non_deployed` must be a list of directories",
                _line_of(lines, "non_deployed"),
            )
        )
        non_deployed = []
    if not isinstance(targets, dict) or not all(
        isinstance(t, dict) and isinstance(t.get("kind"), str) and t["kind"]
        for t in targets.values()
    ):
        out.append(
            err(
                "manifest-invalid",
                'each [targets.<name>] table needs a `kind` (e.g. "container" or "pages")',
                _line_of(lines, "[targets"),
            )
        )
        targets = targets if isinstance(targets, dict) else {}
    if not isinstance(paths, dict):
        out.append(err("manifest-invalid", "[paths] must map directories to target names"))
        paths = {}

    declared = sorted(targets)
    for directory, value in paths.items():
        line = _line_of(lines, f'"{directory}"')
        names = _strings(value)
        if not names:
            out.append(
                err(
                    "manifest-invalid",
                    f"{directory}: the target must be a name or a non-empty list of names",
                    line,
                )
            )
            continue
        for name in names:
            if name not in targets:
                out.append(
                    err(
                        "manifest-unknown-target",
                        f"{directory} maps to unknown target "
                        f"{name!r}; declared targets: {', '.join(declared) or 'none'} "
                        f"(add [targets.{name}] with a kind, or fix the name)",
                        line,
                    )
                )
        if not (root / directory).is_dir():
            out.append(
                err(
                    "manifest-stale",
                    f"{directory} is mapped but does not exist; remove "
                    f'the line `"{directory}" = ...` from [paths]',
                    line,
                )
            )
        if directory in non_deployed:
            out.append(
                err(
                    "manifest-conflict",
                    f"{directory} is both mapped and non_deployed; keep one",
                    line,
                )
            )
    for directory in non_deployed:
        if not (root / directory).is_dir():
            out.append(
                err(
                    "manifest-stale",
                    f"{directory} is listed in non_deployed but does not "
                    "exist; remove it from non_deployed",
                    _line_of(lines, f'"{directory}"'),
                )
            )
    header = _line_of(lines, "[paths]")
    suggestion = declared[0] if declared else "<target>"
    for directory in _dirs(root, roots):
        if directory not in paths and directory not in non_deployed:
            out.append(
                err(
                    "manifest-unmapped",
                    f"{directory} is not in the manifest; add "
                    f'`"{directory}" = "{suggestion}"` under [paths] or list it in '
                    "non_deployed",
                    header,
                )
            )
    return sorted(out, key=lambda f: (f.line, f.rule, f.message))
