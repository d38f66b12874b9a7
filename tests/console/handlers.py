"""Handler installers for the console's scenarios (loaded with SPECTRAL_WORKER_HANDLERS).

- ``console.poison`` fails while the file named in the payload's ``heal`` does not exist (a
  broken handler) and records the event once it does (the handler was healed).
- ``console.gate`` waits (up to 120 s) until the file named in the payload's ``gate``
  exists, then records the event: a backlog that drains exactly when the test says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import psycopg

from spectral_core import Event, HandlerRegistry, Settings, current_runtime

GATE_MAX_S = 120.0


async def _record(event: Event, conn: psycopg.AsyncConnection[Any]) -> None:
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


async def poison(event: Event, conn: psycopg.AsyncConnection[Any]) -> None:
    if not Path(str(event.payload.get("heal", ""))).exists():
        raise RuntimeError("poisoned: the handler cannot process this event yet")
    await _record(event, conn)


async def gate(event: Event, conn: psycopg.AsyncConnection[Any]) -> None:
    path = Path(str(event.payload.get("gate", "")))
    with anyio.move_on_after(GATE_MAX_S):
        while not path.exists():
            await anyio.sleep(0.1)
    await _record(event, conn)


def install(registry: HandlerRegistry, settings: Settings) -> None:
    registry.register("tests.console.poison", "console.poison", poison)
    registry.register("tests.console.gate", "console.gate", gate)
