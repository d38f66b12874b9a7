"""The handlers this worker binary runs.

The built-in ones are small platform handlers used by the demo and the tests:
``workers.platform.record`` stores each ``platform.record`` event's payload as a world fact.
Services embedding spectral_core register their own on a :class:`HandlerRegistry`.
"""

from __future__ import annotations

from typing import Any

import psycopg

from spectral_core import Event, HandlerRegistry, Settings


async def record(event: Event, conn: psycopg.AsyncConnection[Any]) -> None:
    """Append the event to core.event_log (the demo's visible effect)."""
    await conn.execute(
        "INSERT INTO core.event_log (outbox_id, generation, topic, idempotency_key, payload) "
        "VALUES (%s, %s, %s, %s, %s::jsonb)",
        (event.id, event.generation, event.topic, event.idempotency_key,
         psycopg.types.json.Jsonb(event.payload)),
    )


def build_registry(settings: Settings) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("workers.platform.record", "platform.record", record)
    return registry
