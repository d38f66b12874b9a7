"""Cost of one production JSON log line (the worker writes one per handled event).

    python bench/bench_logging.py            # ~20 s

Compares, interleaved in rounds, the chain ``configure_logging(fmt="json")`` installs
(merge_contextvars + one combined processor) with the stock structlog chain it replaced
(merge_contextvars, add_log_level, the UTC stamper, format_exc_info, JSONRenderer over
msgspec), both writing to /dev/null through structlog's BytesLogger, called through a
module-level lazy proxy (``structlog.get_logger``) and through a bound logger (what
``BatchProcessor`` uses per batch).  Prints the median µs per line of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from typing import Any

import msgspec
import structlog

from spectral_core.logging import _json_default, _UtcIsoStamper, configure_logging


def stock(out: Any) -> None:
    encoder = msgspec.json.Encoder(enc_hook=_json_default)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _UtcIsoStamper(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=lambda o, **_: encoder.encode(o)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(20),
        logger_factory=structlog.BytesLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


def ours(out: Any) -> None:
    configure_logging(fmt="json", level="info")
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(out))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=30_000)
    a = ap.parse_args()
    res: dict[str, list[float]] = {}
    with open("/dev/null", "wb") as out:
        for _ in range(a.rounds):
            for name, setup in (("stock", stock), ("ours", ours)):
                structlog.reset_defaults()
                setup(out)
                proxy = structlog.get_logger("bench")
                bound = proxy.bind(batch=100, batch_ms=3.21)
                # attribute lookups inside the call, as in the worker (a partial would resolve
                # the proxy's method once)
                calls = {
                    "proxy": lambda p=proxy: p.info(
                        "outbox.handled",
                        event_id=1,
                        topic="bench.noop",
                        attempts=1,
                        batch=100,
                        batch_ms=3.21,
                    ),
                    "bound": lambda b=bound: b.info(
                        "outbox.handled", event_id=1, topic="bench.noop", attempts=1
                    ),
                }
                for how, fn in calls.items():
                    t = timeit.timeit(fn, number=a.n) / a.n * 1e6
                    res.setdefault(f"{name} {how}", []).append(t)
    for k, v in res.items():
        print(
            f"{k:12s} {statistics.median(v):6.2f} us/line  "
            f"(rounds: {', '.join(f'{x:.1f}' for x in v)})"
        )
    s, o = statistics.median(res["stock proxy"]), statistics.median(res["ours bound"])
    print(
        f"per handled event (stock via proxy -> ours bound): {s:.2f} -> {o:.2f} us "
        f"({o / s * 100:.0f} %)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
