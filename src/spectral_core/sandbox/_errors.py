"""Outcomes of a sandbox call shared by both call paths (:mod:`.wasm`, :mod:`._capi`):
the output checks and the mapping of wasmtime's traps and errors to spectral's errors."""

from __future__ import annotations

from typing import Final

import wasmtime

from spectral_core.errors import BudgetExceeded, ModuleTrap, SandboxError
from spectral_core.sandbox import Budget

__all__ = ["PAGE", "U32", "U64", "check_output", "classify_trap", "first_line", "runtime_error"]

PAGE: Final = 65536
U32: Final = 0xFFFF_FFFF
U64: Final = 0xFFFF_FFFF_FFFF_FFFF


def check_output(out_ptr: int, out_len: int, memory_len: int, budget: Budget) -> None:
    if out_len > budget.output_bytes:
        raise BudgetExceeded(
            "module output exceeds the output budget",
            budget="output",
            size=out_len,
            limit=budget.output_bytes,
        )
    if out_ptr + out_len > memory_len:
        raise ModuleTrap("decide returned a region outside memory", reason="abi")


def runtime_error(
    exc: wasmtime.WasmtimeError | wasmtime.Trap, budget: Budget
) -> BudgetExceeded | ModuleTrap | SandboxError:
    detail = first_line(exc)
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


def classify_trap(
    exc: wasmtime.Trap, pages: int | None, budget: Budget
) -> BudgetExceeded | ModuleTrap:
    code = exc.trap_code
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return BudgetExceeded("fuel budget exhausted", budget="fuel", limit=budget.fuel)
    if code == wasmtime.TrapCode.INTERRUPT:
        return BudgetExceeded(
            "wall-clock deadline exceeded", budget="deadline", limit=budget.deadline_ms
        )
    if pages is not None and (pages + 1) * PAGE > budget.memory_bytes:
        # memory.grow was refused at the cap and the guest gave up (e.g. Rust's OOM abort).
        return BudgetExceeded(
            "module memory exceeds the memory budget", budget="memory", limit=budget.memory_bytes
        )
    name = code.name if code is not None else None
    return ModuleTrap("module trapped", reason="trap", trap_code=name, detail=first_line(exc))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:500]
    return type(exc).__name__
