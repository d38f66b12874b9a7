"""Database fixtures: one server per session, a migrated template, a clone per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from spectral_core import Settings, open_pools
from spectral_core.db import Database
from spectral_core.embedded import EmbeddedPostgres
from spectral_core.generations import allocate_generation
from spectral_core.migrate import run_migrations


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


class PgServer:
    """The test server: an admin URL plus (when embedded) a handle to restart it."""

    def __init__(self, url: str, embedded: EmbeddedPostgres | None) -> None:
        self.url = url
        self.embedded = embedded

    def url_for(self, dbname: str) -> str:
        return make_conninfo(self.url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("SPECTRAL_TEST_DATABASE_URL")
    if external:
        yield PgServer(external, None)
        return
    root = Path(tempfile.mkdtemp(prefix="spectral-test-pg-"))
    server = EmbeddedPostgres(root, durable=False)
    url = server.start()
    try:
        yield PgServer(url, server)
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> Iterator[str]:
    name = f"spectral_tpl_{os.getpid()}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server.url_for(name), autocommit=True) as conn:
        run_migrations(conn)
    yield name
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _clone(pg_server: PgServer, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        if template:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop(pg_server: PgServer, name: str) -> None:
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def db_url(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    name = _clone(pg_server, template_db)
    yield pg_server.url_for(name)
    _drop(pg_server, name)


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with no schema at all (migration tests)."""
    name = _clone(pg_server, None)
    yield pg_server.url_for(name)
    _drop(pg_server, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def generation(conn: psycopg.Connection[Any]) -> int:
    """A freshly allocated generation in the test database."""
    return allocate_generation(conn, "test-1")


@pytest.fixture
def settings(db_url: str, generation: int) -> Settings:
    return Settings(
        database_url=db_url,
        generation=generation,
        poll_interval_s=0.2,
        heartbeat_interval_s=0.5,
        worker_stale_after_s=3.0,
        reaper_interval_s=0.5,
        outbox_backoff_base_s=0.01,
        outbox_backoff_cap_s=0.05,
        database_pool_max=8,
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    async with open_pools(settings) as database:
        yield database
