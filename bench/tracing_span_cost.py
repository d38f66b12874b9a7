"""Where a handler span's cost goes with the OpenTelemetry SDK on: one process, no database.

    PYTHONPATH=$PWD/src python bench/tracing_span_cost.py            # 20,000 spans per variant
    PYTHONPATH=$PWD/src python bench/tracing_span_cost.py --n 50000 --rounds 5

Runs ``spectral_core.tracing.handler_span`` (the span the consumer opens around each handler
call, ADR 0029) over ``--n`` events per variant, one layer of the SDK added at a time, and
prints the process CPU per span (every thread: the ``BatchSpanProcessor``'s export thread
included, the queue flushed inside the timed window) minus the ``off`` variant's:

* ``off``: no tracer (what the consumer runs with no SDK: the loop and a no-op call);
* ``provider``: an SDK ``TracerProvider`` with no span processor (span creation, the
  attributes, the parent context extracted from the row's ``traceparent``, end);
* ``bsp-drop``: + a ``BatchSpanProcessor`` whose exporter drops the batch (``on_end``, the
  queue, the export thread's wake-ups);
* ``bsp-otlp``: + the OTLP/HTTP exporter posting to ``bench/_otlp_sink.py`` (protobuf
  encoding and the HTTP request): what ``SPECTRAL_OTLP_ENDPOINT`` installs with the SDK's
  default sampler (parent-based always-on);
* ``ratio-0.1`` / ``ratio-0.01``: ``bsp-otlp`` with ``parentbased_traceidratio`` (what
  docs/reference/metrics.md recommends for production);
* ``always-off``: ``bsp-otlp`` with a sampler that drops everything (the floor of a
  sampled-out span).

Half the events carry a sampled ``traceparent`` (published inside a span) and half none,
as in a mixed deployment; with a parent-based sampler the sampled parents' spans are
recorded whatever the ratio, so the ratio variants run with ``--parented 0`` too (the
drain benchmark's events are published outside any span).  Rounds rotate the variants'
order; the medians of the per-round figures are printed.  The box is shared: read ratios.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _events(n: int, parented: float) -> list[Any]:
    from spectral_core.outbox.records import Event

    now = datetime.now(UTC)
    every = int(1 / parented) if parented > 0 else 0
    return [
        Event(
            id=i,
            generation=7,
            topic="bench.span",
            payload={"i": i},
            idempotency_key=str(i),
            attempts=1,
            created_at=now,
            trace_parent=(f"00-{i + 1:032x}-{i + 1:016x}-01" if every and i % every == 0 else None),
        )
        for i in range(n)
    ]


def _provider(variant: str, endpoint: str, queue: int) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ParentBased,
        TraceIdRatioBased,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sampler: Any = None
    if variant.startswith("ratio-"):
        sampler = ParentBased(TraceIdRatioBased(float(variant.split("-")[1])))
    elif variant == "always-off":
        sampler = ALWAYS_OFF
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    # a queue that holds the whole run: the loop outpaces the export thread, and a
    # dropped span would cost less than an exported one
    if variant == "bsp-drop":
        provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=queue))
    elif variant != "provider":
        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue))
    return provider


def one(variant: str, events: list[Any], endpoint: str) -> float:
    """CPU us per event of ``variant`` (every thread, the export flushed)."""
    from spectral_core import tracing

    provider = None if variant == "off" else _provider(variant, endpoint, len(events))
    tracing.use_provider(provider)
    spans = tracing.tracer()
    cpu0 = _cpu_s()
    for ev in events:
        if spans is None:
            pass
        else:
            with tracing.handler_span(spans, "bench.noop", ev):
                pass
    if provider is not None:
        provider.force_flush()
    cpu = _cpu_s() - cpu0
    if provider is not None:
        provider.shutdown()
    tracing.use_provider(None)
    return cpu / len(events) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parented", type=float, default=0.5, help="share of events with a parent")
    a = ap.parse_args()
    sink = subprocess.Popen(
        [sys.executable, str(HERE / "_otlp_sink.py")], stdout=subprocess.PIPE, text=True
    )
    assert sink.stdout is not None
    endpoint = f"http://127.0.0.1:{int(sink.stdout.readline())}"
    variants = ["off", "provider", "bsp-drop", "bsp-otlp", "ratio-0.1", "ratio-0.01", "always-off"]
    events = _events(a.n, a.parented)
    per: dict[str, list[float]] = {v: [] for v in variants}
    try:
        one("bsp-otlp", events[:2000], endpoint)  # warm-up: imports, first connection
        for r in range(a.rounds):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:
                per[v].append(one(v, events, endpoint))
    finally:
        sink.terminate()
        sink.wait(10)
    print(
        f"command: python bench/tracing_span_cost.py {' '.join(sys.argv[1:])}".rstrip()
        + f"\n{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {a.n:,} spans per variant, "
        f"{a.rounds} rounds, {a.parented:.0%} of events with a sampled traceparent"
    )
    off = statistics.median(per["off"])
    print("| variant | CPU us/span (median) | minus off | rounds |")
    print("|---|---|---|---|")
    for v in variants:
        m = statistics.median(per[v])
        print(f"| {v} | {m:.2f} | {m - off:.2f} | {' '.join(f'{x:.1f}' for x in per[v])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
