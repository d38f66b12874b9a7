"""A real primary + hot-standby pair from the embedded PostgreSQL binaries, for failover
drills: ``pg_basebackup -R`` makes a streaming replica, ``pg_ctl promote`` promotes it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from spectral_core.embedded import SYSTEM_USER, EmbeddedPostgres


def _as_server_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(SYSTEM_USER)
    return {"user": SYSTEM_USER, "group": entry.pw_gid, "extra_groups": []}


class Cluster:
    """``primary`` streams to ``standby`` (asynchronous replication, hot standby)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="spectral-cluster-"))
        # the servers' user enters our folder (the embedded server changes no permission
        # above its own folders: docs/reference/embedded-postgres.md)
        self.root.chmod(0o755)
        self.primary = EmbeddedPostgres(self.root / "primary", durable=False)
        self.primary.start()
        self.standby = EmbeddedPostgres(self.root / "standby", durable=False)
        data = self.standby.data
        data.mkdir(parents=True)
        self.standby.root.chmod(0o755)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SYSTEM_USER)
            for path in (self.standby.root, data):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        data.chmod(0o700)
        subprocess.run(
            [
                str(self.primary.bindir / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                "postgres",
                "-D",
                str(data),
                "-R",  # standby.signal + primary_conninfo
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            **_as_server_user(),
        )
        self.standby.start()

    def url(self, *, read_write: bool, connect_timeout: int = 2) -> str:
        """A multi-host URL naming the primary first, then the standby."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        query = f"connect_timeout={connect_timeout}"
        if read_write:
            query += "&target_session_attrs=read-write"
        return f"postgresql://postgres@{hosts}/postgres?{query}"

    def crash_primary(self) -> None:
        self.primary.stop(mode="immediate")

    def promote(self) -> None:
        subprocess.run(
            [str(self.standby.bindir / "pg_ctl"), "-D", str(self.standby.data), "-w", "promote"],
            check=True,
            capture_output=True,
            timeout=60,
            **_as_server_user(),
        )

    def wait_replayed(self) -> None:
        """Wait until the standby has replayed everything the primary wrote so far."""
        with psycopg.connect(self.primary.url, autocommit=True) as p:
            lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        with psycopg.connect(self.standby.url, autocommit=True) as s:
            for _ in range(600):
                done = s.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
                ).fetchone()[0]  # type: ignore[index]
                if done:
                    return
                s.execute("SELECT pg_sleep(0.05)")
        raise AssertionError("standby did not catch up")

    def destroy(self) -> None:
        self.standby.destroy()
        self.primary.destroy()
        shutil.rmtree(self.root, ignore_errors=True)
