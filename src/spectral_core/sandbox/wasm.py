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

The JSON-in/JSON-out ABI is documented in ``docs/reference/sandbox-abi.md``.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import threading
import time
from typing import Final

import anyio
import anyio.to_thread
import msgspec
import structlog
import wasmtime

from spectral_core.errors import BudgetExceeded, ConfigError, ModuleTrap, SandboxError
from spectral_core.sandbox import Budget, CompiledModule, Result, Usage

__all__ = [
    "CompiledWasm",
    "EpochTicker",
    "WasmSandbox",
    "self_test",
]

log = structlog.get_logger(__name__)

_PAGE: Final = 65536
_WASM_MAGIC: Final = b"\0asm"
_U32: Final = 0xFFFF_FFFF
_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

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

    __slots__ = ("content_hash", "engine", "module", "size")

    def __init__(
        self, module: wasmtime.Module, engine: wasmtime.Engine, content_hash: str, size: int
    ) -> None:
        self.module = module
        self.engine = engine
        self.content_hash = content_hash
        self.size = size

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

    Raises:
        ConfigError: A setting is out of range.
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
        self._max_memory_bytes = -(-self.default_budget.memory_bytes // _PAGE) * _PAGE
        self._pooled = _FAST and _use_pooling(
            config, slots, self._max_memory_bytes, max_table_elements
        )
        self.engine = wasmtime.Engine(config)
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
            detail = _first_line(exc)
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
        return CompiledWasm(compiled, self.engine, hashlib.sha256(data).hexdigest(), len(data))

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
        call = _call_ffi if _FAST else _call_public
        output, pages, fuel_left = call(
            self.engine,
            compiled.module,
            input_json,
            budget,
            math.ceil(budget.deadline_ms / self._interval_ms) + 1,
            self._max_table_elements,
        )
        try:
            value = msgspec.json.decode(output)
        except msgspec.DecodeError as exc:
            raise ModuleTrap(
                "module returned invalid JSON", reason="invalid_json", detail=str(exc)
            ) from exc
        usage = Usage(
            fuel_consumed=budget.fuel - fuel_left,
            wall_time_us=(time.perf_counter_ns() - started) // 1000,
            memory_pages=pages,
            memory_bytes=pages * _PAGE,
        )
        return Result(output=output, value=value, usage=usage)


#: (output bytes, memory pages at the end, fuel left)
_Outcome = tuple[bytes, int, int]


def _check_output(out_ptr: int, out_len: int, memory_len: int, budget: Budget) -> None:
    if out_len > budget.output_bytes:
        raise BudgetExceeded(
            "module output exceeds the output budget",
            budget="output",
            size=out_len,
            limit=budget.output_bytes,
        )
    if out_ptr + out_len > memory_len:
        raise ModuleTrap("decide returned a region outside memory", reason="abi")


def _runtime_error(
    exc: wasmtime.WasmtimeError, budget: Budget
) -> BudgetExceeded | ModuleTrap | SandboxError:
    detail = _first_line(exc)
    if "concurrent" in detail and "limit" in detail:  # every pooled instance slot is taken
        return SandboxError("sandbox busy: no free instance slot", reason="busy", detail=detail)
    if "memory" in detail and "limit" in detail:
        return BudgetExceeded(
            "module memory exceeds the memory budget",
            budget="memory",
            limit=budget.memory_bytes,
            detail=detail,
        )
    return ModuleTrap("module failed to run", reason="error", detail=detail)


def _call_public(
    engine: wasmtime.Engine,
    module: wasmtime.Module,
    input_json: bytes,
    budget: Budget,
    ticks: int,
    max_table_elements: int,
) -> _Outcome:
    """One call through wasmtime-py's documented API (fallback for the FFI path)."""
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
            memory, alloc, decide = exports["memory"], exports["alloc"], exports["decide"]
            if not (
                isinstance(memory, wasmtime.Memory)
                and isinstance(alloc, wasmtime.Func)
                and isinstance(decide, wasmtime.Func)
            ):
                raise ModuleTrap("module does not export the sandbox ABI", reason="abi")
            length = len(input_json)
            ptr = alloc(store, length)
            assert isinstance(ptr, int)
            ptr &= _U32
            if ptr + length > memory.data_len(store):
                raise ModuleTrap("alloc returned a region outside memory", reason="abi")
            if length:
                memory.write(store, input_json, ptr)
            packed = decide(store, ptr, length)
            assert isinstance(packed, int)
            packed &= _U64
            out_ptr, out_len = packed >> 32, packed & _U32
            _check_output(out_ptr, out_len, memory.data_len(store), budget)
            output = bytes(memory.read(store, out_ptr, out_ptr + out_len))
        except wasmtime.Trap as exc:
            pages = memory.size(store) if memory is not None else None
            raise _classify_trap(exc, pages, budget) from exc
        except wasmtime.WasmtimeError as exc:
            raise _runtime_error(exc, budget) from exc
        return output, memory.size(store), store.get_fuel()
    finally:
        store.close()


# -- the C API path -----------------------------------------------------------------------------
#
# wasmtime-py's wrappers cost more than the work on this path: ``Func.__call__`` re-reads the
# function type and converts every value (~35 us per call), ``Instance.exports`` and
# ``Memory.read``/``write`` build Python objects and bytearrays, and ``Store`` goes through
# ``Managed``.  A decision call is a fresh store, one instantiation, two calls with i32
# arguments and two memory copies, so ``_call_ffi`` makes exactly those C calls through
# wasmtime-py's own ctypes bindings (the ABI signatures and kinds are checked at compile time
# by ``_check_abi`` and again per call by export kind).  These bindings are not wasmtime-py's
# documented API: if any is missing (another wasmtime-py version) ``_call_public`` is used.
# Host-side Python exceptions cannot occur (no imports), so no "last exception" check is needed.

try:
    from wasmtime import _ffi as _wffi

    _FAST: bool = all(
        hasattr(_wffi, name)
        for name in (
            "wasmtime_store_new",
            "wasmtime_store_context",
            "wasmtime_store_limiter",
            "wasmtime_store_delete",
            "wasmtime_context_set_fuel",
            "wasmtime_context_get_fuel",
            "wasmtime_context_set_epoch_deadline",
            "wasmtime_instance_new",
            "wasmtime_instance_t",
            "wasmtime_instance_export_get",
            "wasmtime_func_call",
            "wasmtime_memory_data",
            "wasmtime_memory_data_size",
            "wasmtime_memory_size",
            "wasmtime_val_t",
            "wasmtime_extern_t",
            "wasm_trap_t",
            "WASMTIME_I32",
            "WASMTIME_I64",
            "WASMTIME_EXTERN_FUNC",
            "WASMTIME_EXTERN_MEMORY",
        )
    )
    _I32_KIND: int = int(_wffi.WASMTIME_I32.value)
    _I64_KIND: int = int(_wffi.WASMTIME_I64.value)
    _ABI_KINDS: tuple[int, int, int] = (
        int(_wffi.WASMTIME_EXTERN_MEMORY.value),
        int(_wffi.WASMTIME_EXTERN_FUNC.value),
        int(_wffi.WASMTIME_EXTERN_FUNC.value),
    )
except (ImportError, AttributeError):  # pragma: no cover - depends on wasmtime-py
    _FAST = False


def _use_pooling(
    config: wasmtime.Config, slots: int, max_memory_bytes: int, max_table_elements: int
) -> bool:
    """Switch ``config`` to wasmtime's pooling instance allocator, if the binding exists.

    Every call instantiates its module afresh; with the pooling allocator an instance takes
    a pre-reserved slot (memory, table, instance state) instead of fresh ``mmap`` calls, and
    giving it back only resets the pages it touched.  About half the cost of a store plus an
    instance on the on-demand allocator (``bench/bench_sandbox.py``).
    """
    names = (
        "wasmtime_pooling_allocation_config_new",
        "wasmtime_pooling_allocation_config_delete",
        "wasmtime_pooling_allocation_config_total_core_instances_set",
        "wasmtime_pooling_allocation_config_total_memories_set",
        "wasmtime_pooling_allocation_config_total_tables_set",
        "wasmtime_pooling_allocation_config_max_memory_size_set",
        "wasmtime_pooling_allocation_config_table_elements_set",
        "wasmtime_pooling_allocation_strategy_set",
    )
    if not all(hasattr(_wffi, name) for name in names):  # pragma: no cover - wasmtime-py
        return False
    pool = _wffi.wasmtime_pooling_allocation_config_new()
    try:
        _wffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, slots)
        _wffi.wasmtime_pooling_allocation_config_total_memories_set(pool, slots)
        _wffi.wasmtime_pooling_allocation_config_total_tables_set(pool, slots)
        _wffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, max_memory_bytes)
        _wffi.wasmtime_pooling_allocation_config_table_elements_set(pool, max_table_elements)
        _wffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        _wffi.wasmtime_pooling_allocation_config_delete(pool)
    return True


