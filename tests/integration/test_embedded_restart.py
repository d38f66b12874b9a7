"""The embedded server starts again on its existing data after a parent folder lost its
search bit (every pytest session resets /tmp/pytest-of-<user> to 0700, which made a second
`spectral up` in a test's folder fail with "Permission denied")."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from spectral_core.embedded import EmbeddedPostgres


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only as root")
def test_restart_on_existing_data_after_parent_folder_lost_search_bit() -> None:
    """Start, stop, chmod the enclosing folder 0700, start again: the server comes up and
    answers (it failed: the server user could not reach its data folder)."""
    outer = Path(tempfile.mkdtemp(prefix="spectral-embedded-restart-"))
    pg = EmbeddedPostgres(outer / "pg", durable=False)
    try:
        pg.start()
        pg.stop()
        outer.chmod(0o700)
        url = pg.start()
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.destroy()
        shutil.rmtree(outer, ignore_errors=True)
