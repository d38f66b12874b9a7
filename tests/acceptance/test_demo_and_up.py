"""The README's run path: `spectral up --no-run` prepares the system and `spectral demo`
shows every piece working end to end."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .procs import Proc, clean_env, wait_for

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
    # the tenant's key is printed whole (it used to be cut short under "shown once")
    assert re.search(r"^\s+sk_demo_[A-Za-z0-9_-]{43}$", out.stdout, re.M), out.stdout[:3000]
    assert "sk_demo_" not in out.stdout.replace("sk_demo_", "", 1)  # and only once


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


def _health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _printed_url(stdout: str) -> str:
    return re.search(r"^export SPECTRAL_DATABASE_URL=(\S+)$", stdout, re.M).group(1)  # type: ignore[union-attr]


def test_up_prints_how_to_reach_it_and_keeps_its_port(tmp_path: Path) -> None:
    """`spectral up` prints the database URL, the exact export lines for a second
    terminal and the operator console's URL, and the embedded server keeps its port from
    one run to the next (it used to change every run, so the printed URL went stale)."""
    env = clean_env()
    runs = [
        subprocess.run(
            [sys.executable, "-m", "spectral_cli", "up", "--no-run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        for _ in range(2)
    ]
    for n, run in enumerate(runs, 1):
        assert run.returncode == 0, run.stderr[-2000:]
        assert re.search(rf"^\s*export SPECTRAL_GENERATION={n}$", run.stdout, re.M)
    first, second = (_printed_url(r.stdout.replace("  export", "export")) for r in runs)
    assert first == second and first.startswith("postgresql://")
    # the operator console's page (issue 18), on the API's address
    assert re.search(r"^console: http://127\.0\.0\.1:\d+/console/ ", runs[0].stdout, re.M)


def test_env_points_a_second_shell_at_a_running_up(tmp_path: Path) -> None:
    """While `spectral up` runs, `eval "$(spectral env)"` in another shell reaches its
    database and generation; `spectral env` says clearly when no `spectral up` runs here.
    `spectral up` applies the apps' migration sets (SPECTRAL_MIGRATION_DIRS) after
    spectral's own, as `spectral migrate` does."""
    app = tmp_path / "shop_migrations"
    app.mkdir()
    (app / "0001_orders.sql").write_text("CREATE SCHEMA shop; CREATE TABLE shop.orders (id int);")
    env = clean_env(SPECTRAL_HOME_DIR=str(tmp_path / ".spectral"), SPECTRAL_MIGRATION_DIRS=str(app))
    none = subprocess.run(
        [sys.executable, "-m", "spectral_cli", "env"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert none.returncode == 3 and "no `spectral up` is running" in none.stderr
    assert none.stdout == ""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = Proc(
        [sys.executable, "-m", "spectral_cli", "up"],
        dict(env, SPECTRAL_API_PORT=str(port)),
        tmp_path / "up.log",
    )
    try:
        wait_for(lambda: (tmp_path / ".spectral" / "up.json").exists(), 120, "up.json")
        shell = subprocess.run(
            [
                "bash",
                "-c",
                f'eval "$({shlex.quote(sys.executable)} -m spectral_cli env)" && '
                f"{shlex.quote(sys.executable)} -m spectral_cli deploy status --json && "
                'echo "gen=$SPECTRAL_GENERATION"',
            ],
            cwd=tmp_path,
            env={k: v for k, v in env.items() if not k.startswith("SPECTRAL_DATABASE")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shell.returncode == 0, shell.stderr[-2000:]
        assert shell.stdout.rstrip().endswith("gen=1")
        status = json.loads(shell.stdout.rstrip().rpartition("\n")[0])
        assert 1 in [g["generation"] for g in status["generations"]]
        shop = [m for m in status["migrations"] if m["set"] == "shop_migrations"]
        assert shop and shop[0]["applied"] == 1 and shop[0]["state"] == "at head", shop
        # out of the box every check passes: `spectral up` made a local operator key pair
        # (private half 0600 under .spectral/) and gave the API its public half
        last: list[object] = []

        def passing() -> bool:
            last[:] = [_health(port)]
            return isinstance(last[0], dict) and last[0]["status"] == "pass"

        try:
            wait_for(passing, 60, "/health status pass once the workers are live")
        except AssertionError:
            raise AssertionError(json.dumps(last, indent=1)) from None
        key = tmp_path / ".spectral" / "operator.key"
        assert key.stat().st_mode & 0o077 == 0
        assert "spectral modules approve" in up.output()
    finally:
        up.signal(signal.SIGINT)
        try:
            up.wait(60)
        finally:
            up.kill()
    assert not (tmp_path / ".spectral" / "up.json").exists()  # removed when up stops
