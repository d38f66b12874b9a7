"""DecisionRunner: short decisions run inline and back to back, each with its own outcome;
long ones move to a thread; cancelled requests cost no call (ADR 0018)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import wasmtime

from spectral_api.runner import SLOW_FOR_S, DecisionRunner
from spectral_core.errors import BudgetExceeded, ConfigError, ModuleTrap
from spectral_core.sandbox import Budget, CompiledModule, Result
from spectral_core.sandbox.lanes import TenantLanes
from spectral_core.sandbox.wasm import WasmSandbox
from spectral_core.settings import SANDBOX_INLINE_MS

MODULES = Path(__file__).resolve().parent.parent / "modules"
BUDGET = Budget(fuel=5_000_000, deadline_ms=200)
#: an inline time budget no call here reaches: tests of batch order must not depend on how
#: fast the shared machine runs them (the time budget has tests of its own)
UNTIMED = 1000.0


class Recording:
    """The real sandbox, with a log of where each call ran."""

    def __init__(self, sandbox: WasmSandbox, events: list[tuple[str, Any]]) -> None:
        self._sandbox = sandbox
        self.events = events

    def run(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        in_task = asyncio.current_task() is not None
        self.events.append(("run" if not in_task else "run-in-task", input_json))
        return self._sandbox.run(compiled, input_json, budget)

    async def run_async(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        self.events.append(("thread", input_json))
        return await self._sandbox.run_async(compiled, input_json, budget)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[WasmSandbox]:
    with WasmSandbox(epoch_interval_ms=2) as sb:
        yield sb


def compiled(sandbox: WasmSandbox, name: str) -> CompiledModule:
    return sandbox.compile(wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text()))


def at_once(request: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Start ``request(arg)`` (``request(*arg)`` for a tuple) for every argument in one task
    group: the tasks all start in the same loop iteration."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for arg in args:
                tg.start_soon(request, *(arg if isinstance(arg, tuple) else (arg,)))

    anyio.run(main, backend="asyncio")


def kinds(events: list[tuple[str, Any]]) -> list[str]:
    return [kind for kind, _ in events]


def test_concurrent_calls_run_back_to_back_outside_the_request_tasks(sandbox: WasmSandbox) -> None:
    """50 requests at once: every one is queued first, then the calls run in one callback,
    at most ``max_batch`` (32) per loop iteration, the waiting requests resuming between
    the two batches; each request gets the output of its own input."""
    events: list[tuple[str, Any]] = []
    runner = DecisionRunner(
        Recording(sandbox, events), inline_fuel=100_000, max_batch=32, inline_ms=UNTIMED
    )
    echo = compiled(sandbox, "echo")
    outputs: dict[int, bytes] = {}

    async def request(i: int) -> None:
        doc = b'{"request":%d}' % i
        events.append(("ask", doc))
        outputs[i] = (await runner.run(echo, doc, BUDGET)).output
        events.append(("done", doc))

    at_once(request, *range(50))
    assert outputs == {i: b'{"request":%d}' % i for i in range(50)}
    assert (
        kinds(events) == ["ask"] * 50 + ["run"] * 32 + ["done"] * 32 + ["run"] * 18 + ["done"] * 18
    )
    # in the order they were asked
    assert [doc for kind, doc in events if kind == "run"] == [
        doc for kind, doc in events if kind == "ask"
    ]


def test_without_batching_each_call_runs_in_its_own_request_task(sandbox: WasmSandbox) -> None:
    """The control (``max_batch=0``, as before ADR 0018): ask, run, done per request."""
    events: list[tuple[str, Any]] = []
    runner = DecisionRunner(Recording(sandbox, events), inline_fuel=100_000, max_batch=0)
    echo = compiled(sandbox, "echo")

    async def request(i: int) -> None:
        events.append(("ask", i))
        await runner.run(echo, b"[%d]" % i, BUDGET)
        events.append(("done", i))

    at_once(request, *range(3))
    assert kinds(events) == ["ask", "run-in-task", "done"] * 3


def test_each_call_in_a_batch_gets_its_own_outcome(sandbox: WasmSandbox) -> None:
    """A trap and a fuel-hungry loop in the same batch as good calls: the trap reaches its
    own request only, the loop is re-run in a thread with the full budget and fails there,
    and the good calls around them return their own documents."""
    events: list[tuple[str, Any]] = []
    runner = DecisionRunner(
        Recording(sandbox, events), inline_fuel=100_000, max_batch=32, inline_ms=UNTIMED
    )
    echo, trap, loop = (compiled(sandbox, n) for n in ("echo", "trap", "infinite_loop"))
    outcome: dict[str, Any] = {}

    async def request(name: str, module: CompiledModule) -> None:
        doc = b'{"name":"%s"}' % name.encode()
        try:
            outcome[name] = (await runner.run(module, doc, BUDGET)).output
        except (ModuleTrap, BudgetExceeded) as exc:
            outcome[name] = exc

    at_once(
        request,
        ("a", echo),
        ("trap", trap),
        ("b", echo),
        ("loop", loop),
        ("c", echo),
    )
    for name in "abc":
        assert outcome[name] == b'{"name":"%s"}' % name.encode()
    assert isinstance(outcome["trap"], ModuleTrap)
    assert outcome["trap"].context["reason"] == "trap"
    assert isinstance(outcome["loop"], BudgetExceeded)
    assert outcome["loop"].context["budget"] in ("fuel", "deadline")
    # one inline batch of five, then only the loop goes to a thread
    assert kinds(events) == ["run"] * 5 + ["thread"]
    assert events[-1][1] == b'{"name":"loop"}'


def test_a_request_cancelled_while_queued_costs_no_call(sandbox: WasmSandbox) -> None:
    """A request cancelled before its turn (client gone, timeout) is skipped; the calls
    queued after it still run."""
    events: list[tuple[str, Any]] = []
    runner = DecisionRunner(
        Recording(sandbox, events), inline_fuel=100_000, max_batch=32, inline_ms=UNTIMED
    )
    echo = compiled(sandbox, "echo")

    async def main() -> dict[str, Any]:
        tasks = {
            n: asyncio.create_task(runner.run(echo, b'"%s"' % n.encode(), BUDGET))
            for n in ("a", "b", "c")
        }
        await asyncio.sleep(0)  # all three are queued; the batch runs next iteration
        tasks["b"].cancel()
        done: dict[str, Any] = {}
        for name, task in tasks.items():
            try:
                done[name] = (await task).output
            except asyncio.CancelledError:
                done[name] = "cancelled"
        return done

    assert anyio.run(main, backend="asyncio") == {"a": b'"a"', "b": "cancelled", "c": b'"c"'}
    assert events == [("run", b'"a"'), ("run", b'"c"')]


def test_one_runner_serves_successive_event_loops(sandbox: WasmSandbox) -> None:
    """A runner outlives an event loop (a restarted server, tests): the next loop gets a
    queue of its own."""
    runner = DecisionRunner(sandbox, inline_fuel=100_000)
    echo = compiled(sandbox, "echo")

    async def once(doc: bytes) -> bytes:
        return (await runner.run(echo, doc, BUDGET)).output

    assert anyio.run(once, b"[1]", backend="asyncio") == b"[1]"
    assert anyio.run(once, b"[2]", backend="asyncio") == b"[2]"


def test_calls_run_in_the_context_of_the_request_that_queued_them(sandbox: WasmSandbox) -> None:
    """Context variables (log fields bound per request) are the queuing request's own."""
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    seen: list[str] = []

    class Spy(Recording):
        def run(
            self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
        ) -> Result:
            seen.append(request_id.get())
            return super().run(compiled, input_json, budget)

    runner = DecisionRunner(Spy(sandbox, []), inline_fuel=100_000, inline_ms=UNTIMED)
    echo = compiled(sandbox, "echo")

    async def request(name: str) -> None:
        request_id.set(name)
        await runner.run(echo, b"{}", BUDGET)

    at_once(request, "r1", "r2", "r3")
    assert seen == ["r1", "r2", "r3"]


