"""SPECTRAL_EVENT_LOOP: which event loop the binaries ask anyio's asyncio backend for."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest

from spectral_core.boot import event_loop_options
from spectral_core.errors import ConfigError
from spectral_core.settings import Settings


def test_auto_uses_uvloop_when_installed_and_asyncio_forces_the_standard_loop() -> None:
    """auto picks uvloop (installed with the api/workers extras); asyncio never does; the
    options really run a coroutine on a uvloop loop."""
    assert event_loop_options(Settings(event_loop="asyncio")) == {"use_uvloop": False}
    opts = event_loop_options(Settings(event_loop="auto"))
    assert opts == {"use_uvloop": True}

    async def loop_module() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__

    assert anyio.run(loop_module, backend="asyncio", backend_options=opts).startswith("uvloop")


def test_without_uvloop_auto_falls_back_and_an_explicit_request_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When uvloop cannot be imported, auto runs the standard loop, and
    SPECTRAL_EVENT_LOOP=uvloop is a clear ConfigError (a setting error: the binaries exit 3)."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert event_loop_options(Settings(event_loop="auto")) == {"use_uvloop": False}
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop_options(Settings(event_loop="uvloop"))


def test_the_setting_is_read_from_the_environment_and_checked() -> None:
    """SPECTRAL_EVENT_LOOP reaches Settings; an unknown value is a ConfigError."""
    assert Settings.from_env({"SPECTRAL_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(ConfigError):
        Settings.from_env({"SPECTRAL_EVENT_LOOP": "trio"})


def test_freeze_startup_heap_collects_then_hides_what_lives_from_the_collector() -> None:
    """spectral-api's start-up (ADR 0039): cyclic garbage made during start-up is
    collected first (not kept for ever), and what is alive is moved to the permanent
    generation, so later full collections no longer scan it.  In a fresh process: the
    freeze is process-wide."""
    script = """
import gc, weakref
from spectral_core.boot import freeze_startup_heap
gc.disable()  # nothing is collected but by freeze_startup_heap
class Node:
    pass
garbage = Node(); garbage.me = garbage
dead = weakref.ref(garbage)
del garbage
kept = [Node() for _ in range(10_000)]
freeze_startup_heap()
assert dead() is None, "start-up garbage was frozen instead of collected"
assert gc.get_freeze_count() >= len(kept), gc.get_freeze_count()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_freeze_startup_heap_lets_in_flight_requests_live_without_young_collections() -> None:
    """spectral-api's start-up raises the young generation's threshold (ADR 0046): under
    load its in-flight requests keep about a thousand young container objects alive, and at
    CPython's default (700) the collector ran a young collection every few dozen decisions,
    each walking those live objects (about 5 us of CPU per decision).  Five thousand live
    young objects must not trigger a collection; cyclic garbage is still collected."""
    script = """
import gc, weakref
from spectral_core.boot import freeze_startup_heap
freeze_startup_heap()
young = []
gc.callbacks.append(lambda phase, info: phase == "start" and young.append(info["generation"]))
live = [[] for _ in range(5_000)]
assert young == [], f"young collections with 5,000 live objects: {young}"
class Node:
    pass
for _ in range(30_000):  # cyclic garbage: collected once the threshold is passed
    n = Node(); n.me = n
assert young, "cyclic garbage was never collected"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
