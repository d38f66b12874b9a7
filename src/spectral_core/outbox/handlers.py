"""The handler registry: scope-qualified names, several handlers per topic.

A handler is ``async def handler(event, conn) -> None``.  It runs inside a transaction on
``conn``; its database effects and its ``core.event_handled`` row commit together, so it
takes effect at most once per ``(handler_name, idempotency_key)``.  Side effects outside
PostgreSQL may be repeated after a failure and must be idempotent on their own.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ..errors import HandlerError
from .records import Event

__all__ = ["Handler", "HandlerRegistry", "RegisteredHandler"]

Handler = Callable[[Event, psycopg.AsyncConnection[Any]], Awaitable[None]]
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


@dataclass(frozen=True, slots=True)
class RegisteredHandler:
    name: str
    topic: str
    fn: Handler


class HandlerRegistry:
    """Handlers by scope-qualified name, looked up by topic."""

    def __init__(self) -> None:
        self._by_name: dict[str, RegisteredHandler] = {}
        self._by_topic: dict[str, tuple[RegisteredHandler, ...]] = {}

    def register(self, name: str, topic: str, fn: Handler) -> RegisteredHandler:
        """Subscribe ``fn`` to ``topic`` under the scope-qualified ``name``.

        Raises:
            HandlerError: the name is not scope-qualified (``scope.part[.part]``), or is
                already registered.
        """
        if not _NAME.match(name):
            raise HandlerError(
                f"handler name {name!r} must be scope-qualified, e.g. 'workers.billing.charge'",
                name=name,
            )
        if name in self._by_name:
            raise HandlerError(f"handler {name!r} is already registered", name=name)
        if not topic:
            raise HandlerError("a handler needs a topic", name=name)
        entry = RegisteredHandler(name, topic, fn)
        self._by_name[name] = entry
        self._by_topic[topic] = (*self._by_topic.get(topic, ()), entry)
        return entry

    def handler(self, topic: str, *, name: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def deco(fn: Handler) -> Handler:
            self.register(name, topic, fn)
            return fn

        return deco

    def for_topic(self, topic: str) -> tuple[RegisteredHandler, ...]:
        return self._by_topic.get(topic, ())

    @property
    def routes(self) -> tuple[tuple[str, str], ...]:
        """Every ``(topic, handler name)`` pair, in registration order."""
        return tuple((h.topic, h.name) for h in self._by_name.values())

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
