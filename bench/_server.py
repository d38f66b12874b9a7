"""The database a bench script measures: the URL it was given, or a fresh embedded
PostgreSQL (durable, removed afterwards); migrated either way."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def migrated_server(url: str | None, prefix: str) -> Iterator[str]:
    """Yield the URL of a migrated database: ``url``, or a fresh embedded server whose
    folder starts with ``prefix`` (destroyed on exit)."""
    import psycopg

    from spectral_core.embedded import EmbeddedPostgres
    from spectral_core.migrate import run_migrations

    pg = None
    if url is None:
        pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix=prefix)))
        url = pg.start()
    try:
        with psycopg.connect(url, autocommit=True) as c:
            run_migrations(c)
        yield url
    finally:
        if pg is not None:
            pg.destroy()
