"""The supervisor killed with SIGKILL (issue 16.4): its API and worker children notice
that their parent is gone and stop cleanly, and `spectral up` leaves no PostgreSQL
server behind.  Real processes, a real SIGKILL, real process-table checks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from spectral_core.embedded import EmbeddedPostgres

from .own_pg import alive, children_of, free_port
from .procs import Proc, clean_env, scalar, wait_for

pytestmark = pytest.mark.slow

SHIM = Path(__file__).resolve().parents[2] / "shims" / "app_supervisor.py"
GRACE_S = 4.0
#: the children poll their parent every 0.5 s and stop within their grace; the server
#: drains its sessions first.  Generous: the machine is shared.
GONE_WITHIN_S = 30.0


def child_pids(p: Proc) -> dict[str, int]:
    pids = {}
    for line in p.output().splitlines():
        if line.startswith("{") and "supervisor.child_started" in line:
            e = json.loads(line)
            pids[e["child"]] = int(e["pid"])
    return pids


def wait_all_gone(pids: Iterable[int], what: str) -> float:
    t0 = time.monotonic()
    pids = list(pids)
    wait_for(lambda: not any(alive(p) for p in pids), GONE_WITHIN_S, what, step=0.1)
    return time.monotonic() - t0


def kill_leftovers(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def both_started(p: Proc) -> bool:
    out = p.output()
    return "worker.started" in out and "api.started" in out


def test_children_stop_cleanly_when_the_supervisor_is_killed(
    db_url: str, generation: int, tmp_path: Path
) -> None:
    """spectral-app SIGKILLed: the API and the workers (their own process groups, so the
    SIGKILL does not reach them) see their parent pid change and stop as on SIGTERM:
    gone within the bound, the worker marked `exited`, each logged `parent_gone`."""
    env = clean_env(
        SPECTRAL_DATABASE_URL=db_url,
        SPECTRAL_GENERATION=str(generation),
        SPECTRAL_API_PORT=str(free_port()),
        SPECTRAL_SHUTDOWN_GRACE_S=str(GRACE_S),
    )
    sup = Proc([sys.executable, str(SHIM)], env, tmp_path / "app.log")
    pids: dict[str, int] = {}
    try:
        wait_for(lambda: both_started(sup), 90, "both children started")
        pids = child_pids(sup)
        assert set(pids) == {"api", "workers"}
        sup.signal(signal.SIGKILL)
        sup.wait(10)
        took = wait_all_gone(pids.values(), "the orphaned children to exit")
        out = sup.output()
        assert "worker.parent_gone" in out and "api.parent_gone" in out, out[-3000:]
        assert "worker.stopped" in out and "api.stopped" in out
        assert "process.forced_exit" not in out
        assert scalar(db_url, "SELECT state FROM core.workers") == "exited"
        print(f"children gone {took:.1f}s after the supervisor's SIGKILL")
    finally:
        kill_leftovers(pids.values())
        sup.kill()


def test_spectral_up_killed_leaves_no_process_and_no_database_server() -> None:
    """`spectral up` (embedded PostgreSQL, supervisor in-process) SIGKILLed: the API, the
    workers, the guardian and the postmaster with all its processes are gone within the
    bound; the workers still stopped cleanly (the server drains its sessions first)."""
    # not under pytest's tmp_path: the server's user must be able to reach its folder
    cwd = Path(tempfile.mkdtemp(prefix="spectral-up-kill-"))
    env = clean_env(
        SPECTRAL_API_PORT=str(free_port()),
        SPECTRAL_SHUTDOWN_GRACE_S=str(GRACE_S),
        SPECTRAL_HOME_DIR=str(cwd / ".spectral"),
    )
    up = Proc([sys.executable, "-m", "spectral_cli", "up"], env, cwd / "up.log")
    pg_root = cwd / ".spectral" / "pg"
    tracked: list[int] = []
    try:
        wait_for(lambda: both_started(up), 180, "spectral up serving")
        children = child_pids(up)
        postmaster = int((pg_root / "data" / "postmaster.pid").read_text().split()[0])
        server = [postmaster, *children_of(postmaster)]
        guardian = [p for p in children_of(up.p.pid) if p not in children.values()]
        tracked = [*children.values(), *guardian, *server]
        up.signal(signal.SIGKILL)
        up.wait(10)
        took = wait_all_gone(tracked, "children, guardian and PostgreSQL to exit")
        out = up.output()
        assert "worker.stopped" in out and "api.stopped" in out, out[-3000:]
        assert not (pg_root / "data" / "postmaster.pid").exists()
        print(f"everything gone {took:.1f}s after spectral up's SIGKILL")
    finally:
        kill_leftovers(p for p in tracked if p not in _server_pids(pg_root))
        _stop_server(pg_root)
        up.kill()
        shutil.rmtree(cwd, ignore_errors=True)


def _server_pids(pg_root: Path) -> list[int]:
    pidfile = pg_root / "data" / "postmaster.pid"
    if not pidfile.exists():
        return []
    pm = int(pidfile.read_text().split()[0])
    return [pm, *children_of(pm)]


def _stop_server(pg_root: Path) -> None:
    if (pg_root / "data" / "postmaster.pid").exists():
        server: Any = EmbeddedPostgres(pg_root)
        server.user = "embedded_postgres" if os.geteuid() == 0 else None
        server.stop(mode="immediate")
