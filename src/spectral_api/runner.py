"""Decisions from async code: short calls inline on the event loop, back to back; long ones
in a worker thread.

:class:`DecisionRunner` is the policy ``spectral-api`` uses for ``POST /api/decide``:

* **Inline first, on a small fuel budget.**  Most decisions need a few thousand
  instructions, and a thread hop costs more than the call.  The call is first made on the
  event loop with ``inline_fuel`` (and the same memory, output and deadline caps), so it
  holds the loop for well under a millisecond.  Only if it runs out of fuel or time is it
  repeated in a worker thread (:meth:`Sandbox.run_async`) with the full budget.  Modules are
  pure functions run in a fresh instance, so repeating a call has no effect besides its
  cost; every other outcome (result, trap, memory or output budget) is the same under the
  full budget and is final.
* **Inline calls run back to back** (ADR 0018).  A request task does not make its inline
  call itself: it queues it and waits.  The first call queued in an event-loop iteration
  schedules one callback (``loop.call_soon``) for the next iteration, which makes every
  call queued by then, at most ``max_batch`` of them, one after the other; the rest wait for
  the iteration after.  Requests that arrived together thus run the sandbox while its code
  and data are still in the CPU caches, instead of each call finding them evicted by the
  HTTP and framework code of the request before it.  The loop is held no longer than
  before (those calls ran in the same iteration anyway, one per task) and I/O is polled
  between batches.

* **Inline is bounded in time too** (ADR 0023).  Fuel counts instructions, not time: a
  module that touches every page of its memory spends a few thousand fuel units and
  milliseconds of page faults.  A batch stops once its calls have used ``inline_ms`` (the
  rest run in the next iteration, after an I/O poll), and a module two of whose last eight
  inline calls each took longer than ``inline_ms`` runs in a worker thread, with its full budget,
  for the next ``SLOW_FOR_S`` seconds (calls of it already queued included); then it gets
  one inline call again, which sends it back if it is long too.  Short calls between long
  ones (a module whose cost depends on its input) do not keep it inline.  A call's time is the CPU
  time of the loop's thread (page faults included), not wall time, and one long call is
  not enough (ADR 0036): a trivial call that the OS preempted, or inside which a full
  garbage collection ran (about 30 ms in the API process), is not slow, and sending its
  module to threads would only cost a thread hop per call.

* **A tenant's thread calls go through its own lane** (ADR 0040).  At most
  ``TenantLanes.per_tenant`` of one tenant's calls run in worker threads at once; the rest
  wait in that tenant's FIFO queue, so a tenant with many streams of slow calls cannot
  occupy every worker thread (and every core) next to the event loop that serves the other
  tenants' inline calls.

Each call runs in the context (:mod:`contextvars`) of the task that queued it.  A call whose
waiting task was cancelled before its turn is not made.  This module uses asyncio directly
(``loop.call_soon``, which anyio does not offer), so it lives in the API package rather than
in the anyio-only ``spectral_core``; the API runs on anyio's asyncio backend.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

import msgspec

from spectral_core.errors import BudgetExceeded, ConfigError
from spectral_core.sandbox import Budget, CompiledModule, Result, Sandbox
from spectral_core.sandbox.lanes import TenantLanes
from spectral_core.settings import SANDBOX_INLINE_BATCH, SANDBOX_INLINE_MS

__all__ = ["SLOW_FOR_S", "DecisionRunner"]

#: How long a module whose inline call ran longer than ``inline_ms`` stays on threads.
SLOW_FOR_S: Final = 10.0
#: Modules remembered as slow (oldest forgotten first: they just get one inline call again).
_MAX_SLOW: Final = 4096
#: A module is slow when two of its last ``_RECENT`` inline calls were long (ADR 0036): a
#: garbage collection inside a call (every few thousand requests) is long once, a module
#: whose cost depends on its input is long again among its next calls.
_RECENT: Final = 8

#: a queued call's future: its result, or None for "run it in a thread" (a slow module)
_Call = tuple["asyncio.Future[Result | None]", contextvars.Context, CompiledModule, bytes, Budget]


class _LoopQueue:
    """The inline calls queued on one event loop, and whether a drain is scheduled."""

    __slots__ = ("calls", "loop", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls: deque[_Call] = deque()
        self.scheduled = False


class DecisionRunner:
    """Run decisions from async code: inline (batched) when short, in a thread otherwise.

    Args:
        sandbox: The sandbox that runs the calls.
        inline_fuel: Fuel of the inline attempt; 0 (or not below a call's budget) sends
            every call to a worker thread.
        max_batch: Inline calls made back to back per event-loop iteration; 0 makes each
            inline call in the task that asked for it.
        inline_ms: Time one inline batch may use, and the longest a module's inline calls
            may take (two of its last eight) before it is sent to threads for ``SLOW_FOR_S`` (CPU
            time of the event loop's thread).
        lanes: Per-tenant lanes into the worker threads (ADR 0040); None: none (every
            thread call goes straight to the sandbox's own thread limiter).
        clock: Monotonic clock in seconds, for the ``SLOW_FOR_S`` window (tests).

    Raises:
        ConfigError: A negative ``inline_fuel`` or ``max_batch``, a non-positive
            ``inline_ms``.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        inline_fuel: int = 200_000,
        max_batch: int = SANDBOX_INLINE_BATCH,
        inline_ms: float = SANDBOX_INLINE_MS,
        lanes: TenantLanes | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if inline_fuel < 0 or max_batch < 0 or not inline_ms > 0:
            raise ConfigError("inline_fuel and max_batch must not be negative, inline_ms > 0")
        self.sandbox = sandbox
        self.inline_fuel = inline_fuel
        self.max_batch = max_batch
        self.inline_s = inline_ms / 1000
        self.lanes = lanes
        self._clock = clock
        #: content hash -> clock time until which the module's calls run in threads
        self._slow: OrderedDict[str, float] = OrderedDict()
        #: content hash -> its last ``_RECENT`` inline calls, one bit each (1: long)
        self._recent: dict[str, int] = {}
        self._last: tuple[Budget, Budget] | None = None  # (budget, its inline budget)
        self._queue: _LoopQueue | None = None

    async def run(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget, tenant: str = ""
    ) -> Result:
        """Run one decision (see the module docstring for where it runs).

        ``tenant`` names the lane of a call that runs in a worker thread.

        Raises:
            BudgetExceeded: A budget of the full run was exhausted.
            ModuleTrap: The module trapped or returned invalid JSON.
            SandboxError: The sandbox refused the call.
        """
        if 0 < self.inline_fuel < budget.fuel and not self.is_slow(compiled):
            last = self._last
            if last is not None and last[0] is budget:  # the usual case: one budget object
                small = last[1]
            else:
                small = msgspec.structs.replace(budget, fuel=self.inline_fuel)
                self._last = (budget, small)
            try:
                if self.max_batch:
                    result = await self._queued(compiled, input_json, small)
                    if result is not None:
                        return result
                else:
                    started = time.thread_time()
                    try:
                        return self.sandbox.run(compiled, input_json, small)
                    finally:
                        self._timed(compiled, time.thread_time() - started)
            except BudgetExceeded as exc:
                if exc.context.get("budget") not in ("fuel", "deadline"):
                    raise
        if self.lanes is None:
            return await self.sandbox.run_async(compiled, input_json, budget)
        async with self.lanes.lane(tenant):
            return await self.sandbox.run_async(compiled, input_json, budget)

    def is_slow(self, compiled: CompiledModule) -> bool:
        """Whether ``compiled`` runs in threads for now (an inline call of it ran long)."""
        until = self._slow.get(compiled.content_hash)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._slow[compiled.content_hash]  # its time is up: one inline call again
        return False

    def _timed(self, compiled: CompiledModule, spent: float) -> None:
        """Send ``compiled`` to threads for a while if two of its last ``_RECENT`` inline
        calls took too long (one long call alone may be a garbage collection that ran
        inside it; a short call in between does not make the long ones fast)."""
        key = compiled.content_hash
        recent = self._recent.get(key, 0)
        if spent <= self.inline_s:
            if recent:
                recent = (recent << 1) & ((1 << _RECENT) - 1)
                if recent:
                    self._recent[key] = recent
                else:
                    del self._recent[key]
            return
        recent = ((recent << 1) | 1) & ((1 << _RECENT) - 1)
        if recent == 1:  # the only long call among its recent ones
            if key not in self._recent and len(self._recent) >= _MAX_SLOW:
                self._recent.clear()
            self._recent[key] = recent
            return
        self._recent[key] = recent
        # its bits are kept: after its time in threads, one more long call sends it back
        self._slow[key] = self._clock() + SLOW_FOR_S
        self._slow.move_to_end(key)
        while len(self._slow) > _MAX_SLOW:
            self._slow.popitem(last=False)

    def _queued(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget
    ) -> asyncio.Future[Result | None]:
        loop = asyncio.get_running_loop()
        queue = self._queue
        if queue is None or queue.loop is not loop:
            # a runner is normally used on one loop; a new loop (tests, a restarted server)
            # starts a new queue: calls queued on a loop that stopped can never run anyway
            queue = self._queue = _LoopQueue(loop)
        future: asyncio.Future[Result | None] = loop.create_future()
        queue.calls.append((future, contextvars.copy_context(), compiled, input_json, budget))
        if not queue.scheduled:
            queue.scheduled = True
            loop.call_soon(self._drain, queue)
        return future

    def _drain(self, queue: _LoopQueue) -> None:
        queue.scheduled = False
        calls = queue.calls
        run = self.sandbox.run
        clock = time.thread_time  # the loop thread's CPU time (ADR 0036)
        now = started = clock()
        try:
            for _ in range(min(len(calls), self.max_batch)):
                future, context, compiled, input_json, budget = calls.popleft()
                if future.cancelled():  # its request went away: nothing waits for the call
                    continue
                if self._slow and self.is_slow(compiled):
                    future.set_result(None)  # to a thread (made slow earlier in the batch)
                    continue
                before = now
                try:
                    result = context.run(run, compiled, input_json, budget)
                except Exception as exc:  # noqa: BLE001 - delivered to the waiting request
                    future.set_exception(exc)
                except BaseException:  # KeyboardInterrupt, SystemExit: stop, do not hang
                    future.cancel()
                    raise
                else:
                    future.set_result(result)
                now = clock()
                self._timed(compiled, now - before)
                if now - started > self.inline_s:
                    break  # the batch used its time: the rest after an I/O poll
        finally:
            if calls and not queue.scheduled:  # the rest: next iteration, after an I/O poll
                queue.scheduled = True
                queue.loop.call_soon(self._drain, queue)
