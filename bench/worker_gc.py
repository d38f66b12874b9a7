"""CPU time of one full collection of the cyclic GC in a process holding what
``spectral-workers`` holds once booted (the entrypoint's imports, a consumer), before and
after :func:`spectral_core.boot.freeze_startup_heap` (ADR 0047).

    PYTHONPATH=src python bench/worker_gc.py [--repeats 7]

A full collection walks every tracked container object; the steady-state bench at 1,000
events/s (``bench_outbox.py --only latency --steps``) shows one as the slowest 1 %'s stall.
No database is needed: the pools are not opened (a booted worker holds a few hundred objects
more).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time


def full_collection_ms(repeats: int) -> float:
    """Median CPU milliseconds of ``gc.collect()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.process_time()
        gc.collect()
        times.append((time.process_time() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    import spectral_workers.main  # noqa: F401 - the worker process's imports
    from spectral_core.boot import freeze_startup_heap

    tracked = len(gc.get_objects())
    before = full_collection_ms(a.repeats)
    freeze_startup_heap()
    after = full_collection_ms(a.repeats)
    print(
        f"tracked objects {tracked:,}, frozen {gc.get_freeze_count():,}; one full collection, "
        f"median CPU: {before:.1f} ms before freeze_startup_heap, {after:.2f} ms after"
    )


if __name__ == "__main__":
    main()
