"""Which database the CLI talks to: SPECTRAL_DATABASE_URL, else the project's embedded one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from spectral_core import Settings
from spectral_core.db import connect_kwargs
from spectral_core.embedded import EmbeddedPostgres
from spectral_core.errors import ConfigError
from spectral_core.generations import require_generation


def embedded_root(settings: Settings) -> Path:
    """Project-local folder of the embedded server used by ``spectral up``."""
    return Path(settings.home_dir) / "pg"


def resolve_url(settings: Settings) -> str:
    """The configured URL, or the running embedded server of ``spectral up``."""
    if settings.database_url:
        return settings.database_url
    server = EmbeddedPostgres(embedded_root(settings))
    if server.is_running():
        return server.start()
    raise ConfigError(
        "SPECTRAL_DATABASE_URL is not set and no embedded server is running "
        "here (start one with `spectral up`)"
    )


def connect(settings: Settings) -> psycopg.Connection[Any]:
    url = resolve_url(settings)
    kwargs = connect_kwargs()
    try:
        return psycopg.connect(
            url, connect_timeout=int(settings.database_connect_timeout_s), **kwargs
        )
    except psycopg.OperationalError as exc:
        from spectral_core.db._wrap import translate

        raise translate(exc) from exc


def allocated(conn: psycopg.Connection[Any], generation: int) -> int:
    """``generation`` if it was allocated; else UnknownGeneration (exit 3), so a verb that
    names a generation never acts on, or reports about, a typo."""
    return require_generation(conn, generation)
