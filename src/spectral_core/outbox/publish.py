"""Transactional publish: the row exists iff the caller's transaction commits.

``publish_async(conn, topic, payload)`` writes one ``core.outbox`` row in the caller's
transaction, stamped with the running generation, and issues ``pg_notify`` on the
generation's channel in the same statement: PostgreSQL delivers the wake-up at commit and
drops it on rollback.  ``publish`` is the sync twin; both share :func:`_params`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg

from ..db._wrap import wrap_errors
from ..errors import PayloadError, UnknownGeneration
from ..runtime import current_runtime
from ..sql import query
from ..tracing import current_traceparent
from .records import EventIn, channel_for

__all__ = ["Publisher", "publish", "publish_async", "publish_many", "publish_many_async"]

DEFAULT_MAX_PAYLOAD = 256 * 1024
_TOPIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$")
_encode = msgspec.json.Encoder().encode


#: topics already checked against ``_TOPIC`` (a process publishes to few topics)
_known_topics: set[str] = set()
_KNOWN_TOPICS_MAX = 4096


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or (topic not in _known_topics and not _TOPIC.match(topic)):
        raise PayloadError(
            f"invalid topic {topic!r}: letters, digits and _ . : - only, at most 200 characters",
            topic=topic,
        )
    if len(_known_topics) < _KNOWN_TOPICS_MAX:
        _known_topics.add(topic)  # (adding a known one again is a no-op)


def _validate(
    topic: str, payload: Any, key: str | None, max_bytes: int, fresh_key: str | None = None
) -> tuple[str, str]:
    """Check one event; return its encoded payload and its key (``fresh_key`` or a new
    :func:`_new_keys` key when the caller gave none)."""
    _check_topic(topic)
    try:
        encoded = _encode(payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise PayloadError(f"payload is not JSON-encodable: {exc}", topic=topic) from None
    if len(encoded) > max_bytes:
        raise PayloadError(
            f"payload is {len(encoded)} bytes, the limit is {max_bytes}",
            topic=topic,
            size=len(encoded),
            limit=max_bytes,
        )
    if b"\\u0000" in encoded:
        raise PayloadError(
            "payload contains a NUL character, which jsonb cannot store", topic=topic
        )
    if key is None:
        key = fresh_key or _new_keys(1)[0]
    elif not isinstance(key, str) or not key or len(key) > 512:
        raise PayloadError(
            "idempotency_key must be a non-empty string of at most 512 characters", topic=topic
        )
    return encoded.decode(), key


def _new_keys(n: int) -> list[str]:
    """``n`` generated idempotency keys: 32 hex characters, time-ordered like a UUIDv7.

    48 bits of milliseconds since the epoch, then 80 random bits.  The ledger's primary key
    ``(handler_name, idempotency_key)`` then grows at its right edge instead of taking each
    insert on a random leaf page (fewer pages touched and fewer full-page images in WAL), and
    two keys collide only within the same millisecond with probability ~2^-80.  This is
    about the ledger's size in production (a short drain shows no difference), not about
    speed.  One ``getrandom()`` per batch, cheaper per key than ``uuid.uuid4().hex``
    (docs/performance.md).
    """
    prefix = format(time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF, "012x")
    rand = os.urandom(10 * n).hex()
    return [prefix + rand[20 * i : 20 * i + 20] for i in range(n)]


class Publisher:
    """Publishes events stamped with one generation (bound at construction)."""

    __slots__ = ("_channel", "generation", "max_payload_bytes")

    def __init__(self, generation: int, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.generation = int(generation)
        self.max_payload_bytes = max_payload_bytes
        self._channel = channel_for(self.generation)

    def _unknown(self) -> UnknownGeneration:
        return UnknownGeneration(
            f"generation {self.generation} was never allocated (see `spectral deploy "
            "allocate`); nothing was published",
            generation=self.generation,
        )

    def _params(self, topic: str, payload: Any, key: str | None) -> dict[str, Any]:
        encoded, key = _validate(topic, payload, key, self.max_payload_bytes)
        return {
            "generation": self.generation,
            "topic": topic,
            "payload": encoded,
            "key": key,
            "channel": self._channel,
            # the active span's W3C traceparent (None without a span: no SDK configured)
            "trace": current_traceparent(),
        }

    def _many_params(self, events: Sequence[EventIn]) -> dict[str, Any]:
        topics: list[str] = []
        payloads: list[str] = []
        keys: list[str] = []
        fresh = _new_keys(len(events))
        for i, ev in enumerate(events):
            encoded, key = _validate(
                ev.topic,
                ev.payload,
                ev.idempotency_key,
                self.max_payload_bytes,
                fresh[i],
            )
            topics.append(ev.topic)
            payloads.append(encoded)
            keys.append(key)
        return {
            "generation": self.generation,
            "topics": topics,
            "payloads": payloads,
            "keys": keys,
            "channel": self._channel,
            "trace": current_traceparent(),
        }

    async def publish_async(
        self,
        conn: psycopg.AsyncConnection[Any],
        topic: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """Write one event in ``conn``'s current transaction; return its id.

        Raises:
            PayloadError: bad topic, payload or key (nothing is written).
            UnknownGeneration: the publisher's generation was never allocated (nothing is
                written).
            DatabaseError: the insert failed.
        """
        params = self._params(topic, payload, idempotency_key)
        with wrap_errors():
            cur = await conn.execute(query("insert_event"), params)
            row = await cur.fetchone()
        if row is None:
            raise self._unknown()
        return int(row[0])

    def publish(
        self,
        conn: psycopg.Connection[Any],
        topic: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """Sync twin of :meth:`publish_async`."""
        params = self._params(topic, payload, idempotency_key)
        with wrap_errors():
            row = conn.execute(query("insert_event"), params).fetchone()
        if row is None:
            raise self._unknown()
        return int(row[0])

    async def publish_many_async(
        self, conn: psycopg.AsyncConnection[Any], events: Sequence[EventIn]
    ) -> list[int]:
        """Write several events in one statement; return their ids in order.

        Raises:
            PayloadError: any event is invalid (nothing is written).
            UnknownGeneration: the publisher's generation was never allocated (nothing is
                written).
        """
        if not events:
            return []
        params = self._many_params(events)
        with wrap_errors():
            cur = await conn.execute(query("insert_events"), params, binary=True)
            row = await cur.fetchone()
        if row is None or row[0] is None:
            raise self._unknown()
        return list(row[0])

    def publish_many(self, conn: psycopg.Connection[Any], events: Sequence[EventIn]) -> list[int]:
        """Sync twin of :meth:`publish_many_async`."""
        if not events:
            return []
        params = self._many_params(events)
        with wrap_errors():
            row = conn.execute(query("insert_events"), params, binary=True).fetchone()
        if row is None or row[0] is None:
            raise self._unknown()
        return list(row[0])


_publishers: dict[int, Publisher] = {}


def _running_publisher() -> Publisher:
    gen = current_runtime().generation
    pub = _publishers.get(gen)
    if pub is None:
        pub = _publishers[gen] = Publisher(gen)
    return pub


async def publish_async(
    conn: psycopg.AsyncConnection[Any],
    topic: str,
    payload: Any,
    *,
    idempotency_key: str | None = None,
) -> int:
    """Publish in the caller's transaction, stamped with the running generation.

    Raises:
        GenerationError: no runtime is bound.
        PayloadError: bad topic, payload or key.
    """
    return await _running_publisher().publish_async(
        conn, topic, payload, idempotency_key=idempotency_key
    )


def publish(
    conn: psycopg.Connection[Any], topic: str, payload: Any, *, idempotency_key: str | None = None
) -> int:
    """Sync twin of :func:`publish_async`."""
    return _running_publisher().publish(conn, topic, payload, idempotency_key=idempotency_key)


async def publish_many_async(
    conn: psycopg.AsyncConnection[Any], events: Sequence[EventIn]
) -> list[int]:
    """Batched :func:`publish_async`."""
    return await _running_publisher().publish_many_async(conn, events)


def publish_many(conn: psycopg.Connection[Any], events: Sequence[EventIn]) -> list[int]:
    """Batched :func:`publish`."""
    return _running_publisher().publish_many(conn, events)
