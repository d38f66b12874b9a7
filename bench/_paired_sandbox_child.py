"""One sandbox run of ``bench/paired_commits.py --only sandbox``, with ``PYTHONPATH=<tree>/src``.

The tree's ``WasmSandbox`` (its default binding) runs its own self-test module (a trivial
``decide``) ``--calls`` times on one thread after a warm-up, as ``bench/bench_sandbox.py``'s
``sandbox`` variant does.  Prints one JSON line: wall p50 / p99 / mean per call and the
thread's CPU per call (``time.thread_time``), in microseconds.

Only names every tree since the sandbox's first release has (``Budget``, ``WasmSandbox``,
``SELF_TEST_WAT``), so an older commit runs the same script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    a = ap.parse_args()
    import wasmtime

    from spectral_core.sandbox import Budget
    from spectral_core.sandbox.wasm import SELF_TEST_WAT, WasmSandbox

    sandbox = WasmSandbox()
    start = getattr(sandbox, "start", None)  # the epoch ticker, where the tree has one
    if start is not None:
        start()
    compiled = sandbox.compile(wasmtime.wat2wasm(SELF_TEST_WAT))
    doc, budget = b'{"x":"' + b"a" * 56 + b'"}', Budget()
    for _ in range(500):
        sandbox.run(compiled, doc, budget)
    clock = time.perf_counter_ns
    walls = []
    cpu0 = time.thread_time()
    for _ in range(a.calls):
        t0 = clock()
        sandbox.run(compiled, doc, budget)
        walls.append(clock() - t0)
    cpu = time.thread_time() - cpu0
    stop = getattr(sandbox, "stop", None)
    if stop is not None:
        stop()
    walls.sort()
    print(
        json.dumps(
            {
                "p50_us": walls[len(walls) // 2] / 1000,
                "p99_us": walls[int(len(walls) * 0.99)] / 1000,
                "mean_us": statistics.fmean(walls) / 1000,
                "cpu_us": cpu / a.calls * 1e6,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
