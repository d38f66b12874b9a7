"""External tools and optional modules a test needs (pgbouncer, node, a browser ...).

Locally a missing tool skips the test, so a laptop without PgBouncer can still run the
suite.  Under ``CI=true`` it fails the test instead: a green CI run must not have left a
check out because its tool was not installed (``.ci/run`` installs them).
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["in_ci", "missing_tool", "require_module", "require_tool"]


def in_ci() -> bool:
    """True when ``CI`` is set to a true value (``true``, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_tool(reason: str) -> NoReturn:
    """Skip the calling test (locally) or fail it (under ``CI=true``)."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true: a missing tool fails the run (.ci/run installs it)")
    pytest.skip(reason)


def require_tool(name: str, *paths: str) -> str:
    """The path of executable ``name`` (searched on PATH, then at ``paths``), or skip / fail.

    Call it from the test or fixture that needs the tool, never at import time, so that a
    missing tool is reported as that test's outcome.
    """
    found = shutil.which(name) or next(
        (p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)), None
    )
    if found is None:
        missing_tool(f"{name} is not installed")
    return found


def require_module(name: str) -> ModuleType:
    """Import optional module ``name`` (an extra's dependency), or skip / fail like a tool."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing_tool(f"python module {name} is not installed")
