"""Helpers to run the real binaries as subprocesses against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

FAST = {
    "SPECTRAL_POLL_INTERVAL_S": "0.5",
    "SPECTRAL_HEARTBEAT_INTERVAL_S": "0.5",
    "SPECTRAL_WORKER_STALE_AFTER_S": "3",
    "SPECTRAL_REAPER_INTERVAL_S": "0.5",
    "SPECTRAL_RECONNECT_BACKOFF_CAP_S": "0.5",
    "SPECTRAL_SHUTDOWN_GRACE_S": "5",
    "SPECTRAL_OUTBOX_BACKOFF_BASE_S": "0.05",
    "SPECTRAL_OUTBOX_BACKOFF_CAP_S": "0.2",
    "SPECTRAL_DATABASE_CONNECT_TIMEOUT_S": "3",
    "SPECTRAL_LOG_FORMAT": "json",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    env.update(FAST)
    env.update(extra)
    return env


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in wait()
        self.p = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def signal(self, sig: int) -> None:
        self.p.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is not None:
                self._log.close()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()
        self._log.close()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def start_workers(db_url: str, generation: int | None, log: Path, **extra: str) -> Proc:
    env = clean_env(SPECTRAL_DATABASE_URL=db_url, **extra)
    if generation is not None:
        env["SPECTRAL_GENERATION"] = str(generation)
    return Proc([sys.executable, "-m", "spectral_workers"], env, log)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def scalar(url: str, sql: str, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(sql, params).fetchone()
        return row[0] if row else None


def start_api(db_url: str, generation: int, port: int, log: Path, **extra: str) -> Proc:
    env = clean_env(
        SPECTRAL_DATABASE_URL=db_url,
        SPECTRAL_GENERATION=str(generation),
        SPECTRAL_API_PORT=str(port),
        **extra,
    )
    return Proc([sys.executable, "-m", "spectral_api"], env, log)


def health_status(port: int) -> int | None:
    """The HTTP status of ``GET /health`` (None when nothing answers)."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
    except httpx.HTTPError:
        return None
