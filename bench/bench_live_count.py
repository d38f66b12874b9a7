"""The rows-still-to-handle count of ``bench_outbox.py``: a table scan against the partial
indexes, on an outbox without history and beside ``--history`` handled rows.

    python bench/bench_live_count.py                   # ~1 min
    python bench/bench_live_count.py --history 5000000 --pending 50000

The old count (``status IN ('pending', 'in_flight')``) scans the whole table; the one the
benchmark watchers use (``bench_outbox.LIVE`` on a connection with ``WATCH_OPTIONS``)
follows the partial indexes.  Median of ``--repeats`` executions each, plan shown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_outbox as bo  # noqa: E402

OLD = "SELECT count(*) FROM core.outbox WHERE generation = 1 AND status IN ('pending', 'in_flight')"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--history", type=int, default=1_000_000)
    ap.add_argument("--pending", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    from spectral_core.embedded import EmbeddedPostgres
    from spectral_core.generations import allocate_generation
    from spectral_core.migrate import run_migrations

    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="spectral-bench-count-")))
    uri = pg.start()
    try:
        with psycopg.connect(uri, autocommit=True) as c:
            run_migrations(c)
            allocate_generation(c, "bench")
        for hist in (0, a.history):
            with psycopg.connect(uri, autocommit=True) as c:
                c.execute("TRUNCATE core.outbox")
                c.execute(
                    "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, "
                    "status, finished_at) SELECT 1, 't', '{}', 'h-' || g, 'done', now() "
                    "FROM generate_series(1, %s) AS g",
                    (hist,),
                )
                c.execute(
                    "INSERT INTO core.outbox (generation, topic, payload, idempotency_key) "
                    "SELECT 1, 't', '{}', 'p-' || g FROM generate_series(1, %s) AS g",
                    (a.pending,),
                )
                c.execute("VACUUM ANALYZE core.outbox")
            for name, query, opts in (
                ("table scan", OLD, ""),
                ("partial", bo.LIVE, bo.WATCH_OPTIONS),
            ):
                with psycopg.connect(uri, autocommit=True, options=opts) as c:
                    plan = [r[0] for r in c.execute("EXPLAIN " + query).fetchall()]
                    times = []
                    for _ in range(a.repeats):
                        t0 = time.perf_counter()
                        row = c.execute(query).fetchone()
                        times.append(time.perf_counter() - t0)
                scan = "Seq Scan" in "\n".join(plan)
                print(
                    f"history {hist:>10,}  {name:<10} {statistics.median(times) * 1000:8.2f} ms "
                    f"(count {row[0] if row else '?'}, {'sequential scan' if scan else 'indexes'})"
                )
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
