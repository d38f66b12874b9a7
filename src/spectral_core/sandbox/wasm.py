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
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.to_thread
import msgspec
import structlog
import wasmtime

from spectral_core.errors import BudgetExceeded, ConfigError, ModuleTrap, SandboxError
from spectral_core.sandbox import Budget, CompiledModule, Result, Usage
from spectral_core.sandbox.depth import exceeds_depth, may_exceed_depth

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

    __slots__ = ("address", "content_hash", "engine", "module", "size")

    def __init__(
        self, module: wasmtime.Module, engine: wasmtime.Engine, content_hash: str, size: int
    ) -> None:
        self.module = module
        self.engine = engine
        self.content_hash = content_hash
        self.size = size
        #: the ``wasmtime_module_t *`` (valid while ``module`` is: this object holds it)
        self.address: int = _address(module)

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
        self._engine_address = _address(self.engine)
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
        ticks = math.ceil(budget.deadline_ms / self._interval_ms) + 1
        if _FAST:
            output, pages, fuel_left = _call_ffi(
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


def _runtime_error(
    exc: wasmtime.WasmtimeError | wasmtime.Trap, budget: Budget
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
# arguments and two memory copies, so ``_call_ffi`` makes exactly those C calls, on the
# shared library wasmtime-py loaded, through prototypes of our own (ADR 0012, ADR 0014):
#
# * every argument is a plain integer address (``c_void_p``) or a scalar, so ctypes converts
#   nothing per call; the out-parameters live in one per-thread ``_Frame`` whose field
#   addresses and typed views are computed once;
# * the calls that can run guest code (``wasmtime_instance_new``, ``wasmtime_func_call_*``)
#   and the store teardown release the GIL (``CFUNCTYPE``); the constant-time accessors keep
#   it (``PYFUNCTYPE``): a GIL round trip costs more than they do;
# * the two guest calls use ``wasmtime_func_call_unchecked`` (arguments and results in one
#   ``wasmtime_val_raw_t`` array, no per-call type check): the exact signatures are checked
#   when the module is compiled (``_check_abi``), the kinds of the three exports on every
#   call, and the functions come from this call's own store.
#
# These symbols are not wasmtime-py's documented API: if any is missing (another wasmtime-py
# version) ``_call_public`` is used.  Host-side Python exceptions cannot occur (no imports).

_ABI_NAMES: Final = (b"memory", b"alloc", b"decide")

try:
    from wasmtime import _ffi as _wffi

    _dll = _wffi.dll
    _GIL_RELEASED = ctypes.CFUNCTYPE
    _GIL_HELD = ctypes.PYFUNCTYPE
    _vp, _i64, _u64, _size = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_size_t

    def _proto(kind: Callable[..., Any], name: str, restype: object, *argtypes: object) -> object:
        # a prototype of our own: wasmtime-py's function objects (and their argtypes) are
        # never touched
        return kind(restype, *argtypes)((name, _dll))

    _store_new: Any = _proto(_GIL_HELD, "wasmtime_store_new", _vp, _vp, _vp, _vp)
    _store_context: Any = _proto(_GIL_HELD, "wasmtime_store_context", _vp, _vp)
    _store_limiter: Any = _proto(
        _GIL_HELD, "wasmtime_store_limiter", None, _vp, _i64, _i64, _i64, _i64, _i64
    )
    _store_delete: Any = _proto(_GIL_RELEASED, "wasmtime_store_delete", None, _vp)
    _set_fuel: Any = _proto(_GIL_HELD, "wasmtime_context_set_fuel", _vp, _vp, _u64)
    _get_fuel: Any = _proto(_GIL_HELD, "wasmtime_context_get_fuel", _vp, _vp, _vp)
    _set_epoch_deadline: Any = _proto(
        _GIL_HELD, "wasmtime_context_set_epoch_deadline", None, _vp, _u64
    )
    _instance_new: Any = _proto(
        _GIL_RELEASED, "wasmtime_instance_new", _vp, _vp, _vp, _vp, _size, _vp, _vp
    )
    _export_get: Any = _proto(
        _GIL_HELD,
        "wasmtime_instance_export_get",
        ctypes.c_bool,
        _vp,
        _vp,
        ctypes.c_char_p,
        _size,
        _vp,
    )
    _func_call: Any = _proto(
        _GIL_RELEASED, "wasmtime_func_call_unchecked", _vp, _vp, _vp, _vp, _size, _vp
    )
    _memory_data: Any = _proto(_GIL_HELD, "wasmtime_memory_data", _vp, _vp, _vp)
    _memory_data_size: Any = _proto(_GIL_HELD, "wasmtime_memory_data_size", _size, _vp, _vp)
    _memory_size: Any = _proto(_GIL_HELD, "wasmtime_memory_size", _u64, _vp, _vp)

    class _Frame(ctypes.Structure):
        _fields_ = (
            ("instance", _wffi.wasmtime_instance_t),
            ("trap", ctypes.c_void_p),
            ("fuel", ctypes.c_uint64),
            ("externs", _wffi.wasmtime_extern_t * len(_ABI_NAMES)),
            ("vals", _wffi.wasmtime_val_raw_t * 2),
        )

    _EXTERN_SIZE: int = ctypes.sizeof(_wffi.wasmtime_extern_t)
    _EXTERN_OF: int = _wffi.wasmtime_extern_t.of.offset
    _VAL_SIZE: int = ctypes.sizeof(_wffi.wasmtime_val_raw_t)
    _ERROR_PTR: Any = ctypes.POINTER(_wffi.wasmtime_error_t)
    _TRAP_PTR: Any = ctypes.POINTER(_wffi.wasm_trap_t)
    _ABI_KINDS: tuple[int, int, int] = (
        int(_wffi.WASMTIME_EXTERN_MEMORY.value),
        int(_wffi.WASMTIME_EXTERN_FUNC.value),
        int(_wffi.WASMTIME_EXTERN_FUNC.value),
    )
    _FAST: bool = True
except (ImportError, AttributeError):  # pragma: no cover - depends on wasmtime-py
    _FAST = False


def _address(obj: wasmtime.Engine | wasmtime.Module) -> int:
    """The C pointer behind a wasmtime-py object, as an integer (0 without the C path)."""
    if not _FAST:  # pragma: no cover - depends on wasmtime-py
        return 0
    return int(ctypes.cast(obj.ptr(), ctypes.c_void_p).value or 0)


def _use_pooling(
    config: wasmtime.Config, slots: int, max_memory_bytes: int, max_table_elements: int
) -> bool:
    """Switch ``config`` to wasmtime's pooling instance allocator, if the binding exists.

    Every call instantiates its module afresh; with the pooling allocator an instance takes
    a pre-reserved slot (memory, table, instance state) instead of fresh ``mmap`` calls, and
    giving it back resets what the guest touched.  The first ``_KEEP_RESIDENT`` bytes of a
    slot's linear memory (and table) are reset with ``memset`` (plus the module's data
    image copied back) instead of ``madvise``: wasmtime's documented reset, zeroed either
    way, without a system call and a page fault on every call (ADR 0014).
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
        for setter in (
            "wasmtime_pooling_allocation_config_linear_memory_keep_resident_set",
            "wasmtime_pooling_allocation_config_table_keep_resident_set",
        ):
            if hasattr(_wffi, setter):
                getattr(_wffi, setter)(pool, _KEEP_RESIDENT)
        _wffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        _wffi.wasmtime_pooling_allocation_config_delete(pool)
    return True


#: Bytes of each pooled memory/table slot reset by ``memset`` rather than ``madvise``.
_KEEP_RESIDENT: Final = 64 * 1024


class _Scratch:
    """Per-thread out-parameters of :func:`_call_ffi` (one ``_Frame``), reused across calls.

    A call never re-enters the sandbox (modules have no imports), so one frame per thread is
    enough; every field is overwritten by the C call that fills it before it is read.  The
    trap slot is only ever set on a trap; it is cleared when the trap is taken over.
    """

    __slots__ = (
        "alloc",
        "decide",
        "externs",
        "frame",
        "fuel",
        "fuel_at",
        "instance_at",
        "kinds",
        "memory",
        "result_i32",
        "result_i64",
        "trap",
        "trap_at",
        "val0",
        "val1",
        "vals_at",
    )

    def __init__(self) -> None:
        frame = self.frame = _Frame()
        base = ctypes.addressof(frame)
        self.instance_at = base + _Frame.instance.offset
        self.trap_at = base + _Frame.trap.offset
        self.trap = ctypes.c_void_p.from_buffer(frame, _Frame.trap.offset)
        self.fuel_at = base + _Frame.fuel.offset
        self.fuel = ctypes.c_uint64.from_buffer(frame, _Frame.fuel.offset)
        first = _Frame.externs.offset
        self.externs = tuple(
            (name, base + first + i * _EXTERN_SIZE) for i, name in enumerate(_ABI_NAMES)
        )
        self.kinds = tuple(
            ctypes.c_uint8.from_buffer(frame, first + i * _EXTERN_SIZE)
            for i in range(len(_ABI_NAMES))
        )
        # the wasmtime_memory_t / wasmtime_func_t inside each wasmtime_extern_t
        self.memory, self.alloc, self.decide = (at + _EXTERN_OF for _, at in self.externs)
        vals = _Frame.vals.offset
        self.vals_at = base + vals
        # arguments are written as zero-extended i64 (the i32 is the low half, little-endian)
        self.val0 = ctypes.c_int64.from_buffer(frame, vals)
        self.val1 = ctypes.c_int64.from_buffer(frame, vals + _VAL_SIZE)
        self.result_i32 = ctypes.c_uint32.from_buffer(frame, vals)
        self.result_i64 = ctypes.c_uint64.from_buffer(frame, vals)

    def failure(self, error: int | None) -> wasmtime.WasmtimeError | wasmtime.Trap:
        """The error (owned pointer) or the pending trap, as wasmtime-py objects."""
        if error:
            return wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _ERROR_PTR))
        trap = self.trap.value
        assert trap is not None, "called with neither an error nor a pending trap"
        self.trap.value = None
        return wasmtime.Trap._from_ptr(ctypes.cast(trap, _TRAP_PTR))


_scratch = threading.local()


def _call_ffi(
    engine: int,
    module: int,
    input_json: bytes,
    budget: Budget,
    ticks: int,
    max_table_elements: int,
) -> _Outcome:
    """One call on wasmtime's C API directly: the same steps as :func:`_call_public`.

    ``engine`` and ``module`` are the C addresses of objects the caller keeps alive.
    """
    sc: _Scratch | None = getattr(_scratch, "sc", None)
    if sc is None:
        sc = _scratch.sc = _Scratch()
    store = _store_new(engine, None, None)
    memory = 0
    try:
        ctx = _store_context(store)
        _store_limiter(store, budget.memory_bytes, max_table_elements, 1, 1, 1)
        error = _set_fuel(ctx, budget.fuel)
        if error:
            raise sc.failure(error)
        _set_epoch_deadline(ctx, ticks)
        try:
            error = _instance_new(ctx, module, None, 0, sc.instance_at, sc.trap_at)
            if error or sc.trap.value:
                raise sc.failure(error)
            for name, at in sc.externs:
                if not _export_get(ctx, sc.instance_at, name, len(name), at):
                    raise ModuleTrap("module does not export the sandbox ABI", reason="abi")
            kinds = sc.kinds
            if (kinds[0].value, kinds[1].value, kinds[2].value) != _ABI_KINDS:
                raise ModuleTrap("module does not export the sandbox ABI", reason="abi")
            memory = sc.memory
            length = len(input_json)
            sc.val0.value = length
            error = _func_call(ctx, sc.alloc, sc.vals_at, 1, sc.trap_at)
            if error or sc.trap.value:
                raise sc.failure(error)
            ptr = sc.result_i32.value
            size = _memory_data_size(ctx, memory)
            if ptr + length > size:
                raise ModuleTrap("alloc returned a region outside memory", reason="abi")
            base = _memory_data(ctx, memory)
            if length:
                ctypes.memmove(base + ptr, input_json, length)
            sc.val0.value = ptr
            sc.val1.value = length
            error = _func_call(ctx, sc.decide, sc.vals_at, 2, sc.trap_at)
            if error or sc.trap.value:
                raise sc.failure(error)
            packed = sc.result_i64.value
            out_ptr, out_len = packed >> 32, packed & _U32
            grown = _memory_data_size(ctx, memory)
            _check_output(out_ptr, out_len, grown, budget)
            output = b""
            if out_len:  # (a memory of 0 pages may have a NULL base)
                if grown != size:  # memory.grow may have moved it
                    base = _memory_data(ctx, memory)
                output = ctypes.string_at(base + out_ptr, out_len)
        except wasmtime.Trap as exc:
            pages = _memory_size(ctx, memory) if memory else None
            raise _classify_trap(exc, pages, budget) from exc
        except wasmtime.WasmtimeError as exc:
            raise _runtime_error(exc, budget) from exc
        error = _get_fuel(ctx, sc.fuel_at)
        if error:
            raise _runtime_error(sc.failure(error), budget)
        return output, grown // _PAGE, sc.fuel.value
    finally:
        _store_delete(store)


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
                compiled = sandbox.compile(bytes(wasmtime.wat2wasm(SELF_TEST_WAT)))
                sandbox._self_test_module = compiled
        result = sandbox._run(compiled, _SELF_TEST_INPUT, _SELF_TEST_BUDGET)
        return result.output == _SELF_TEST_INPUT
    except Exception:  # noqa: BLE001 - a health probe reports, it does not raise
        log.warning("sandbox.self_test_failed", exc_info=True)
        return False
