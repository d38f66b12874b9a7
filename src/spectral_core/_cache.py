"""Per-process caches of database answers: one refresh-ahead policy, per-key single flight.

Used by :class:`spectral_core.tenants.Authenticator` (API keys) and
:class:`spectral_core.modules.cache.ModuleCache` (approval verdicts, module loads).

:class:`RefreshAhead` keeps each key's last answer with the time its load *started*:

* younger than ``ttl_s / 2``: returned as is;
* from ``ttl_s / 2`` to ``ttl_s``: the first caller reloads it (and waits for that), the
  others keep getting the current answer meanwhile, so steady traffic never stalls on the
  query; a reload that fails with one of ``keep_on`` (the database is away) keeps the
  current answer until ``ttl_s``;
* ``ttl_s`` old or more (or absent): never used; callers wait for the load, one load per key
  at a time (the others wait for it and take its answer), and a failure is the caller's
  (fail closed).

:class:`KeyedLocks` is the single flight underneath: one lock per key, created on demand and
dropped when nobody holds or waits for it, so unrelated keys never wait for each other.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import anyio

from .errors import ConfigError, DatabaseError

__all__ = ["KeyedLocks", "RefreshAhead"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeyedLocks(Generic[K]):
    """One :class:`anyio.Lock` per key, alive only while held or awaited."""

    def __init__(self) -> None:
        self._locks: dict[K, anyio.Lock] = {}

    def __len__(self) -> int:
        """Keys with a lock held or awaited."""
        return len(self._locks)

    def busy(self, key: K) -> bool:
        """Whether someone holds ``key``'s lock."""
        lock = self._locks.get(key)
        return lock is not None and lock.locked()

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold ``key``'s lock (waiting for its current holder, if any)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(key, None)


class RefreshAhead(Generic[K, V]):
    """Answers of an async loader per key, refreshed ahead (see the module docstring).

    Args:
        ttl_s: Age from which an answer is never used (0: every call loads).
        max_entries: Keys kept (least recently stored dropped first).
        clock: Monotonic clock in seconds (tests).
        keep_on: Failures of a reload ahead that keep the current answer until ``ttl_s``.

    Raises:
        ConfigError: A negative ``ttl_s`` or a ``max_entries`` below 1.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        keep_on: tuple[type[BaseException], ...] = (DatabaseError,),
    ) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ConfigError("invalid cache bounds", ttl_s=ttl_s, max_entries=max_entries)
        self.ttl_s = ttl_s
        self._half = ttl_s / 2
        self._max = max_entries
        self._clock = clock
        self._keep_on = keep_on
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._flights: KeyedLocks[K] = KeyedLocks()

    def __len__(self) -> int:
        """Keys cached."""
        return len(self._entries)

    def clear(self) -> None:
        """Forget every answer."""
        self._entries.clear()

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """``key``'s answer, from the cache or from ``load()`` (see the module docstring).

        Raises:
            Exception: Whatever ``load`` raised, when no usable answer is cached.
        """
        hit = self._entries.get(key)
        if hit is not None:
            age = self._clock() - hit[0]
            if age < self._half or (age < self.ttl_s and self._flights.busy(key)):
                return hit[1]  # fresh, or being reloaded ahead by another caller
        async with self._flights.hold(key):
            current = self._entries.get(key)
            if current is not None and self._clock() - current[0] < self._half:
                return current[1]  # loaded by the caller we waited for
            started = self._clock()
            try:
                value = await load()
            except self._keep_on:
                if current is not None and self._clock() - current[0] < self.ttl_s:
                    return current[1]  # a reload ahead failed: still valid until ttl_s
                raise
            self._entries[key] = (started, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return value
