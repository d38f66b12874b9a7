"""Per-tenant lanes into the sandbox's worker threads (ADR 0040).

A decision that does not finish inline (it ran out of inline fuel, or its module is slow in
wall time, ADR 0023) runs in one of the sandbox's worker threads.  Each such call holds a
CPU for up to its deadline, next to the event loop that serves every tenant's fast inline
calls.  Without a per-tenant bound one tenant with many streams of slow calls occupies
every worker thread at once: on a small machine the threads then outnumber the cores, the
event loop's thread waits for a CPU (and for the GIL, from threads that were preempted
while holding it), and every other tenant's latency grows with that tenant's streams.

:class:`TenantLanes` gives each tenant a lane of ``per_tenant`` threads: a tenant's thread
calls beyond that wait in its own FIFO queue, outside the sandbox's thread limiter, so they
neither take threads from other tenants nor add runnable threads.  A lane exists only while
one of its tenant's calls is in it or waiting for it.

Usage::

    async with lanes.lane(tenant):
        result = await sandbox.run_async(compiled, input_json, budget)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from spectral_core.errors import ConfigError

__all__ = ["TenantLanes"]


class _Lane:
    __slots__ = ("limiter", "users")

    def __init__(self, per_tenant: int) -> None:
        self.limiter = anyio.CapacityLimiter(per_tenant)
        self.users = 0  # calls in the lane or waiting for it


class TenantLanes:
    """At most ``per_tenant`` calls of one tenant at once; the rest wait, first in first out.

    For use from one event loop (the API's): the bookkeeping is not thread-safe.

    Args:
        per_tenant: Calls one tenant may have in the lane at once.

    Raises:
        ConfigError: ``per_tenant`` below 1.
    """

    def __init__(self, per_tenant: int) -> None:
        if per_tenant < 1:
            raise ConfigError("per-tenant sandbox threads must be at least 1")
        self.per_tenant = per_tenant
        self._lanes: dict[str, _Lane] = {}

    def __len__(self) -> int:
        """Tenants with a call in their lane or waiting for it."""
        return len(self._lanes)

    def in_lane(self, tenant: str) -> int:
        """Calls of ``tenant`` in its lane now (not counting those waiting)."""
        lane = self._lanes.get(tenant)
        return 0 if lane is None else int(lane.limiter.borrowed_tokens)

    def waiting(self, tenant: str) -> int:
        """Calls of ``tenant`` waiting for a place in its lane."""
        lane = self._lanes.get(tenant)
        return 0 if lane is None else lane.users - int(lane.limiter.borrowed_tokens)

    @asynccontextmanager
    async def lane(self, tenant: str) -> AsyncIterator[None]:
        """Hold one of ``tenant``'s places for the body; wait for one first if all are taken.

        Cancelling a waiting caller takes it out of the queue and costs no place.
        """
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = _Lane(self.per_tenant)
        lane.users += 1
        try:
            async with lane.limiter:
                yield
        finally:
            lane.users -= 1
            if not lane.users:
                del self._lanes[tenant]
