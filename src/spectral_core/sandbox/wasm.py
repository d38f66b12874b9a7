"""WebAssembly sandbox on wasmtime: no imports, fuel, epoch deadline, store limits.

Isolation model (see ``docs/adr/0004-sandbox-wasmtime.md``):

* A module that declares **any import** is refused at compile time, and no WASI is ever
  linked: the guest can reach no file, socket, clock, randomness or environment.
* **CPU**: fuel metering (``Config.consume_fuel``); the store gets ``Budget.fuel`` units.
* **Wall clock**: epoch interruption.  One background :class:`EpochTicker` thread per engine
  increments the epoch every ``epoch_interval_ms``; each call's store gets a deadline of
  ``ceil(deadline_ms / interval) + 1`` ticks.  The ticker is started and stopped explicitly
  (:meth:`WasmSandbox.start` / :meth:`WasmSandbox.stop`), never at import.
* **Memory**: ``Store.set_limits`` caps linear memory at ``Budget.memory_bytes``, one memory,
  one table of bounded size and one instance.  A growth past the cap makes ``memory.grow``
  return -1; a guest that then fails (traps) while its memory is at the cap is reported as
  ``BudgetExceeded(budget="memory")``.
* **Output**: the output length is checked against ``Budget.output_bytes`` before it is read.
* **No state leaks**: every call gets a fresh ``Store`` and instance; the compiled
  ``wasmtime.Module`` is immutable and reused across calls and threads.

Two call paths (ADR 0026): wasmtime's C API through :mod:`._capi` (the fast path, used when
the installed wasmtime is one of its tested majors) and wasmtime-py's public API
(:func:`_call_public`).  Both give the same results and errors; the tests run on both.

The JSON-in/JSON-out ABI is documented in ``docs/reference/sandbox-abi.md``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from types import ModuleType
from typing import Any, Final, Literal

import anyio
import anyio.to_thread
import msgspec
import structlog
import wasmtime

from spectral_core.errors import BudgetExceeded, ConfigError, ModuleTrap, SandboxError
from spectral_core.sandbox import Budget, CompiledModule, Result, Usage
from spectral_core.sandbox._errors import (
    PAGE,
    U32,
    U64,
    check_output,
    classify_trap,
    first_line,
    runtime_error,
)
from spectral_core.sandbox.depth import exceeds_depth, may_exceed_depth

__all__ = [
    "CompiledWasm",
    "EpochTicker",
    "WasmSandbox",
    "self_test",
]

log = structlog.get_logger(__name__)

_WASM_MAGIC: Final = b"\0asm"

#: The C API fast path (:mod:`._capi`, ADR 0026), or None with the reason it is unavailable.
_capi: ModuleType | None
try:
    from spectral_core.sandbox import _capi
except ImportError as _exc:  # pragma: no cover - depends on the installed wasmtime
    _capi, _CAPI_UNAVAILABLE = None, str(_exc)
else:
    _CAPI_UNAVAILABLE = ""

#: ``auto``: the C API path when its version check passed, else the public one (warned);
#: ``capi``: the C API path or a ConfigError; ``public``: wasmtime-py's documented API only.
Binding = Literal["auto", "capi", "public"]

#: The ABI: export name -> (param types, result types); "memory" must be a 32-bit memory.
_ABI_FUNCS: Final = {
    "alloc": (("i32",), ("i32",)),
    "decide": (("i32", "i32"), ("i64",)),
}


class CompiledWasm:
    """A validated, compiled module: immutable, shareable across threads and calls.

    Attributes:
        module: The compiled ``wasmtime.Module``.
        content_hash: Hex sha256 of the module bytes.
        size: Length of the module bytes.
    """

    __slots__ = ("address", "content_hash", "engine", "module", "size")

    def __init__(
        self,
        module: wasmtime.Module,
        engine: wasmtime.Engine,
        content_hash: str,
        size: int,
        address: int = 0,
    ) -> None:
        self.module = module
        self.engine = engine
        self.content_hash = content_hash
        self.size = size
        #: the ``wasmtime_module_t *`` for the C API path (valid while ``module`` is: this
        #: object holds it), 0 on the public path
        self.address = address

    def __repr__(self) -> str:
        return f"CompiledWasm(content_hash={self.content_hash[:16]}…, size={self.size})"


class EpochTicker:
    """One background thread incrementing an engine's epoch at a fixed interval.

    Start/stop are reference-counted so several owners may share one engine's ticker.
    The thread is a daemon and holds no Python state besides the engine.
    """

    def __init__(self, engine: wasmtime.Engine, interval_s: float) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._users = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the ticker thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the ticker thread (or add a user to an already-running ticker)."""
        with self._lock:
            self._users += 1
            if self._thread is not None:
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._tick, args=(stop,), name="spectral-epoch-ticker", daemon=True
            )
            self._stop, self._thread = stop, thread
            thread.start()
        log.debug("sandbox.ticker_started", interval_s=self._interval_s)

    def stop(self) -> None:
        """Drop one user; stop and join the thread when the last user leaves.  Idempotent."""
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users > 0:
                return
            stop, thread = self._stop, self._thread
            self._stop = self._thread = None
        if stop is not None and thread is not None:
            stop.set()
            thread.join()
            log.debug("sandbox.ticker_stopped")

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            self._engine.increment_epoch()


