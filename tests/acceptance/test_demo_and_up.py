"""The README's run path: `spectral up --no-run` prepares the system and `spectral demo`
shows every piece working end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .procs import clean_env

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(db_url: str, tmp_path: Path) -> None:
    """spectral demo: events handled by the workers, decisions served, health printed."""
    out = subprocess.run(
        [sys.executable, "-m", "spectral_cli", "demo"],
        cwd=tmp_path,
        env=clean_env(SPECTRAL_DATABASE_URL=db_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "5/5 handled" in out.stdout
    assert '"decision": "approve"' in out.stdout and '"decision": "deny"' in out.stdout
    assert "HTTP 404" in out.stdout
    assert '"status": "pass"' in out.stdout


def test_up_prepares_embedded_database_and_generation(tmp_path: Path) -> None:
    """Without a database URL, `spectral up` starts the project-local embedded server,
    migrates and allocates a generation (here with --no-run), then stops the server."""
    env = clean_env()
    env.pop("SPECTRAL_DATABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "spectral_cli", "up", "--no-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "generation: 1" in out.stdout and "embedded PostgreSQL stopped" in out.stdout
    assert (tmp_path / ".spectral" / "pg" / "data" / "PG_VERSION").exists()
    again = subprocess.run(
        [sys.executable, "-m", "spectral_cli", "up", "--no-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert again.returncode == 0 and "generation: 2" in again.stdout  # data reused
