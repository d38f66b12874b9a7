"""A PostgreSQL server of the test's own (not the session's shared one), for tests that
take the database away (stop it, freeze it, drop the database) and for process-tree
checks (is a pid still alive, which processes belong to a server)."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from spectral_core.embedded import EmbeddedPostgres
from spectral_core.generations import allocate_generation
from spectral_core.migrate import run_migrations


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OwnServer:
    pg: EmbeddedPostgres
    admin_url: str
    url: str
    generation: int

    def postmaster_pid(self) -> int:
        return int((self.pg.data / "postmaster.pid").read_text().splitlines()[0])

    def server_pids(self) -> list[int]:
        """The postmaster and its backends / auxiliary processes (this server only)."""
        pm = self.postmaster_pid()
        return [pm, *children_of(pm)]

    def freeze(self) -> None:
        """SIGSTOP every process of this server: connections stay open but nothing
        answers (a hung host or a network cut without FIN/RST)."""
        for pid in self.server_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if not (self.pg.data / "postmaster.pid").exists():
            return
        for pid in self.server_pids():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.pg.stop(mode="immediate")

    def drop(self) -> None:
        """Drop the database (its sessions are terminated; reconnects are refused)."""
        name = psycopg.conninfo.conninfo_to_dict(self.url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(str(name)))
            )


@contextmanager
def own_server() -> Iterator[OwnServer]:
    """A fresh server with a migrated database ``app`` and one allocated generation.

    Its folder is not under pytest's ``tmp_path``: every pytest session resets
    ``/tmp/pytest-of-<user>`` to mode 0700, which locks the server's user out of it.
    """
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="spectral-own-pg-")), durable=False)
    admin_url = pg.start()
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE app")
        url = make_conninfo(admin_url, dbname="app")
        with psycopg.connect(url, autocommit=True) as conn:
            run_migrations(conn)
            generation = allocate_generation(conn, "lifetimes-1")
        server = OwnServer(pg, admin_url, url, generation)
        try:
            yield server
        finally:
            server.thaw()
    finally:
        pg.destroy()
