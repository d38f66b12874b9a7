"""spectral_core._cache: the refresh-ahead policy and per-key single flight shared by the
API-key cache and the module cache."""

from __future__ import annotations

import anyio
import pytest

from spectral_core._cache import KeyedLocks, RefreshAhead
from spectral_core.errors import ConfigError, DatabaseError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """An async loader answering ``<key>#<n>``, optionally held until released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate: anyio.Event | None = None
        self.fail: BaseException | None = None

    def __call__(self, key: str):  # type: ignore[no-untyped-def]
        async def load() -> str:
            self.calls.append(key)
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            return f"{key}#{len(self.calls)}"

        return load


async def test_fresh_answers_are_served_without_a_load() -> None:
    """Younger than half the TTL: the cached answer, no load."""
    clock, load = Clock(), Loader()
    cache: RefreshAhead[str, str] = RefreshAhead(ttl_s=1.0, max_entries=10, clock=clock)
    assert await cache.get("a", load("a")) == "a#1"
    clock.now += 0.49
    assert await cache.get("a", load("a")) == "a#1"
    assert load.calls == ["a"]


async def test_concurrent_misses_of_one_key_make_one_load() -> None:
    """Ten callers of an uncached key: one load, all get its answer."""
    cache: RefreshAhead[str, str] = RefreshAhead(ttl_s=1.0, max_entries=10, clock=Clock())
    load = Loader()
    load.gate = anyio.Event()
    got: list[str] = []

    async def ask() -> None:
        got.append(await cache.get("a", load("a")))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        load.gate.set()
    assert got == ["a#1"] * 10 and load.calls == ["a"]


async def test_a_slow_load_of_one_key_does_not_hold_up_another_key() -> None:
    """Single flight is per key: while key a's load is held, key b loads and answers."""
    cache: RefreshAhead[str, str] = RefreshAhead(ttl_s=1.0, max_entries=10, clock=Clock())
    slow, fast = Loader(), Loader()
    slow.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get, "a", slow("a"))
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):
            assert await cache.get("b", fast("b")) == "b#1"
        slow.gate.set()


async def test_refresh_ahead_reloads_once_while_others_get_the_current_answer() -> None:
    """Between half the TTL and the TTL, the first caller reloads (and waits), the others
    get the current answer at once; afterwards the reloaded answer is served."""
    clock, load = Clock(), Loader()
    cache: RefreshAhead[str, str] = RefreshAhead(ttl_s=1.0, max_entries=10, clock=clock)
    await cache.get("a", load("a"))
    clock.now += 0.6
    load.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get, "a", load("a"))
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(1):
            for _ in range(5):
                assert await cache.get("a", load("a")) == "a#1"
        load.gate.set()
    assert load.calls == ["a", "a"]
    assert await cache.get("a", load("a")) == "a#2"


async def test_an_answer_past_its_ttl_is_never_served() -> None:
    """At the TTL every caller waits for the load: a stale answer is never returned."""
    clock, load = Clock(), Loader()
    cache: RefreshAhead[str, str] = RefreshAhead(ttl_s=1.0, max_entries=10, clock=clock)
    await cache.get("a", load("a"))
    clock.now += 1.0
    load.gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get, "a", load("a"))
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.2) as waited:
            await cache.get("a", load("a"))
        assert waited.cancelled_caught
        load.gate.set()
    assert await cache.get("a", load("a")) == "a#2"


async def test_a_failed_reload_ahead_keeps_the_answer_until_the_ttl_then_fails_closed() -> None:
    """A database failure while reloading ahead keeps the valid answer; past the TTL the
    failure is the answer.  Other failures are never hidden."""
    clock, load = Clock(), Loader()
    cache: RefreshAhead[str, str] = RefreshAhead(ttl_s=1.0, max_entries=10, clock=clock)
    await cache.get("a", load("a"))
    load.fail = DatabaseError("database unreachable")
    clock.now += 0.7
    assert await cache.get("a", load("a")) == "a#1"
    clock.now += 0.3
    with pytest.raises(DatabaseError):
        await cache.get("a", load("a"))
    load.fail = ValueError("a bug")
    clock.now -= 0.5  # within the TTL again: still not hidden, it is not a keep_on error
    with pytest.raises(ValueError):
        await cache.get("a", load("a"))


async def test_ttl_zero_loads_every_time_and_entries_are_bounded() -> None:
    """ttl_s=0 disables the cache; max_entries drops the least recently stored key."""
    load = Loader()
    off: RefreshAhead[str, str] = RefreshAhead(ttl_s=0, max_entries=10, clock=Clock())
    assert [await off.get("a", load("a")) for _ in range(3)] == ["a#1", "a#2", "a#3"]
    small: RefreshAhead[str, str] = RefreshAhead(ttl_s=1.0, max_entries=2, clock=Clock())
    for key in "abc":
        await small.get(key, load(key))
    assert len(small) == 2
    assert await small.get("a", load("a")) == "a#7"  # "a" was dropped: loaded again


async def test_keyed_locks_exist_only_while_held_or_awaited() -> None:
    """A key's lock is dropped when its last holder leaves, whatever the outcome."""
    locks: KeyedLocks[str] = KeyedLocks()
    async with locks.hold("a"):
        assert locks.busy("a") and not locks.busy("b") and len(locks) == 1
    assert len(locks) == 0
    with pytest.raises(RuntimeError):
        async with locks.hold("a"):
            raise RuntimeError
    assert len(locks) == 0


def test_bad_bounds_are_refused() -> None:
    """A negative TTL or an empty cache is a configuration error."""
    with pytest.raises(ConfigError):
        RefreshAhead(ttl_s=-1, max_entries=1)
    with pytest.raises(ConfigError):
        RefreshAhead(ttl_s=1, max_entries=0)
