"""The handlers this worker binary runs.

The built-in ones are small platform handlers used by the demo and the tests:
``workers.platform.record`` appends each ``platform.record`` event to ``core.event_log``
(optionally holding its transaction for ``payload["sleep_ms"]``: a stand-in for slow work
in load and fault drills).  Services add their own handlers through
``SPECTRAL_WORKER_HANDLERS`` (``module:function`` entries, each called with the registry
and the settings).  ``workers.world_agent.observe`` hands ``world.observe`` events to the
World Agent (:mod:`spectral_core.agent`), whose runner the worker starts beside the
consumer.
Services embedding spectral_core register their own on a :class:`HandlerRegistry`.
"""

from __future__ import annotations

import importlib
from typing import Any

import anyio
import psycopg
from psycopg.types.json import Jsonb

from spectral_core import Event, HandlerRegistry, Settings, agent, current_runtime
from spectral_core.errors import ConfigError


async def record(event: Event, conn: psycopg.AsyncConnection[Any]) -> None:
    """Append the event to core.event_log (the demo's visible effect)."""
    await conn.execute(
        "INSERT INTO core.event_log (outbox_id, generation, handled_by, topic, idempotency_key, "
        "payload) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            event.id,
            event.generation,
            current_runtime().generation,
            event.topic,
            event.idempotency_key,
            Jsonb(event.payload),
        ),
    )
    delay_ms = event.payload.get("sleep_ms") if isinstance(event.payload, dict) else None
    if isinstance(delay_ms, int) and 0 < delay_ms <= 60_000:
        await anyio.sleep(delay_ms / 1000)


def build_registry(settings: Settings) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("workers.platform.record", "platform.record", record)
    agent.install(registry, settings)
    # the agent's outcomes land in the audit log too, so they are never unroutable
    registry.register("workers.platform.record_decided", agent.DECIDED_TOPIC, record)
    registry.register("workers.platform.record_failed", agent.FAILED_TOPIC, record)
    for entry in filter(None, (e.strip() for e in settings.worker_handlers.split(","))):
        module_name, _, attr = entry.partition(":")
        try:
            install = getattr(importlib.import_module(module_name), attr or "install")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"SPECTRAL_WORKER_HANDLERS: cannot load {entry!r}: {exc}") from None
        install(registry, settings)
    return registry
