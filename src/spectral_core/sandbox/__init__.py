"""The decision-module sandbox: a small interface any runtime can implement.

A sandbox compiles untrusted module bytes once (:meth:`Sandbox.compile`) and then runs the
compiled module many times (:meth:`Sandbox.run`), each call in a fresh, isolated instance,
under a :class:`Budget` (CPU fuel, wall-clock deadline, memory cap, output size).  Input and
output are JSON documents passed as bytes; the ABI for WebAssembly modules is described in
``docs/reference/sandbox-abi.md``.

The only implementation today is :class:`spectral_core.sandbox.wasm.WasmSandbox` (wasmtime,
no imports, no WASI).  Import it from :mod:`spectral_core.sandbox.wasm` so that importing
this package does not load wasmtime.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol, runtime_checkable

import msgspec

from spectral_core.errors import ConfigError

__all__ = [
    "MAX_JSON_DEPTH",
    "Budget",
    "CompiledModule",
    "Result",
    "Sandbox",
    "Usage",
]

_KIB = 1024
_MIB = 1024 * _KIB
#: Highest allowed ``Budget.json_depth``: well below the interpreter's recursion limit, so
#: decoding and encoding a document within the bound never recurses out of the stack.
MAX_JSON_DEPTH = 512


class Budget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-call limits.  Every field is a hard cap enforced by the sandbox.

    Attributes:
        fuel: CPU budget in wasmtime fuel units (roughly one per executed instruction).
        deadline_ms: Wall-clock deadline for one call, in milliseconds (epoch granularity:
            the call is interrupted at most one ticker interval after the deadline).
        memory_bytes: Cap on linear memory (initial size plus growth), in bytes.
        output_bytes: Cap on the JSON output document, in bytes.
        json_depth: Cap on the nesting of arrays/objects in the output document (the API
            applies the same cap to the input).
    """

    fuel: Annotated[int, msgspec.Meta(ge=1)] = 10_000_000
    deadline_ms: Annotated[int, msgspec.Meta(ge=1)] = 100
    memory_bytes: Annotated[int, msgspec.Meta(ge=64 * _KIB)] = 16 * _MIB
    output_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * _KIB
    json_depth: Annotated[int, msgspec.Meta(ge=1, le=MAX_JSON_DEPTH)] = 128

    def __post_init__(self) -> None:
        """Enforce the constraints on construction too (msgspec checks them on decode only).

        Raises:
            ConfigError: A limit is out of range.
        """
        if self.fuel < 1 or self.deadline_ms < 1 or self.output_bytes < 1:
            raise ConfigError("sandbox budget limits must be positive", budget=self)
        if not 1 <= self.json_depth <= MAX_JSON_DEPTH:
            raise ConfigError(f"sandbox json_depth must be 1..{MAX_JSON_DEPTH}")
        if self.memory_bytes < 64 * _KIB:
            raise ConfigError("sandbox memory budget must be at least one 64 KiB page")


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What one call consumed.

    Attributes:
        fuel_consumed: Fuel units spent by the call (instantiation included).
        wall_time_us: Wall-clock time of the call, instantiation included, in microseconds.
        memory_pages: Peak linear-memory size in 64 KiB pages (wasm memory never shrinks).
        memory_bytes: Peak linear-memory size in bytes.
    """

    fuel_consumed: int
    wall_time_us: int
    memory_pages: int
    memory_bytes: int


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a successful call.

    Attributes:
        output: The raw JSON document the module returned (validated, within budget).
        value: ``output`` decoded with ``msgspec.json.decode``.
        usage: Resources consumed by the call.
    """

    output: bytes
    value: Any
    usage: Usage


@runtime_checkable
class CompiledModule(Protocol):
    """A module compiled once by a sandbox and reusable for any number of calls."""

    @property
    def content_hash(self) -> str:
        """Hex sha256 of the module bytes."""
        ...

    @property
    def size(self) -> int:
        """Size of the module bytes."""
        ...


@runtime_checkable
class Sandbox(Protocol):
    """A runtime that executes untrusted decision modules with no host access."""

    def compile(self, module: bytes) -> CompiledModule:
        """Validate and compile module bytes.

        Raises:
            SandboxError: The bytes are not a valid module, or the module is refused
                (it declares imports).
            ModuleTrap: The module does not implement the ABI.
        """
        ...

    def run(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        """Run one call synchronously in a fresh instance.

        Raises:
            BudgetExceeded: A budget was exhausted (``.budget`` names which one).
            ModuleTrap: The module trapped, broke the ABI or returned invalid JSON.
            SandboxError: The sandbox cannot run the call.
        """
        ...

    async def run_async(
        self, compiled: CompiledModule, input_json: bytes, budget: Budget | None = None
    ) -> Result:
        """Run one call in a worker thread, without blocking the event loop.

        Raises:
            BudgetExceeded: A budget was exhausted (``.budget`` names which one).
            ModuleTrap: The module trapped, broke the ABI or returned invalid JSON.
            SandboxError: The sandbox cannot run the call.
        """
        ...
