"""TenantLanes: a tenant's calls wait for its own lane, first in first out; a cancelled
waiter costs no place; no lane outlives its calls (ADR 0040)."""

from __future__ import annotations

import anyio
import pytest

from spectral_core.errors import ConfigError
from spectral_core.sandbox.lanes import TenantLanes


def test_calls_beyond_the_lane_wait_in_order_and_other_tenants_do_not() -> None:
    """With one place per tenant, a's second and third calls start only after the one
    before ends, in the order they asked; b's call starts at once beside a's first."""
    lanes = TenantLanes(1)
    order: list[str] = []

    async def main() -> None:
        release = anyio.Event()

        async def call(tenant: str, name: str, hold: anyio.Event | None) -> None:
            async with lanes.lane(tenant):
                order.append(name)
                if hold is not None:
                    await hold.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "a", "a1", release)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call, "a", "a2", None)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call, "a", "a3", None)
            tg.start_soon(call, "b", "b1", None)
            await anyio.wait_all_tasks_blocked()
            assert order == ["a1", "b1"]
            assert (lanes.in_lane("a"), lanes.waiting("a")) == (1, 2)
            release.set()
        assert order == ["a1", "b1", "a2", "a3"]
        assert len(lanes) == 0

    anyio.run(main, backend="asyncio")


def test_a_waiter_cancelled_takes_no_place_and_leaves_no_lane() -> None:
    """A call cancelled while it waits for its tenant's lane leaves the queue: the next
    caller gets the place when the holder ends, and the lane is gone once all are done."""
    lanes = TenantLanes(1)

    async def main() -> None:
        release = anyio.Event()

        async def holder() -> None:
            async with lanes.lane("a"):
                await release.wait()

        scope = anyio.CancelScope()

        async def waiter() -> None:
            with scope:
                async with lanes.lane("a"):
                    pytest.fail("a cancelled waiter got a place")

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert lanes.waiting("a") == 1
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert lanes.waiting("a") == 0 and lanes.in_lane("a") == 1
            release.set()
        assert len(lanes) == 0

    anyio.run(main, backend="asyncio")


def test_a_lane_needs_at_least_one_place() -> None:
    """A bad setting is a clear error at construction."""
    with pytest.raises(ConfigError):
        TenantLanes(0)
