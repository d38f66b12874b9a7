"""Per-call overhead of the spectral sandbox versus raw wasmtime, on a trivial cached module.

Usage::

    PYTHONPATH=src python bench/bench_sandbox.py [--calls N] [--input-bytes N]

Measures, per call, with the module compiled once:

* ``raw-reused``   raw wasmtime, one Store + Instance reused for all calls (write input,
  call ``alloc`` and ``decide``, read output) -- no isolation between calls;
* ``raw-fresh``    raw wasmtime, fresh Store + Instance per call (same isolation as ours,
  with fuel and epoch deadline set) but no limits, checks or JSON validation;
* ``raw-fresh-ffi`` the sandbox's own C-API call path (``_capi.call``: limits, ABI checks,
  direct ctypes calls), without the output JSON validation and usage accounting of ``run``;
* ``sandbox``      ``WasmSandbox.run`` (fresh store, limits, fuel, deadline, ABI checks,
  output JSON validation, usage accounting) on the C API path (``binding="capi"``);
* ``sandbox-public`` the same on wasmtime-py's public API only (``binding="public"``: its
  own engine, without the pooling allocator, which the public API cannot configure);
* ``sandbox-async`` ``WasmSandbox.run_async`` (adds the worker-thread hop).

The raw variants use the C API sandbox's engine (pooling instance allocator, ADR 0026).
Overhead is reported as sandbox minus raw, at p50 and p99.  The two bindings are then
compared in ``--rounds`` paired rounds (order alternated per round), reporting the median
of the per-round ratios public / capi (ADR 0026).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from spectral_core.sandbox import Budget  # noqa: E402
from spectral_core.sandbox.wasm import SELF_TEST_WAT, WasmSandbox  # noqa: E402


def percentiles(samples_ns: list[int]) -> tuple[float, float, float]:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2] / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return p50, p99, statistics.fmean(ordered) / 1000


def measure(fn: Callable[[], object], calls: int, warmup: int = 200) -> list[int]:
    for _ in range(warmup):
        fn()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--input-bytes", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    doc = b'{"x":"' + b"a" * max(0, args.input_bytes - 8) + b'"}'
    wasm = wasmtime.wat2wasm(SELF_TEST_WAT)
    budget = Budget()

    sandbox = WasmSandbox(binding="capi")
    sandbox.start()
    public = WasmSandbox(binding="public")
    public.start()
    public_compiled = public.compile(wasm)
    compiled = sandbox.compile(wasm)
    engine = sandbox.engine
    module = compiled.module

    # raw wasmtime, one instance reused
    store = wasmtime.Store(engine)
    store.set_fuel(10**15)
    store.set_epoch_deadline(10**9)
    inst = wasmtime.Instance(store, module, [])
    ex = inst.exports(store)
    mem, alloc, decide = ex["memory"], ex["alloc"], ex["decide"]

    def raw_reused() -> bytes:
        # alloc(0) returns the bump pointer without advancing it: same call, bounded memory
        ptr = alloc(store, 0)
        mem.write(store, doc, ptr)
        packed = decide(store, ptr, len(doc))
        return bytes(mem.read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF)))

    def raw_fresh() -> bytes:
        s = wasmtime.Store(engine)
        s.set_fuel(budget.fuel)
        s.set_epoch_deadline(1000)
        e = wasmtime.Instance(s, module, []).exports(s)
        m = e["memory"]
        ptr = e["alloc"](s, len(doc))
        m.write(s, doc, ptr)
        packed = e["decide"](s, ptr, len(doc))
        return bytes(m.read(s, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF)))

    from spectral_core.sandbox import _capi

    ticks = 1000
    engine_at = _capi.address(engine)

    def raw_fresh_ffi() -> bytes:
        # the sandbox's own C-API call path (store, limits, instance, ABI checks, two calls,
        # two copies), without the JSON validation and usage accounting of ``run``
        return bytes(_capi.call(engine_at, compiled.address, doc, budget, ticks, 10_000)[0])

    def ours() -> object:
        return sandbox.run(compiled, doc, budget)

    def ours_public() -> object:
        return public.run(public_compiled, doc, budget)

    assert raw_fresh() == doc == raw_fresh_ffi() and ours().output == doc  # type: ignore[attr-defined]

    results: dict[str, list[int]] = {}
    results["raw-reused"] = measure(raw_reused, args.calls)
    results["raw-fresh"] = measure(raw_fresh, args.calls)
    results["raw-fresh-ffi"] = measure(raw_fresh_ffi, args.calls)
    results["sandbox"] = measure(ours, args.calls)
    results["sandbox-public"] = measure(ours_public, args.calls)

    async def async_bench() -> list[int]:
        for _ in range(200):
            await sandbox.run_async(compiled, doc, budget)
        samples = []
        for _ in range(args.calls):
            t0 = time.perf_counter_ns()
            await sandbox.run_async(compiled, doc, budget)
            samples.append(time.perf_counter_ns() - t0)
        return samples

    results["sandbox-async"] = anyio.run(async_bench)
    # the two bindings in paired rounds, order alternated: median of per-round ratios
    ratios = []
    for r in range(args.rounds):
        pair = {}
        for name, fn in (("capi", ours), ("public", ours_public))[:: 1 if r % 2 else -1]:
            pair[name] = statistics.median(measure(fn, args.calls))
        ratios.append((pair["public"] / pair["capi"], pair["capi"], pair["public"]))
    sandbox.stop()
    public.stop()

    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"python {platform.python_version()}, wasmtime-py "
        f"{__import__('importlib.metadata').metadata.version('wasmtime')}, "
        f"{platform.machine()}, input {len(doc)} bytes, {args.calls} calls"
    )
    print(f"{'variant':<14} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}  n")
    stats = {}
    for name, samples in results.items():
        p50, p99, mean = percentiles(samples)
        stats[name] = (p50, p99, mean)
        print(f"{name:<14} {p50:9.1f} {p99:9.1f} {mean:9.1f}  {len(samples)}")
    print(
        f"public / capi per call, {args.rounds} paired rounds (median us capi, public, ratio): "
        + ", ".join(f"{c / 1000:.1f}/{p / 1000:.1f}={x:.2f}x" for x, c, p in ratios)
        + f"; median ratio {statistics.median(x for x, _, _ in ratios):.2f}x"
    )
    for base in ("raw-fresh-ffi", "raw-fresh", "raw-reused"):
        for ours_name in ("sandbox", "sandbox-async"):
            d50 = stats[ours_name][0] - stats[base][0]
            d99 = stats[ours_name][1] - stats[base][1]
            print(f"overhead {ours_name} vs {base}: p50 {d50:+.1f} us, p99 {d99:+.1f} us")


if __name__ == "__main__":
    main()