class WasmSandbox:
    """The wasmtime implementation of :class:`spectral_core.sandbox.Sandbox`.

    Usage::

        with WasmSandbox() as sandbox:          # starts the epoch ticker
            compiled = sandbox.compile(wasm_bytes)
            result = sandbox.run(compiled, b'{"amount": 10}', Budget(fuel=1_000_000))

    Args:
        default_budget: Budget used when a call passes none.
        epoch_interval_ms: Ticker interval; the deadline is enforced with this granularity.
        max_threads: Concurrent :meth:`run_async` calls (own ``CapacityLimiter``).
        max_module_bytes: Largest module accepted by :meth:`compile`.
        max_table_elements: Cap on table elements per instance.
        max_wasm_stack: Guest stack size in bytes (deep recursion traps beyond it).
        instance_slots: Instances that may exist at once (wasmtime's pooling allocator,
            default ``2 * max_threads + 16``): a call that finds every slot taken fails
            with ``SandboxError(reason="busy")``.  Linear memory per slot is capped at
            ``default_budget.memory_bytes``; a call with a larger memory budget is refused.
            Only on the C API path (the public API cannot configure the allocator).
        binding: ``auto`` (default): the C API fast path when wasmtime is in its tested
            majors, else the public path with a warning; ``capi``: the fast path or a
            ConfigError; ``public``: wasmtime-py's documented API only (ADR 0026).

    Raises:
        ConfigError: A setting is out of range, or ``binding="capi"`` without the fast path.
    """

    def __init__(
        self,
        *,
        default_budget: Budget | None = None,
        epoch_interval_ms: float = 5.0,
        max_threads: int = 8,
        max_module_bytes: int = 16 * 1024 * 1024,
        max_table_elements: int = 10_000,
        max_wasm_stack: int = 512 * 1024,
        instance_slots: int | None = None,
        binding: Binding = "auto",
    ) -> None:
        slots = 2 * max_threads + 16 if instance_slots is None else instance_slots
        if epoch_interval_ms <= 0 or max_threads < 1 or max_module_bytes < 8 or slots < 1:
            raise ConfigError("invalid sandbox settings")
        self.default_budget = default_budget or Budget()
        self._interval_ms = epoch_interval_ms
        self._max_module_bytes = max_module_bytes
        self._max_table_elements = max_table_elements
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.max_wasm_stack = max_wasm_stack
        config.wasm_threads = False
        config.wasm_memory64 = False
        config.wasm_multi_memory = False
        config.cranelift_opt_level = "speed"
        self._max_memory_bytes = -(-self.default_budget.memory_bytes // PAGE) * PAGE
        self._capi = _choose_binding(binding)
        #: the call path in use: ``capi`` or ``public``
        self.binding: Literal["capi", "public"] = "public" if self._capi is None else "capi"
        self._pooled = self._capi is not None and self._capi.use_pooling(
            config, slots, self._max_memory_bytes, max_table_elements
        )
        self.engine = wasmtime.Engine(config)
        self._engine_address = 0 if self._capi is None else self._capi.address(self.engine)
        self.ticker = EpochTicker(self.engine, epoch_interval_ms / 1000.0)
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._self_test_module: CompiledWasm | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the epoch ticker; required before :meth:`run` (deadlines need it)."""
        self.ticker.start()

    def stop(self) -> None:
        """Stop the epoch ticker.  Idempotent."""
        self.ticker.stop()

    def __enter__(self) -> WasmSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- compile -----------------------------------------------------------------------

    def compile(self, module: bytes) -> CompiledWasm:
        """Validate and compile module bytes; the result is reusable for any number of calls.

        Args:
            module: A WebAssembly binary (text format is not accepted here).

        Returns:
            The compiled module.

        Raises:
            SandboxError: Not a WebAssembly binary, invalid, too large, or refused because
                it declares imports (``.reason`` is ``"invalid"``, ``"too_large"`` or
                ``"imports"``).
            ModuleTrap: The module does not export the ABI (``.reason == "abi"``).
            BudgetExceeded: Its initial memory exceeds the per-instance memory ceiling
                (``.budget == "memory"``): it could never run here.
        """
        if not isinstance(module, bytes | bytearray | memoryview):
            raise SandboxError("module must be bytes", reason="invalid")
        data = bytes(module)
        if len(data) > self._max_module_bytes:
            raise SandboxError(
                "module is too large",
                reason="too_large",
                size=len(data),
                limit=self._max_module_bytes,
            )
        if not data.startswith(_WASM_MAGIC):
            raise SandboxError("not a WebAssembly binary module", reason="invalid")
        try:
            compiled = wasmtime.Module(self.engine, data)
        except wasmtime.WasmtimeError as exc:
            detail = first_line(exc)
            if "memory" in detail and "exceeds the limit" in detail:
                # the pooling allocator's per-instance memory ceiling: it could never run
                raise BudgetExceeded(
                    "module's initial memory exceeds the sandbox's memory ceiling",
                    budget="memory",
                    limit=self._max_memory_bytes,
                    detail=detail,
                ) from exc
            raise SandboxError(
                "invalid WebAssembly module", reason="invalid", detail=detail
            ) from exc
        imports = [f"{imp.module}.{imp.name}" for imp in compiled.imports]
        if imports:
            raise SandboxError(
                f"module declares imports, which the sandbox refuses: {', '.join(imports)}",
                reason="imports",
                imports=imports,
            )
        _check_abi(compiled)
        address = 0 if self._capi is None else self._capi.address(compiled)
        return CompiledWasm(
            compiled, self.engine, hashlib.sha256(data).hexdigest(), len(data), address
        )

    # -- run ---------------------------------------------------------------------------

    def run(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        """Run ``decide`` once, synchronously, in a fresh store and instance.

        Args:
            compiled: A module compiled by this sandbox.
            input_json: The input document (passed to the guest as-is).
            budget: Limits for this call; ``default_budget`` when omitted.

        Returns:
            The validated output and the resources used.

        Raises:
            BudgetExceeded: ``.budget`` is ``"fuel"``, ``"deadline"``, ``"memory"`` or
                ``"output"``.
            ModuleTrap: The guest trapped (``.trap_code``), broke the ABI or returned
                invalid JSON (``.reason``).
            SandboxError: The ticker is not running, or the module was compiled elsewhere.
        """
        if not self.ticker.running:
            raise SandboxError(
                "sandbox is not started: no wall-clock deadline enforcement",
                reason="not_started",
            )
        return self._run(compiled, input_json, budget or self.default_budget)

    async def run_async(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        """Run :meth:`run` in a worker thread so a slow module never stalls the event loop.

        Calls are bounded by this sandbox's own ``CapacityLimiter``.  Cancelling the caller
        does not abandon the thread; the call ends at its deadline at the latest.

        Raises:
            BudgetExceeded: As :meth:`run`.
            ModuleTrap: As :meth:`run`.
            SandboxError: As :meth:`run`.
        """
        return await anyio.to_thread.run_sync(
            self.run, compiled, input_json, budget, limiter=self._limiter
        )

    def _run(self, compiled: CompiledModule, input_json: bytes, budget: Budget) -> Result:
        if not isinstance(compiled, CompiledWasm) or compiled.engine is not self.engine:
            raise SandboxError("module was not compiled by this sandbox", reason="foreign")
        if self._pooled and budget.memory_bytes > self._max_memory_bytes:
            raise SandboxError(
                "the budget's memory exceeds this sandbox's per-instance memory ceiling",
                reason="budget",
                memory_bytes=budget.memory_bytes,
                ceiling=self._max_memory_bytes,
            )
        started = time.perf_counter_ns()
        ticks = math.ceil(budget.deadline_ms / self._interval_ms) + 1
        if self._capi is not None:
            output, pages, fuel_left = self._capi.call(
                self._engine_address,
                compiled.address,
                input_json,
                budget,
                ticks,
                self._max_table_elements,
            )
        else:
            output, pages, fuel_left = _call_public(
                self.engine, compiled.module, input_json, budget, ticks, self._max_table_elements
            )
        value = _decode_output(output, budget)
        usage = Usage(
            fuel_consumed=budget.fuel - fuel_left,
            wall_time_us=(time.perf_counter_ns() - started) // 1000,
            memory_pages=pages,
            memory_bytes=pages * PAGE,
        )
        return Result(output=output, value=value, usage=usage)


#: (output bytes, memory pages at the end, fuel left)
_Outcome = tuple[bytes, int, int]


def _decode_output(output: bytes, budget: Budget) -> Any:
    """The output document, decoded, within the budget's nesting depth."""
    try:
        value = msgspec.json.decode(output)
    except msgspec.DecodeError as exc:
        raise ModuleTrap(
            "module returned invalid JSON", reason="invalid_json", detail=str(exc)
        ) from exc
    except RecursionError:  # deeper than the decoder can go: deeper than any budget too
        raise _too_deep(budget) from None
    if may_exceed_depth(output, budget.json_depth) and exceeds_depth(value, budget.json_depth):
        raise _too_deep(budget)
    return value


def _too_deep(budget: Budget) -> BudgetExceeded:
    return BudgetExceeded(
        "module output nests deeper than the json_depth budget",
        budget="json_depth",
        limit=budget.json_depth,
    )


def _call_public(
    engine: wasmtime.Engine,
    module: wasmtime.Module,
    input_json: bytes,
    budget: Budget,
    ticks: int,
    max_table_elements: int,
) -> _Outcome:
    """One call through wasmtime-py's documented API (the ``public`` binding)."""
    store = wasmtime.Store(engine)
    memory: wasmtime.Memory | None = None
    try:
        store.set_limits(
            memory_size=budget.memory_bytes,
            table_elements=max_table_elements,
            instances=1,
            tables=1,
            memories=1,
        )
        store.set_fuel(budget.fuel)
        store.set_epoch_deadline(ticks)
        try:
            instance = wasmtime.Instance(store, module, [])
            exports = instance.exports(store)
            exported, alloc, decide = exports["memory"], exports["alloc"], exports["decide"]
            if not (
                isinstance(exported, wasmtime.Memory)
                and isinstance(alloc, wasmtime.Func)
                and isinstance(decide, wasmtime.Func)
            ):
                raise ModuleTrap("module does not export the sandbox ABI", reason="abi")
            memory = exported
            length = len(input_json)
            ptr = alloc(store, length)
            assert isinstance(ptr, int)
            ptr &= U32
            if ptr + length > memory.data_len(store):
                raise ModuleTrap("alloc returned a region outside memory", reason="abi")
            if length:
                memory.write(store, input_json, ptr)
            packed = decide(store, ptr, length)
            assert isinstance(packed, int)
            packed &= U64
            out_ptr, out_len = packed >> 32, packed & U32
            check_output(out_ptr, out_len, memory.data_len(store), budget)
            output = bytes(memory.read(store, out_ptr, out_ptr + out_len))
        except wasmtime.Trap as exc:
            pages = memory.size(store) if memory is not None else None
            raise classify_trap(exc, pages, budget) from exc
        except wasmtime.WasmtimeError as exc:
            raise runtime_error(exc, budget) from exc
        return output, memory.size(store), store.get_fuel()
    finally:
        store.close()


_warned = False


def _choose_binding(binding: Binding) -> ModuleType | None:
    """The C API module for ``binding``, or None for the public path."""
    global _warned
    if binding == "public":
        return None
    if binding == "capi":
        if _capi is None:
            raise ConfigError("the sandbox's C API path is unavailable", reason=_CAPI_UNAVAILABLE)
        return _capi
    if binding != "auto":
        raise ConfigError("sandbox binding must be auto, capi or public", binding=binding)
    if _capi is None and not _warned:  # pragma: no cover - depends on the installed wasmtime
        _warned = True
        log.warning("sandbox.public_path", reason=_CAPI_UNAVAILABLE)
    return _capi


def _check_abi(module: wasmtime.Module) -> None:
    exports = {exp.name: exp.type for exp in module.exports}
    problems: list[str] = []
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        problems.append("missing memory export 'memory'")
    elif memory.is_64 or memory.is_shared:
        problems.append("'memory' must be a 32-bit, unshared memory")
    for name, (params, results) in _ABI_FUNCS.items():
        func = exports.get(name)
        if not isinstance(func, wasmtime.FuncType):
            problems.append(f"missing function export {name!r}")
            continue
        got = (tuple(str(p) for p in func.params), tuple(str(r) for r in func.results))
        if got != (params, results):
            problems.append(f"{name!r} has signature {got}, expected {(params, results)}")
    if problems:
        raise ModuleTrap(
            f"module does not implement the sandbox ABI: {'; '.join(problems)}",
            reason="abi",
            problems=problems,
        )


# -- self test (used by /health) ------------------------------------------------------------

#: A tiny echo module: a bump allocator and ``decide`` returning its input.
SELF_TEST_WAT: Final = """
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $ptr))
  (func (export "decide") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
"""

_SELF_TEST_INPUT: Final = b'{"self_test":true}'
_SELF_TEST_BUDGET: Final = Budget(fuel=100_000, deadline_ms=1000, memory_bytes=PAGE * 2)
_default_sandbox: WasmSandbox | None = None
_self_test_lock = threading.Lock()


def self_test(sandbox: WasmSandbox | None = None) -> bool:
    """Compile (once, cached) and run a built-in echo module; never raises.

    Runs on ``sandbox`` (its engine configuration is what production uses) or on a private
    default sandbox.  The built-in module is trusted and fuel-bounded, so the call does not
    need the epoch ticker to be running.

    Args:
        sandbox: The sandbox to check; a lazily built private one when omitted.

    Returns:
        True when the module compiled, ran and echoed its input.
    """
    global _default_sandbox
    try:
        with _self_test_lock:
            if sandbox is None:
                if _default_sandbox is None:
                    _default_sandbox = WasmSandbox()
                sandbox = _default_sandbox
            compiled = sandbox._self_test_module
            if compiled is None:
                compiled = sandbox.compile(bytes(wasmtime.wat2wasm(SELF_TEST_WAT)))
                sandbox._self_test_module = compiled
        result = sandbox._run(compiled, _SELF_TEST_INPUT, _SELF_TEST_BUDGET)
        return result.output == _SELF_TEST_INPUT
    except Exception:  # noqa: BLE001 - a health probe reports, it does not raise
        log.warning("sandbox.self_test_failed", exc_info=True)
        return False
