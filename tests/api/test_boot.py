"""The spectral-api binary: fail-fast boot with the reserved exit codes, serve, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from spectral_core.errors import EXIT_CANNOT_START

from .conftest import free_port


def run_api(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    return subprocess.run(
        [sys.executable, "-m", "spectral_api"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_missing_generation_cannot_start(db_url: str) -> None:
    """Without SPECTRAL_GENERATION the API refuses to start with exit code 3."""
    proc = run_api({"SPECTRAL_DATABASE_URL": db_url})
    assert proc.returncode == EXIT_CANNOT_START
    assert "SPECTRAL_GENERATION" in proc.stderr


def test_unallocated_generation_cannot_start(db_url: str, generation: int) -> None:
    """A generation that was never allocated is exit code 3 (do not restart)."""
    proc = run_api({"SPECTRAL_DATABASE_URL": db_url, "SPECTRAL_GENERATION": str(generation + 7)})
    assert proc.returncode == EXIT_CANNOT_START
    assert "never allocated" in proc.stderr


def test_bad_settings_cannot_start(db_url: str, generation: int) -> None:
    """An unknown SPECTRAL_ variable or a malformed operator key is exit code 3."""
    base = {"SPECTRAL_DATABASE_URL": db_url, "SPECTRAL_GENERATION": str(generation)}
    assert run_api({**base, "SPECTRAL_NOPE": "1"}).returncode == EXIT_CANNOT_START
    proc = run_api({**base, "SPECTRAL_OPERATOR_KEYS": "not-base64!"})
    assert proc.returncode == EXIT_CANNOT_START


def test_unreachable_database_exits_1(generation: int) -> None:
    """A database that cannot be reached at boot is exit code 1 (retryable)."""
    port = free_port()
    proc = run_api(
        {
            "SPECTRAL_DATABASE_URL": f"postgresql://u@127.0.0.1:{port}/x",
            "SPECTRAL_GENERATION": str(generation),
            "SPECTRAL_DATABASE_CONNECT_TIMEOUT_S": "1",
        }
    )
    assert proc.returncode == 1, proc.stderr


def test_serves_health_and_stops_on_sigterm(db_url: str, generation: int) -> None:
    """The binary serves /health on the configured port and exits 0 on SIGTERM."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    env = {
        **clean,
        "SPECTRAL_DATABASE_URL": db_url,
        "SPECTRAL_GENERATION": str(generation),
        "SPECTRAL_API_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "spectral_api"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert resp.status_code == 200
        assert resp.json()["releaseId"] == str(generation)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert b"api.started" in out.encode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize(
    "module",
    ["spectral_core", "spectral_core.health", "spectral_core.modules", "spectral_core.tenants"],
)
def test_core_does_not_import_the_web_stack(module: str) -> None:
    """spectral_core stays framework-agnostic: importing it loads no starlette, uvicorn or
    spectral_api."""
    code = f"import {module}, sys; print(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert not {m for m in out if m.split(".")[0] in {"starlette", "uvicorn", "spectral_api"}}
