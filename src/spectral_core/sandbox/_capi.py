"""The sandbox's fast path: one decision call on wasmtime's C API, through ctypes prototypes
of our own over the shared library wasmtime-py loaded (ADR 0026).

Quarantined here because it is not wasmtime-py's documented API: it declares C signatures
(``wasmtime_func_call_unchecked``, the store, instance and memory calls, the pooling
allocator's configuration) that wasmtime may change in any major release.  A signature that
drifted would not fail loudly: it would corrupt memory inside the API process.  So:

* ``pyproject.toml`` pins wasmtime to :data:`TESTED_MAJORS`, and importing this module
  checks the installed wasmtime's version against it (the package and its bundled C
  library share one version): outside the range it raises :class:`ImportError` and
  :mod:`spectral_core.sandbox.wasm` uses the public wasmtime-py path, with a warning;
* the sandbox test suite runs on both paths (``WasmSandbox(binding="capi" | "public")``),
  and both must give the same results and errors.

Raising the range means re-reading the C API's changes for every prototype below, then
running the sandbox tests on both paths.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import threading
from collections.abc import Callable
from typing import Any, Final

import wasmtime

from spectral_core.errors import ModuleTrap
from spectral_core.sandbox import Budget
from spectral_core.sandbox._errors import (
    PAGE,
    U32,
    check_output,
    classify_trap,
    runtime_error,
)

__all__ = ["TESTED_MAJORS", "address", "call", "check_version", "use_pooling"]

#: wasmtime majors whose C API the prototypes below were checked against and tested on.
TESTED_MAJORS: Final = range(51, 52)

#: (output bytes, memory pages at the end, fuel left)
Outcome = tuple[bytes, int, int]


def check_version(version: str | None = None) -> None:
    """Refuse (``ImportError``) a wasmtime outside :data:`TESTED_MAJORS`.

    Args:
        version: The version to check; the installed wasmtime's when omitted.
    """
    if version is None:
        version = importlib.metadata.version("wasmtime")
    major = int(version.split(".", 1)[0])
    if major not in TESTED_MAJORS:
        raise ImportError(
            f"wasmtime {version} is outside the C API fast path's tested majors "
            f"{TESTED_MAJORS.start}..{TESTED_MAJORS.stop - 1}"
        )


#
# wasmtime-py's wrappers cost more than the work on this path: ``Func.__call__`` re-reads the
# function type and converts every value, ``Instance.exports`` and
# ``Memory.read``/``write`` build Python objects and bytearrays, and ``Store`` goes through
# ``Managed``.  A decision call is a fresh store, one instantiation, two calls with i32
# arguments and two memory copies, so :func:`call` makes exactly those C calls, on the
# shared library wasmtime-py loaded, through prototypes of our own (ADR 0026):
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
# These symbols are not wasmtime-py's documented API: if any is missing, importing this module
# fails and the sandbox uses the public path.  Host-side Python exceptions cannot occur (no
# imports).

_ABI_NAMES: Final = (b"memory", b"alloc", b"decide")

check_version()

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
except AttributeError as exc:  # pragma: no cover - depends on wasmtime-py
    raise ImportError(f"wasmtime-py lacks a C API symbol of the fast path: {exc}") from exc


def address(obj: wasmtime.Engine | wasmtime.Module) -> int:
    """The C pointer behind a wasmtime-py object, as an integer."""
    return int(ctypes.cast(obj.ptr(), ctypes.c_void_p).value or 0)


def use_pooling(
    config: wasmtime.Config, slots: int, max_memory_bytes: int, max_table_elements: int
) -> bool:
    """Switch ``config`` to wasmtime's pooling instance allocator, if the binding exists.

    Every call instantiates its module afresh; with the pooling allocator an instance takes
    a pre-reserved slot (memory, table, instance state) instead of fresh ``mmap`` calls, and
    giving it back resets what the guest touched.  The first ``_KEEP_RESIDENT`` bytes of a
    slot's linear memory (and table) are reset with ``memset`` (plus the module's data
    image copied back) instead of ``madvise``: wasmtime's documented reset, zeroed either
    way, without a system call and a page fault on every call (ADR 0026).
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
    """Per-thread out-parameters of :func:`call` (one ``_Frame``), reused across calls.

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


def call(
    engine: int,
    module: int,
    input_json: bytes,
    budget: Budget,
    ticks: int,
    max_table_elements: int,
) -> Outcome:
    """One call on wasmtime's C API directly: the same steps as ``wasm._call_public``.

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
            out_ptr, out_len = packed >> 32, packed & U32
            grown = _memory_data_size(ctx, memory)
            check_output(out_ptr, out_len, grown, budget)
            output = b""
            if out_len:  # (a memory of 0 pages may have a NULL base)
                if grown != size:  # memory.grow may have moved it
                    base = _memory_data(ctx, memory)
                output = ctypes.string_at(base + out_ptr, out_len)
        except wasmtime.Trap as exc:
            pages = _memory_size(ctx, memory) if memory else None
            raise classify_trap(exc, pages, budget) from exc
        except wasmtime.WasmtimeError as exc:
            raise runtime_error(exc, budget) from exc
        error = _get_fuel(ctx, sc.fuel_at)
        if error:
            raise runtime_error(sc.failure(error), budget)
        return output, grown // PAGE, sc.fuel.value
    finally:
        _store_delete(store)
