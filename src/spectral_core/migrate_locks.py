"""Lock-safe migrations under traffic (ADR 0019): a short ``lock_timeout`` per file,
bounded retries with backoff, and who blocks a waiting statement.

A migration statement that waits for a lock (``ALTER TABLE`` behind a long reader) makes
every later writer of that table queue behind it.  So each transactional file runs with
``SET LOCAL lock_timeout``; when it times out, its transaction rolls back (nothing of the
file is applied), the writers proceed, and the file is retried after a backoff, up to
``retries`` times.  While a statement waits, a second connection reads the blocking
sessions (``pg_blocking_pids`` joined with ``pg_stat_activity``) for the operator.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from .errors import MigrationError
from .sql import query

__all__ = [
    "Blocker",
    "LockPolicy",
    "LockRetry",
    "LockWait",
    "MigrationEvent",
    "Observer",
    "lock_timeout_header",
    "watch_blockers",
]

#: per-file override, in the file's leading comment lines: ``-- spectral: lock-timeout 10s``
_HEADER = re.compile(r"^--\s*spectral:\s*lock[-_]timeout\b(?P<rest>.*)$", re.IGNORECASE)
_VALUE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s)\s*$")


@dataclass(frozen=True, slots=True)
class LockPolicy:
    """How long each statement of a file may wait for a lock, and how often to retry."""

    timeout_s: float = 2.0
    retries: int = 10
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0 or self.retries < 0:
            raise MigrationError("lock policy: timeout_s must be > 0 and retries >= 0")

    def backoff(self, retry: int) -> float:
        """The pause before retry number ``retry`` (1-based): doubling, capped."""
        return float(min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(retry - 1, 30)))


@dataclass(frozen=True, slots=True)
class Blocker:
    """A session holding (or queued ahead for) the lock a migration statement waits for."""

    pid: int
    state: str | None
    query_start: datetime | None
    xact_start: datetime | None
    application_name: str | None

    def describe(self) -> str:
        parts = [f"pid {self.pid}", self.state or "state unknown"]
        if self.xact_start is not None:
            parts.append(f"transaction since {self.xact_start.isoformat(timespec='seconds')}")
        if self.query_start is not None:
            parts.append(f"query started {self.query_start.isoformat(timespec='seconds')}")
        if self.application_name:
            parts.append(f"application {self.application_name!r}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class LockWait:
    """A statement of ``migration`` has been waiting for a lock that ``blockers`` hold."""

    migration_set: str
    migration: str
    attempt: int
    attempts: int
    blockers: tuple[Blocker, ...]

    def describe(self) -> str:
        who = "; ".join(b.describe() for b in self.blockers)
        return (
            f"{self.migration_set}/{self.migration} waits for a lock "
            f"(attempt {self.attempt}/{self.attempts}), blocked by {who}"
        )


@dataclass(frozen=True, slots=True)
class LockRetry:
    """``migration`` hit its lock timeout; nothing of it was applied; retried after a pause."""

    migration_set: str
    migration: str
    attempt: int
    attempts: int
    timeout_s: float
    delay_s: float

    def describe(self) -> str:
        return (
            f"{self.migration_set}/{self.migration}: lock_timeout ({self.timeout_s:g}s) hit on "
            f"attempt {self.attempt}/{self.attempts}, rolled back (nothing of it applied); "
            f"retrying in {self.delay_s:g}s"
        )


MigrationEvent = LockWait | LockRetry


def lock_timeout_header(name: str, sql: str) -> float | None:
    """The per-file ``-- spectral: lock-timeout <N>s|<N>ms`` override, if the file's
    leading comment lines carry one.

    Raises:
        MigrationError: a malformed or non-positive value.
    """
    for line in sql.splitlines():
        text = line.strip()
        if not text:
            continue
        if not text.startswith("--"):
            break
        m = _HEADER.match(text)
        if m is None:
            continue
        v = _VALUE.match(m["rest"])
        value = float(v["n"]) / (1000.0 if v["unit"] == "ms" else 1.0) if v else 0.0
        if not value > 0:
            raise MigrationError(
                f"{name}: bad lock-timeout header {text!r} "
                "(expected `-- spectral: lock-timeout 5s` or `... 500ms`, above zero)",
                file=name,
            )
        return value
    return None


def pg_duration(seconds: float) -> str:
    """A ``lock_timeout`` value in whole milliseconds (at least 1)."""
    return f"{max(1, round(seconds * 1000))}ms"


class Observer:
    """A second connection, opened on first use and kept for the run, that reads who
    blocks a waiting migration statement.  Used by one watcher thread at a time."""

    def __init__(self, factory: Callable[[], psycopg.Connection[Any]]) -> None:
        self._factory = factory
        self._conn: psycopg.Connection[Any] | None = None

    def blockers(self, pid: int) -> tuple[Blocker, ...]:
        if self._conn is None or self._conn.closed:
            self._conn = self._factory()
            self._conn.autocommit = True
        try:
            rows = self._conn.execute(query("select_lock_blockers"), {"pid": pid}).fetchall()
        except Exception:
            self.close()  # reopened on the next use
            raise
        return tuple(Blocker(*row) for row in rows)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextmanager
def watch_blockers(
    observer: Observer | None,
    pid: int,
    report: Callable[[tuple[Blocker, ...]], None],
    *,
    after_s: float = 0.1,
    every_s: float = 0.2,
) -> Iterator[None]:
    """While the block runs, read who blocks backend ``pid`` through ``observer`` and
    ``report`` each new set of blockers (a thread; the block's statement runs in the
    caller's).  Without an observer nothing is watched; a failing observer is ignored
    (the report is a courtesy, the lock timeout is the guarantee)."""
    if observer is None:
        yield
        return
    stop = threading.Event()

    def run() -> None:
        seen: tuple[int, ...] = ()
        if stop.wait(after_s):
            return
        try:
            while not stop.is_set():
                blockers = observer.blockers(pid)
                pids = tuple(b.pid for b in blockers)
                if blockers and pids != seen:
                    seen = pids
                    report(blockers)
                stop.wait(every_s)
        except Exception:  # noqa: BLE001,S110 - see the docstring
            pass

    thread = threading.Thread(target=run, name="spectral-migrate-lock-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
