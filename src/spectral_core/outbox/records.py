"""Outbox records: what a handler receives, and the status vocabulary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

__all__ = ["Event", "EventIn", "Status", "channel_for"]


class Status(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    DEAD = "dead"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One claimed outbox row, as handed to a handler."""

    id: int
    generation: int
    topic: str
    payload: Any
    idempotency_key: str
    attempts: int
    created_at: datetime
    #: the W3C ``traceparent`` of the span that published the row (None: none was active)
    trace_parent: str | None = None


class EventIn(msgspec.Struct, frozen=True, kw_only=True):
    """One event to publish in a batch."""

    topic: str
    payload: Any
    idempotency_key: str | None = None


def channel_for(generation: int) -> str:
    """The LISTEN/NOTIFY channel of a generation (one per generation)."""
    return f"spectral_outbox_g{int(generation)}"