def test_a_module_whose_inline_call_ran_long_goes_to_threads_next_time(
    sandbox: WasmSandbox,
) -> None:
    """Fuel does not bound time: page_toucher spends ~45k fuel (under the inline budget)
    and milliseconds of page faults.  Its first two calls run inline and each takes longer
    than ``inline_ms``; its next calls run in a thread (full budget) for ``SLOW_FOR_S``;
    after that it gets one inline call again, and as that one is long too, the calls after
    it go back to threads (ADR 0036)."""
    events: list[tuple[str, Any]] = []
    offset = [0.0]
    runner = DecisionRunner(
        Recording(sandbox, events),
        inline_fuel=100_000,
        inline_ms=1.0,
        clock=lambda: time.perf_counter() + offset[0],
    )
    toucher = compiled(sandbox, "page_toucher")

    async def request(doc: bytes) -> None:
        assert (await runner.run(toucher, doc, BUDGET)).value == {}

    for doc in (b"1", b"2", b"3", b"4"):
        at_once(request, doc)
    assert events == [("run", b"1"), ("run", b"2"), ("thread", b"3"), ("thread", b"4")]
    offset[0] = SLOW_FOR_S + 1
    at_once(request, b"5")
    at_once(request, b"6")
    assert events[-2:] == [("run", b"5"), ("thread", b"6")]


