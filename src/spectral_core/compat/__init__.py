"""Migration compat lint and deploy-manifest coverage lint.

The engine other services use with :mod:`spectral_core`'s migration runner::

    from spectral_core.compat import collect_files, lint_files

    files, _ = collect_files(["migrations"])
    for result in lint_files(files):
        ...

It needs pglast (``pip install 'spectral[lint]'``).  Names are loaded on first use, so
importing this package, or running the manifest lint, does not import pglast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "RULES",
    "FileResult",
    "Finding",
    "Gate",
    "LintError",
    "Linter",
    "MigrationFile",
    "Rule",
    "SchemaModel",
    "Severity",
    "collect_files",
    "compat_main",
    "lint_files",
    "lint_manifest",
    "lint_sql",
    "manifest_main",
    "mark_deployed_through",
    "mark_from_git",
    "mark_from_ledger",
    "render",
]

_WHERE = {
    "RULES": "finding",
    "Finding": "finding",
    "Gate": "finding",
    "Rule": "finding",
    "Severity": "finding",
    "LintError": "errors",
    "FileResult": "engine",
    "Linter": "engine",
    "lint_files": "engine",
    "lint_sql": "engine",
    "MigrationFile": "source",
    "collect_files": "source",
    "SchemaModel": "schema",
    "compat_main": "cli",
    "manifest_main": "cli",
    "lint_manifest": "manifest",
    "render": "report",
    "mark_deployed_through": "baseline",
    "mark_from_git": "baseline",
    "mark_from_ledger": "baseline",
}

if TYPE_CHECKING:
    from spectral_core.compat.baseline import mark_deployed_through, mark_from_git, mark_from_ledger
    from spectral_core.compat.cli import compat_main, manifest_main
    from spectral_core.compat.engine import FileResult, Linter, lint_files, lint_sql
    from spectral_core.compat.errors import LintError
    from spectral_core.compat.finding import RULES, Finding, Gate, Rule, Severity
    from spectral_core.compat.manifest import lint_manifest
    from spectral_core.compat.report import render
    from spectral_core.compat.schema import SchemaModel
    from spectral_core.compat.source import MigrationFile, collect_files


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
