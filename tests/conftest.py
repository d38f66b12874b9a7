"""Shared fixtures.  Real PostgreSQL only: the embedded server (fsync off, tests only)
or ``SPECTRAL_TEST_DATABASE_URL``; every test gets its own database cloned from a
migrated template."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

pytest_plugins = ["tests.fix_db"]


@pytest.fixture(autouse=True)
def _logging_defaults() -> Iterator[None]:
    """Each test ends with structlog's defaults and without our root handler: an entrypoint
    run in-process (the CLI's ``main()``) configures logging for the whole process, and its
    level filter would hide the debug lines a later test captures."""
    root = logging.getLogger()
    level = root.level
    yield
    if structlog.is_configured():
        structlog.reset_defaults()
    for handler in [h for h in root.handlers if getattr(h, "_spectral", False)]:
        root.removeHandler(handler)
    root.setLevel(level)