def test_an_inline_batch_stops_at_its_time_budget(sandbox: WasmSandbox) -> None:
    """Three page_toucher calls and an echo queued together: the first toucher call runs
    inline and uses up the batch's time, so the batch stops there; the second runs inline
    in the next iteration and stops that batch too (two long calls in a row: the module is
    slow now); in the iteration after, the third toucher call goes to a thread and the echo
    runs inline."""
    events: list[tuple[str, Any]] = []
    runner = DecisionRunner(Recording(sandbox, events), inline_fuel=100_000, inline_ms=1.0)
    toucher, echo = compiled(sandbox, "page_toucher"), compiled(sandbox, "echo")

    async def request(module: CompiledModule, doc: bytes) -> None:
        await runner.run(module, doc, BUDGET)

    at_once(request, (toucher, b"1"), (toucher, b"2"), (toucher, b"3"), (echo, b"[4]"))
    assert events == [("run", b"1"), ("run", b"2"), ("run", b"[4]"), ("thread", b"3")]


class CollectingOnce(Recording):
    """:class:`Recording` whose first call runs a full garbage collection of a large heap
    inside the call, as the interpreter does when an allocation in the call crosses the
    collection threshold."""

    def __init__(self, sandbox: WasmSandbox, events: list[tuple[str, Any]]) -> None:
        super().__init__(sandbox, events)
        self.collected_s: float | None = None

    def run(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        if self.collected_s is None:
            heap = [[i] for i in range(1_000_000)]  # live while collected: it is traversed
            started = time.thread_time()
            gc.collect()
            self.collected_s = time.thread_time() - started
            del heap
        return super().run(compiled, input_json, budget)


def test_one_long_call_does_not_send_its_module_to_threads(sandbox: WasmSandbox) -> None:
    """A full garbage collection of the API process's heap takes ~30 ms and can run inside
    any call: a trivial module's call in which it ran is long once, and its module stays
    inline (ADR 0036: only two long calls in a row make a module slow)."""
    events: list[tuple[str, Any]] = []
    spy = CollectingOnce(sandbox, events)
    runner = DecisionRunner(spy, inline_fuel=100_000, inline_ms=1.0)
    echo = compiled(sandbox, "echo")

    async def request(doc: bytes) -> None:
        await runner.run(echo, doc, BUDGET)

    for i in range(5):
        at_once(request, b"[%d]" % i)
    assert spy.collected_s is not None and spy.collected_s > 0.001  # the call was long
    assert kinds(events) == ["run"] * 5
    assert not runner.is_slow(echo)


def test_long_calls_between_short_ones_still_send_their_module_to_threads(
    sandbox: WasmSandbox,
) -> None:
    """A module whose cost depends on its input: its calls alternate long (16 MiB of page
    faults) and trivial.  Two long calls among its last few inline calls send it to threads
    (ADR 0036 amended): "two long calls in a row" alone let every other call hold the event
    loop for milliseconds, for ever, as long as a short call came in between."""
    events: list[tuple[str, Any]] = []
    runner = DecisionRunner(Recording(sandbox, events), inline_fuel=100_000, inline_ms=1.0)
    module = compiled(sandbox, "page_toucher_if_long")

    async def request(doc: bytes) -> None:
        assert (await runner.run(module, doc, BUDGET)).value == {}

    for doc in (b"11111", b"1", b"11111", b"1", b"11111", b"1"):
        at_once(request, doc)
    assert kinds(events) == ["run", "run", "run", "thread", "thread", "thread"]
    assert runner.is_slow(module)


class WallTimed(Recording):
    """:class:`Recording` that also keeps each inline call's wall time."""

    def __init__(self, sandbox: WasmSandbox, events: list[tuple[str, Any]]) -> None:
        super().__init__(sandbox, events)
        self.walls: list[float] = []

    def run(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        started = time.perf_counter()
        try:
            return super().run(compiled, input_json, budget)
        finally:
            self.walls.append(time.perf_counter() - started)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_call_the_os_preempted_does_not_send_its_module_to_threads(
    sandbox: WasmSandbox,
) -> None:
    """On a busy machine the OS preempts the event loop's thread in the middle of calls: a
    trivial module's call then takes milliseconds of wall time for microseconds of work.
    Its module stays inline (ADR 0036: a call's time is its thread's CPU time); sent to
    threads, every call would cost a thread hop for nothing.  Here the loop's thread shares
    one CPU with three spinning processes (a preempted call then waits out at least two of
    their time slices, whatever the kernel's slice) for a second of inline calls (default
    budget), longer until a call was seen preempted past the inline bound."""
    events: list[tuple[str, Any]] = []
    spy = WallTimed(sandbox, events)
    runner = DecisionRunner(spy, inline_fuel=100_000, max_batch=32, inline_ms=SANDBOX_INLINE_MS)
    echo = compiled(sandbox, "echo")
    for _ in range(10):  # warm: a first call's cold caches are not what is tested here
        sandbox.run(echo, b"[]", BUDGET)
    cpu = min(os.sched_getaffinity(0))
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    allowed = os.sched_getaffinity(0)
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(3)]
    gc.collect()
    gc.disable()  # a full collection of the test session's heap inside a call is real CPU
    try:
        os.sched_setaffinity(0, {cpu})  # this thread: the event loop's

        async def main() -> None:
            start = time.perf_counter()
            while time.perf_counter() < start + 1.0 or (
                max(spy.walls) <= SANDBOX_INLINE_MS / 1000 and time.perf_counter() < start + 15
            ):
                async with anyio.create_task_group() as tg:
                    for i in range(32):
                        tg.start_soon(runner.run, echo, b"[%d]" % i, BUDGET)

        anyio.run(main, backend="asyncio")
    finally:
        gc.enable()
        os.sched_setaffinity(0, allowed)
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    # the setup did preempt calls (else this test could not fail) ...
    assert max(spy.walls) > SANDBOX_INLINE_MS / 1000, "no call was preempted: no competition"
    # ... and none of them made the module slow
    assert "thread" not in kinds(events)
    assert not runner.is_slow(echo)


class Occupancy:
    """The real sandbox; records the order in which worker-thread calls start and the most
    thread calls in flight at once per tenant (each input is ``["tenant", n]``)."""

    def __init__(self, sandbox: WasmSandbox) -> None:
        self._sandbox = sandbox
        self.started: list[tuple[str, int]] = []
        self.in_flight: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def run(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        return self._sandbox.run(compiled, input_json, budget)

    async def run_async(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        tenant, n = json.loads(input_json)
        self.started.append((tenant, n))
        self.in_flight[tenant] = self.in_flight.get(tenant, 0) + 1
        self.most[tenant] = max(self.most.get(tenant, 0), self.in_flight[tenant])
        try:
            return await self._sandbox.run_async(compiled, input_json, budget)
        finally:
            self.in_flight[tenant] -= 1


def test_one_tenant_never_holds_more_than_its_lane_of_worker_threads(
    sandbox: WasmSandbox,
) -> None:
    """ADR 0040: a tenant with eight slow calls at once (page_toucher, in worker threads)
    has at most ``per_tenant`` (here 2) of them in threads at a time, the others waiting in
    its own queue, first in first out; another tenant's thread call, queued after all
    eight, starts at once instead of waiting behind them.  (Without lanes all eight start
    together, on as many threads, and the quiet tenant's call starts last.)"""
    sb = Occupancy(sandbox)
    lanes = TenantLanes(2)
    runner = DecisionRunner(sb, inline_fuel=0, lanes=lanes)  # type: ignore[arg-type]
    toucher, echo = compiled(sandbox, "page_toucher"), compiled(sandbox, "echo")

    async def request(tenant: str, module: CompiledModule, n: int) -> None:
        doc = json.dumps([tenant, n]).encode()
        assert (await runner.run(module, doc, BUDGET, tenant)).usage.fuel_consumed > 0

    at_once(request, *(("noisy", toucher, n) for n in range(8)), ("quiet", echo, 0))
    assert sb.most == {"noisy": 2, "quiet": 1}
    assert sb.started[:3] == [("noisy", 0), ("noisy", 1), ("quiet", 0)]
    assert [n for tenant, n in sb.started if tenant == "noisy"] == list(range(8))
    assert len(lanes) == 0  # no lane outlives its calls


def test_a_tenants_lane_has_no_effect_on_inline_calls(sandbox: WasmSandbox) -> None:
    """Lanes bound worker-thread calls only: a quiet tenant's inline calls, queued after a
    noisy tenant's eight thread calls (its module is slow, ADR 0023 and 0036), run in
    the next batch, before seven of those, which wait for the noisy tenant's lane."""
    events: list[tuple[str, Any]] = []
    runner = DecisionRunner(
        Recording(sandbox, events), inline_fuel=100_000, inline_ms=1.0, lanes=TenantLanes(1)
    )
    toucher, echo = compiled(sandbox, "page_toucher"), compiled(sandbox, "echo")

    async def request(tenant: str, module: CompiledModule, doc: bytes) -> None:
        await runner.run(module, doc, BUDGET, tenant)

    for doc in (b"a", b"b"):  # two long inline calls: slow from now on (ADR 0036)
        at_once(request, ("noisy", toucher, doc))
    at_once(
        request,
        *(("noisy", toucher, b"%d" % n) for n in range(1, 9)),
        ("quiet", echo, b"[1]"),
        ("quiet", echo, b"[2]"),
    )
    assert events[:2] == [("run", b"a"), ("run", b"b")]
    assert events[2:5] == [("thread", b"1"), ("run", b"[1]"), ("run", b"[2]")]
    assert kinds(events[5:]) == ["thread"] * 7


def test_negative_settings_are_refused(sandbox: WasmSandbox) -> None:
    """Bad configuration is a clear error at construction."""
    with pytest.raises(ConfigError):
        DecisionRunner(sandbox, inline_fuel=-1)
    with pytest.raises(ConfigError):
        DecisionRunner(sandbox, max_batch=-1)
    with pytest.raises(ConfigError):
        DecisionRunner(sandbox, inline_ms=0)