_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
_ABI_NAMES: Final = (b"memory", b"alloc", b"decide")


class _Scratch:
    """Per-thread ctypes out-parameters of :func:`_call_ffi`, reused across calls.

    A call never re-enters the sandbox (modules have no imports), so one set per thread is
    enough; every field is overwritten by the C call that fills it.  The trap out-pointer is
    only ever set on a trap, so it is replaced after one (wasmtime-py takes ownership).
    """

    __slots__ = (
        "args",
        "args_ref",
        "externs",
        "fuel",
        "fuel_ref",
        "instance",
        "instance_ref",
        "results",
        "results_ref",
        "trap",
        "trap_ref",
    )

    def __init__(self) -> None:
        self.instance = _wffi.wasmtime_instance_t()
        self.instance_ref = ctypes.byref(self.instance)
        self.externs = [
            (name, ext, ctypes.byref(ext))
            for name, ext in ((n, _wffi.wasmtime_extern_t()) for n in _ABI_NAMES)
        ]
        self.args = (_wffi.wasmtime_val_t * 2)()
        self.args[0].kind = self.args[1].kind = _I32_KIND
        self.results = (_wffi.wasmtime_val_t * 1)()
        self.fuel = ctypes.c_uint64(0)
        self.fuel_ref = ctypes.byref(self.fuel)
        self.new_trap()

    def new_trap(self) -> None:
        self.trap = ctypes.POINTER(_wffi.wasm_trap_t)()
        self.trap_ref = ctypes.byref(self.trap)

    def take_trap(self) -> wasmtime.Trap:
        trap = wasmtime.Trap._from_ptr(self.trap)
        self.new_trap()
        return trap


