"""A handler installer for fault drills (loaded with SPECTRAL_WORKER_HANDLERS)."""

from __future__ import annotations

from typing import Any

import psycopg

from spectral_core import Event, HandlerRegistry, Settings, current_runtime


async def slow(event: Event, conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(
        "INSERT INTO core.event_log (outbox_id, generation, handled_by, topic, idempotency_key, "
        "payload) VALUES (%s, %s, %s, %s, %s, '{}')",
        (
            event.id,
            event.generation,
            current_runtime().generation,
            event.topic,
            event.idempotency_key,
        ),
    )
    await conn.execute("SELECT pg_sleep(%s)", (event.payload.get("sleep_s", 0.05),))


def install(registry: HandlerRegistry, settings: Settings) -> None:
    registry.register("tests.drill.slow", "drill.slow", slow)
