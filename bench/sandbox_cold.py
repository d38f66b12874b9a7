"""The sandbox call hot and with the CPU caches evicted between calls (in process).

    python bench/sandbox_cold.py                      # 2 MiB and 8 MiB touched between calls
    python bench/sandbox_cold.py --pollute-kib 8192 --rounds 4

``bench/decide_layers.py`` measures the sandbox call back to back, with its working set
(store, instance slot, the slot's memory reset, compiled code) in the caches; over HTTP the
kernel's network path and the app's Python levels run between calls.  This script makes the
same call (``WasmSandbox.run`` of the bench's module, ``tests/modules/decision.wat``) with
and without writing one byte per cache line of a buffer of ``--pollute-kib`` between calls,
and prints the loop thread's CPU per call (``time.thread_time`` around the call only, two
reads of it included), the minimum of 10 x 1,000 calls per reading, modes alternating.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import wasmtime

from spectral_core.sandbox.wasm import WasmSandbox

MODULE = Path(__file__).resolve().parent.parent / "tests" / "modules" / "decision.wat"
DOC = b'{"risk":"low","amount":1200}'


def per_call(sandbox: WasmSandbox, compiled: object, buf: bytearray | None) -> float:
    """CPU us per call, the minimum of 10 readings of 1,000 calls."""
    ones = b"\x01" * len(range(0, len(buf), 64)) if buf is not None else b""
    best = float("inf")
    for _ in range(10):
        spent = 0.0
        for _ in range(1000):
            if buf is not None:
                buf[::64] = ones  # one write per cache line
            t0 = time.thread_time()
            sandbox.run(compiled, DOC)  # type: ignore[arg-type]
            spent += time.thread_time() - t0
        best = min(best, spent / 1000 * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pollute-kib", type=int, action="append", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    sizes = a.pollute_kib or [2048, 8192]
    with WasmSandbox() as sandbox:
        compiled = sandbox.compile(wasmtime.wat2wasm(MODULE.read_text()))
        for _ in range(2000):
            sandbox.run(compiled, DOC)
        for r in range(a.rounds):
            hot = per_call(sandbox, compiled, None)
            cold = {kib: per_call(sandbox, compiled, bytearray(kib * 1024)) for kib in sizes}
            print(
                f"round {r + 1}: hot {hot:.2f} us per call; "
                + ", ".join(
                    f"{kib} KiB touched between calls {us:.2f}" for kib, us in cold.items()
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