_scratch = threading.local()


def _ffi_invoke(ctx: object, func: object, nargs: int, sc: _Scratch) -> int:
    """``wasmtime_func_call`` with the i32 arguments in ``sc.args``; one integer result."""
    error = _wffi.wasmtime_func_call(ctx, func, sc.args, nargs, sc.results, 1, sc.trap_ref)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if sc.trap:
        raise sc.take_trap()
    value = sc.results[0]
    return int(value.of.i64 if value.kind == _I64_KIND else value.of.i32)


def _call_ffi(
    engine: wasmtime.Engine,
    module: wasmtime.Module,
    input_json: bytes,
    budget: Budget,
    ticks: int,
    max_table_elements: int,
) -> _Outcome:
    """One call on wasmtime's C API directly: the same steps as :func:`_call_public`."""
    sc: _Scratch | None = getattr(_scratch, "sc", None)
    if sc is None:
        sc = _scratch.sc = _Scratch()
    store = _wffi.wasmtime_store_new(engine.ptr(), None, _NO_FINALIZER)
    memory: object = None
    ctx = _wffi.wasmtime_store_context(store)
    try:
        _wffi.wasmtime_store_limiter(store, budget.memory_bytes, max_table_elements, 1, 1, 1)
        error = _wffi.wasmtime_context_set_fuel(ctx, budget.fuel)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        _wffi.wasmtime_context_set_epoch_deadline(ctx, ticks)
        try:
            error = _wffi.wasmtime_instance_new(
                ctx, module.ptr(), None, 0, sc.instance_ref, sc.trap_ref
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
            if sc.trap:
                raise sc.take_trap()
            for name, _ext, ext_ref in sc.externs:
                if not _wffi.wasmtime_instance_export_get(
                    ctx, sc.instance_ref, name, len(name), ext_ref
                ):
                    raise ModuleTrap("module does not export the sandbox ABI", reason="abi")
            mem_ext, alloc_ext, decide_ext = (ext for _, ext, _ in sc.externs)
            if (mem_ext.kind, alloc_ext.kind, decide_ext.kind) != _ABI_KINDS:
                raise ModuleTrap("module does not export the sandbox ABI", reason="abi")
            memory = ctypes.byref(mem_ext.of.memory)
            length = len(input_json)
            sc.args[0].of.i32 = length
            ptr = _ffi_invoke(ctx, ctypes.byref(alloc_ext.of.func), 1, sc) & _U32
            if ptr + length > _wffi.wasmtime_memory_data_size(ctx, memory):
                raise ModuleTrap("alloc returned a region outside memory", reason="abi")
            if length:
                base = ctypes.addressof(_wffi.wasmtime_memory_data(ctx, memory).contents)
                ctypes.memmove(base + ptr, input_json, length)
            sc.args[0].of.i32 = ptr
            sc.args[1].of.i32 = length
            packed = _ffi_invoke(ctx, ctypes.byref(decide_ext.of.func), 2, sc) & _U64
            out_ptr, out_len = packed >> 32, packed & _U32
            _check_output(out_ptr, out_len, _wffi.wasmtime_memory_data_size(ctx, memory), budget)
            output = b""
            if out_len:  # (a memory of 0 pages may have a NULL base)
                base = ctypes.addressof(_wffi.wasmtime_memory_data(ctx, memory).contents)
                output = ctypes.string_at(base + out_ptr, out_len)
        except wasmtime.Trap as exc:
            pages = _wffi.wasmtime_memory_size(ctx, memory) if memory is not None else None
            raise _classify_trap(exc, pages, budget) from exc
        except wasmtime.WasmtimeError as exc:
            raise _runtime_error(exc, budget) from exc
        error = _wffi.wasmtime_context_get_fuel(ctx, sc.fuel_ref)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        return output, int(_wffi.wasmtime_memory_size(ctx, memory)), sc.fuel.value
    finally:
        _wffi.wasmtime_store_delete(store)


def _classify_trap(
    exc: wasmtime.Trap, pages: int | None, budget: Budget
) -> BudgetExceeded | ModuleTrap:
    code = exc.trap_code
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return BudgetExceeded("fuel budget exhausted", budget="fuel", limit=budget.fuel)
    if code == wasmtime.TrapCode.INTERRUPT:
        return BudgetExceeded(
            "wall-clock deadline exceeded", budget="deadline", limit=budget.deadline_ms
        )
    if pages is not None and (pages + 1) * _PAGE > budget.memory_bytes:
        # memory.grow was refused at the cap and the guest gave up (e.g. Rust's OOM abort).
        return BudgetExceeded(
            "module memory exceeds the memory budget", budget="memory", limit=budget.memory_bytes
        )
    name = code.name if code is not None else None
    return ModuleTrap("module trapped", reason="trap", trap_code=name, detail=_first_line(exc))


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:500]
    return type(exc).__name__


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
_SELF_TEST_BUDGET: Final = Budget(fuel=100_000, deadline_ms=1000, memory_bytes=_PAGE * 2)
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
                compiled = sandbox.compile(wasmtime.wat2wasm(SELF_TEST_WAT))
                sandbox._self_test_module = compiled
        result = sandbox._run(compiled, _SELF_TEST_INPUT, _SELF_TEST_BUDGET)
        return result.output == _SELF_TEST_INPUT
    except Exception:  # noqa: BLE001 - a health probe reports, it does not raise
        log.warning("sandbox.self_test_failed", exc_info=True)
        return False
