"""Deployment generations: allocation (one round trip) and boot-time verification."""

from __future__ import annotations

from typing import Any

import psycopg

from .db._wrap import wrap_errors
from .errors import GenerationError, UnknownGeneration
from .sql import query

__all__ = [
    "allocate_generation",
    "allocate_generation_async",
    "require_generation",
    "require_generation_async",
]


def _params(version: str, note: str | None) -> dict[str, Any]:
    if not version or not version.strip():
        raise GenerationError("a deployment needs a non-empty version", field="version")
    return {"version": version.strip(), "note": note}


def allocate_generation(
    conn: psycopg.Connection[Any], version: str, note: str | None = None
) -> int:
    """Allocate the next generation: ``INSERT INTO core.deployments ... RETURNING generation``.

    Raises:
        GenerationError: empty version.
        DatabaseError: the insert failed.
    """
    params = _params(version, note)
    with wrap_errors():
        row = conn.execute(query("allocate_generation"), params).fetchone()
    assert row is not None
    return int(row[0])


async def allocate_generation_async(
    conn: psycopg.AsyncConnection[Any], version: str, note: str | None = None
) -> int:
    """Async twin of :func:`allocate_generation`."""
    params = _params(version, note)
    with wrap_errors():
        cur = await conn.execute(query("allocate_generation"), params)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def require_generation(conn: psycopg.Connection[Any], generation: int | None) -> int:
    """Return ``generation`` if it was allocated.

    Raises:
        GenerationError: ``generation`` is None.
        UnknownGeneration: it was never allocated.
    """
    if generation is None:
        raise GenerationError("SPECTRAL_GENERATION is not set")
    with wrap_errors():
        row = conn.execute(query("generation_exists"), {"generation": generation}).fetchone()
    if not (row and row[0]):
        raise UnknownGeneration(
            f"generation {generation} was never allocated (see `spectral deploy allocate`)",
            generation=generation,
        )
    return generation


async def require_generation_async(
    conn: psycopg.AsyncConnection[Any], generation: int | None
) -> int:
    """Async twin of :func:`require_generation`."""
    if generation is None:
        raise GenerationError("SPECTRAL_GENERATION is not set")
    with wrap_errors():
        cur = await conn.execute(query("generation_exists"), {"generation": generation})
        row = await cur.fetchone()
    if not (row and row[0]):
        raise UnknownGeneration(
            f"generation {generation} was never allocated (see `spectral deploy allocate`)",
            generation=generation,
        )
    return generation
