"""DELETE-based pruning versus dropping a partition, under live traffic (ADR 0031, issue 17.3).

    python bench/bench_partition_drop.py                    # 10,000,000 rows, ~35 min on 2 cores
    python bench/bench_partition_drop.py --rows 1000000     # ~2-3 min

What ADR 0031's "What measurement would decide it" asks, on one throwaway embedded
PostgreSQL (``durable=True``: fsync and synchronous commit on):

* the table holds ``--rows`` outbox rows, 90 % of them ``done`` and old (generation 1,
  finished 8 days ago: past ``SPECTRAL_OUTBOX_RETENTION_S``, drained, so prunable) and 10 %
  ``done`` and recent (generation 2, the serving one: kept); bulk-loaded with
  ``INSERT ... SELECT generate_series``, then ``VACUUM ANALYZE`` and ``CHECKPOINT``, then
  ``--settle-seconds`` of uncounted live traffic;
* live traffic in every run: ``--rate`` events/s (default 100) published one per
  transaction into generation 2 and handled by the real consumer (``bench/_live.py``),
  latency = the publisher's call start -> the handler start;
* **delete** variant, on ``core.outbox`` itself: a run without pruning (the baseline,
  ``--baseline-seconds``), then a run with the workers' real
  :class:`~spectral_core.retention.Pruner` (``--batch`` and ``--rows-per-s``, by default the
  settings' defaults: 9 M rows take 30 min at 5,000 rows/s) passing until the old rows are gone (the traffic stops a few seconds after); then a timed ``VACUUM`` of the
  outbox (what autovacuum would have to do after it).  Ledger rows are not loaded: the
  comparison is of the outbox's rows only (a partitioned outbox would not change the
  ledger);
* **partition** variant, on a partitioned copy of ``core.outbox``'s shape in a scratch
  schema (``bench_part.outbox``: the same columns, defaults and checks, ``PARTITION BY LIST
  (generation)``, primary key ``(generation, id)``, the same secondary indexes as
  partitioned indexes; one partition per generation), loaded with the same rows;
  ``core.outbox`` is emptied.  The real consumer's traffic still flows through
  ``core.outbox`` (the product's code knows no other table) and, beside it, a *shadow
  writer* does the same at the same rate on the partitioned copy (per event: ``INSERT`` a
  pending row into generation 2, then in a second transaction mark it done, timed as one
  operation), so a lock the drop takes on the parent shows in its latency.  A baseline run
  without the drop, then a run in which, ``--drop-after`` seconds in,
  ``ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY`` and ``DROP TABLE`` remove generation
  1's partition (each timed).

Reported per variant: the time to remove the old rows (and rows/s), the WAL bytes written
(``pg_current_wal_lsn()``: of the pruning or the detach+drop window, and of each whole
run), the live events' p50/p99 over each run and over the window of the pruning/drop
against the baseline's (the ratio, target <= 1.5 as in issue 17.3), the shadow writer's
p50/p99 in the partition variant, and the VACUUM after DELETE-based pruning.  One run per
contender (not rotated rounds: reloading 10 M rows per round would not fit the time
budget); the baseline always runs first on the same freshly loaded state.  Figures of
record need a quiet machine.  Writes ``bench/results/partition-drop-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _live import TOPIC, LiveRun, live_run, pct, wal_lsn, wal_since  # noqa: E402

from spectral_core import Database, Settings  # noqa: E402
from spectral_core.embedded import EmbeddedPostgres  # noqa: E402
from spectral_core.generations import allocate_generation  # noqa: E402
from spectral_core.logging import configure_logging  # noqa: E402
from spectral_core.migrate import run_migrations  # noqa: E402
from spectral_core.retention import Pruner, RetentionConfig  # noqa: E402

SCRATCH = "bench_part"
#: the baselines' first seconds (new connections, first plans) are left out of their figures
SETTLE_S = 2.0

#: the rows of both variants: ``{old}`` done rows of generation 1 finished 8 days ago, then
#: ``{young}`` done rows of generation 2 finished an hour ago; ids in creation order
_ROWS = """
SELECT CASE WHEN i <= %(old)s THEN 1 ELSE 2 END, %(topic)s, '{{"n": 1}}'::jsonb,
       'bulk-' || i, 'done', 1,
       CASE WHEN i <= %(old)s THEN now() - interval '8 days' ELSE now() - interval '1 hour' END,
       CASE WHEN i <= %(old)s THEN now() - interval '8 days' ELSE now() - interval '1 hour' END
FROM generate_series(1, %(rows)s) AS i
"""
_COLUMNS = "generation, topic, payload, idempotency_key, status, attempts, created_at, finished_at"


def timed(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> float:
    t0 = time.monotonic()
    conn.execute(sql, params)
    return round(time.monotonic() - t0, 2)


def settle(conn: psycopg.Connection[Any], table: str) -> dict[str, float]:
    return {
        "vacuum_analyze_s": timed(conn, f"VACUUM ANALYZE {table}"),
        "checkpoint_s": timed(conn, "CHECKPOINT"),
    }


def fill_core(url: str, rows: int, old: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE core.outbox, core.event_handled")
        load = timed(
            conn,
            f"INSERT INTO core.outbox ({_COLUMNS}) " + _ROWS.format(),
            {"old": old, "rows": rows, "topic": TOPIC},
        )
        return {"load_s": load, **settle(conn, "core.outbox")}


def create_partitioned(conn: psycopg.Connection[Any]) -> list[str]:
    """``bench_part.outbox``: core.outbox's columns, defaults and checks, partitioned by
    generation, its secondary indexes as partitioned indexes.  Returns the DDL run."""
    ddl = [
        f"DROP SCHEMA IF EXISTS {SCRATCH} CASCADE",
        f"CREATE SCHEMA {SCRATCH}",
        f"CREATE SEQUENCE {SCRATCH}.outbox_id",
        f"CREATE TABLE {SCRATCH}.outbox (LIKE core.outbox INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS) PARTITION BY LIST (generation)",
        f"ALTER TABLE {SCRATCH}.outbox ALTER id SET DEFAULT nextval('{SCRATCH}.outbox_id')",
        f"ALTER TABLE {SCRATCH}.outbox ADD PRIMARY KEY (generation, id)",
    ]
    rows = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisunique "
        "FROM pg_index AS i WHERE i.indrelid = 'core.outbox'::regclass AND NOT i.indisprimary"
    ).fetchall()
    for name, definition, unique in rows:
        if unique:  # a unique index must include the partition key: none exists today
            raise SystemExit(f"core.outbox has a unique index {name}: adapt this bench")
        short = name.split(".")[-1]
        ddl.append(
            definition.replace(
                f"INDEX {short} ON core.outbox", f"INDEX {short} ON {SCRATCH}.outbox"
            )
        )
    for gen in (1, 2):
        ddl.append(
            f"CREATE TABLE {SCRATCH}.outbox_g{gen} PARTITION OF {SCRATCH}.outbox "
            f"FOR VALUES IN ({gen})"
        )
    for statement in ddl:
        conn.execute(statement)
    return ddl


def fill_partitioned(url: str, rows: int, old: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE core.outbox, core.event_handled")
        conn.execute("VACUUM core.outbox")
        ddl = create_partitioned(conn)
        load = timed(
            conn,
            f"INSERT INTO {SCRATCH}.outbox (id, {_COLUMNS}) "
            + _ROWS.format().replace("SELECT CASE", "SELECT nextval('bench_part.outbox_id'), CASE"),
            {"old": old, "rows": rows, "topic": TOPIC},
        )
        return {"load_s": load, "ddl": ddl, **settle(conn, f"{SCRATCH}.outbox")}


def stats(samples: list[tuple[float, float]], start: float = 0, end: float = 1e18) -> Any:
    lat = [ms for at, ms in samples if start <= at < end]
    if not lat:
        return {"events": 0, "p50_ms": None, "p99_ms": None}
    return {
        "events": len(lat),
        "p50_ms": round(pct(lat, 0.5), 2),
        "p99_ms": round(pct(lat, 0.99), 2),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else round(a / b, 3)


def run_report(run: LiveRun, window: tuple[float, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seconds": round(run.seconds, 1),
        "all": run.stats(SETTLE_S),
        "lost": run.lost,
        "wal_bytes": run.wal_bytes,
        "load_avg_1m_at_end": run.load_avg,
    }
    if window is not None:
        out["window"] = run.stats(*window)
    return out


def settle_traffic(settings: Settings, a: argparse.Namespace) -> None:
    """Uncounted live traffic right after a load (the first run on a freshly loaded table
    was the slowest in smoke runs, whatever it did)."""
    if a.settle_seconds > 0:
        anyio.run(lambda: live_run(settings, rate=a.rate, seconds=a.settle_seconds, key_prefix="s"))


# -- delete variant -------------------------------------------------------------------------


def delete_variant(url: str, settings: Settings, a: argparse.Namespace) -> dict[str, Any]:
    old = int(a.rows * 0.9)
    fill = fill_core(url, a.rows, old)
    print(f"delete: loaded {a.rows:,} rows ({old:,} old) {fill}", flush=True)
    settle_traffic(settings, a)
    base = anyio.run(lambda: live_run(settings, rate=a.rate, seconds=a.baseline_seconds))
    print(f"delete: baseline {run_report(base, None)}", flush=True)

    pruner = Pruner(RetentionConfig.from_settings(settings))
    log: dict[str, Any] = {"deleted": 0, "passes": 0}
    stop = anyio.Event()

    async def prune(db: Database, t_start: float) -> None:
        lsn = await wal_lsn(db)
        log["start"] = time.monotonic() - t_start
        while True:
            async with db.pool.connection() as conn:
                result = await pruner.prune(conn)
            log["deleted"] += result.outbox
            log["passes"] += 1
            if log["deleted"] >= old or (result.deleted == 0 and not result.contended):
                break
        log["end"] = time.monotonic() - t_start
        log["wal_bytes"] = await wal_since(db, lsn)
        await anyio.sleep(a.tail)
        stop.set()

    pruned = anyio.run(
        lambda: live_run(
            settings, rate=a.rate, seconds=a.max_seconds, beside=prune, key_prefix="p", stop=stop
        )
    )
    took = log["end"] - log["start"] if "end" in log else None
    with psycopg.connect(url, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        vacuum_s = timed(conn, "VACUUM core.outbox")
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn[0] if lsn else "0/0",)
        ).fetchone()
        vacuum_wal = int(row[0]) if row else None
        left = conn.execute("SELECT count(*) FROM core.outbox WHERE generation = 1").fetchone()
    window = (log.get("start", 0.0), log.get("end", 1e18))
    result = {
        "load": fill,
        "baseline": run_report(base, None),
        "pruning": run_report(pruned, window),
        "deleted": log["deleted"],
        "passes": log["passes"],
        "remove_s": None if took is None else round(took, 1),
        "rows_per_s": None if not took else round(log["deleted"] / took),
        "remove_wal_bytes": log.get("wal_bytes"),
        "vacuum_after_s": vacuum_s,
        "vacuum_after_wal_bytes": vacuum_wal,
        "old_rows_left": int(left[0]) if left else None,
    }
    result["p99_ratio_all"] = ratio(
        result["pruning"]["all"]["p99_ms"], base.stats(SETTLE_S)["p99_ms"]
    )
    result["p99_ratio_window"] = ratio(
        result["pruning"]["window"]["p99_ms"], base.stats(SETTLE_S)["p99_ms"]
    )
    result["p50_ratio_window"] = ratio(
        result["pruning"]["window"]["p50_ms"], base.stats(SETTLE_S)["p50_ms"]
    )
    print(f"delete: {json.dumps({k: v for k, v in result.items() if k != 'load'})}", flush=True)
    return result


# -- partition variant ----------------------------------------------------------------------


def partition_variant(url: str, settings: Settings, a: argparse.Namespace) -> dict[str, Any]:
    old = int(a.rows * 0.9)
    fill = fill_partitioned(url, a.rows, old)
    print(f"partition: loaded {a.rows:,} rows ({old:,} old) " + str(fill["load_s"]), flush=True)
    settle_traffic(settings, a)

    def shadowed(drop: bool, shadow: list[tuple[float, float]], log: dict[str, Any]) -> Any:
        async def beside(db: Database, t_start: float) -> None:
            async def one_op(i: int) -> None:
                t0 = time.monotonic()
                async with shadow_pool.connection() as conn:
                    async with conn.transaction():
                        cur = await conn.execute(
                            f"INSERT INTO {SCRATCH}.outbox (generation, topic, payload, "
                            "idempotency_key) VALUES (2, %s, '{}', %s) RETURNING id",
                            (TOPIC, f"shadow-{i}"),
                        )
                        row = await cur.fetchone()
                    assert row is not None
                    async with conn.transaction():
                        await conn.execute(
                            f"UPDATE {SCRATCH}.outbox SET status = 'done', "
                            "finished_at = now() WHERE generation = 2 AND id = %s",
                            (row[0],),
                        )
                shadow.append((t0 - t_start, (time.monotonic() - t0) * 1000))

            async def writer() -> None:  # open loop: one task per operation, on schedule
                async with anyio.create_task_group() as ops:
                    i = 0
                    t_first = time.monotonic()  # after the pool's connections are open
                    while True:
                        delay = t_first + i / a.rate - time.monotonic()
                        if delay > 0:
                            await anyio.sleep(delay)
                        ops.start_soon(one_op, i)
                        i += 1

            async def dropper() -> None:
                await anyio.sleep(a.drop_after)
                lsn = await wal_lsn(db)
                log["start"] = time.monotonic() - t_start
                # DETACH ... CONCURRENTLY cannot run in a transaction block: autocommit
                async with db.pool.connection() as conn:
                    await conn.set_autocommit(True)
                    try:
                        t0 = time.monotonic()
                        await conn.execute(
                            f"ALTER TABLE {SCRATCH}.outbox DETACH PARTITION "
                            f"{SCRATCH}.outbox_g1 CONCURRENTLY"
                        )
                        log["detach_s"] = round(time.monotonic() - t0, 3)
                        t0 = time.monotonic()
                        await conn.execute(f"DROP TABLE {SCRATCH}.outbox_g1")
                        log["drop_s"] = round(time.monotonic() - t0, 3)
                    finally:
                        await conn.set_autocommit(False)
                log["end"] = time.monotonic() - t_start
                log["wal_bytes"] = await wal_since(db, lsn)

            # its own pool: a writer waiting on a lock must not take the consumer's connections
            shadow_pool = AsyncConnectionPool(url, min_size=8, max_size=40, open=False)
            async with shadow_pool, anyio.create_task_group() as tg:
                await shadow_pool.wait()
                tg.start_soon(writer)
                if drop:
                    tg.start_soon(dropper)

        return beside

    base_shadow: list[tuple[float, float]] = []
    base = anyio.run(
        lambda: live_run(
            settings,
            rate=a.rate,
            seconds=a.baseline_seconds,
            beside=shadowed(False, base_shadow, {}),
        )
    )
    print(f"partition: baseline {run_report(base, None)}", flush=True)
    drop_shadow: list[tuple[float, float]] = []
    log: dict[str, Any] = {}
    dropped = anyio.run(
        lambda: live_run(
            settings,
            rate=a.rate,
            seconds=a.drop_seconds,
            beside=shadowed(True, drop_shadow, log),
            key_prefix="d",
        )
    )
    # the events published from the drop's start until 1 s after its end
    window = (log.get("start", 0.0), log.get("end", 1e18) + 1.0)
    with psycopg.connect(url, autocommit=True) as conn:
        left = conn.execute(
            f"SELECT count(*) FROM {SCRATCH}.outbox WHERE generation = 1"
        ).fetchone()
    result = {
        "load": fill,
        "baseline": run_report(base, None),
        "drop": run_report(dropped, window),
        "shadow_baseline": stats(base_shadow, SETTLE_S),
        "shadow_drop": {"all": stats(drop_shadow, SETTLE_S), "window": stats(drop_shadow, *window)},
        "detach_s": log.get("detach_s"),
        "drop_s": log.get("drop_s"),
        "remove_s": round(log["end"] - log["start"], 3) if "end" in log else None,
        "rows_per_s": round(old / (log["end"] - log["start"])) if "end" in log else None,
        "remove_wal_bytes": log.get("wal_bytes"),
        "old_rows_left": int(left[0]) if left else None,
    }
    result["p99_ratio_all"] = ratio(result["drop"]["all"]["p99_ms"], base.stats(SETTLE_S)["p99_ms"])
    result["p99_ratio_window"] = ratio(
        result["drop"]["window"]["p99_ms"], base.stats(SETTLE_S)["p99_ms"]
    )
    result["p50_ratio_window"] = ratio(
        result["drop"]["window"]["p50_ms"], base.stats(SETTLE_S)["p50_ms"]
    )
    result["shadow_p99_ratio_window"] = ratio(
        result["shadow_drop"]["window"]["p99_ms"], result["shadow_baseline"]["p99_ms"]
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {SCRATCH} CASCADE")
    print(f"partition: {json.dumps({k: v for k, v in result.items() if k != 'load'})}", flush=True)
    return result


def main() -> int:
    t_begin = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows in the table (90 %% old)")
    ap.add_argument("--rate", type=float, default=100.0, help="live events per second")
    ap.add_argument("--baseline-seconds", type=float, default=45.0)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="cap of the DELETE-pruning run (default: the old rows / --rows-per-s + 120)",
    )
    ap.add_argument(
        "--settle-seconds", type=float, default=10.0, help="uncounted traffic after each load"
    )
    ap.add_argument("--tail", type=float, default=3.0, help="traffic after the pruning ended")
    ap.add_argument("--drop-seconds", type=float, default=30.0, help="length of the drop run")
    ap.add_argument("--drop-after", type=float, default=5.0, help="seconds before the drop")
    ap.add_argument("--batch", type=int, default=1000, help="SPECTRAL_RETENTION_BATCH_SIZE")
    ap.add_argument(
        "--rows-per-s",
        type=float,
        default=Settings.from_env({}).retention_rows_per_s,
        help="SPECTRAL_RETENTION_ROWS_PER_S, the pruner's pace (default: the setting's)",
    )
    ap.add_argument("--only", choices=["delete", "partition"], default=None)
    a = ap.parse_args()
    if a.max_seconds is None:
        a.max_seconds = round(0.9 * a.rows / a.rows_per_s + 120)
    print("$ python " + " ".join(shlex.quote(x) for x in sys.argv), flush=True)
    configure_logging(fmt="json", level="info", stream=open(os.devnull, "w"))  # noqa: SIM115
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="spectral-bench-partition-")))
    url = server.start()
    results: dict[str, Any] = {}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            run_migrations(conn)
            allocate_generation(conn, "old")
            allocate_generation(conn, "live")
        settings = Settings.from_env(
            {},
            database_url=url,
            generation=2,
            retention_batch_size=a.batch,
            retention_rows_per_s=a.rows_per_s,
        )
        # uncounted warm-up: imports, pools, first plans
        anyio.run(lambda: live_run(settings, rate=a.rate, seconds=3.0, key_prefix="w"))
        if a.only != "partition":
            results["delete"] = delete_variant(url, settings, a)
        if a.only != "delete":
            results["partition"] = partition_variant(url, settings, a)
    finally:
        server.destroy()
    summary: dict[str, Any] = {
        "rows": a.rows,
        "old_rows": int(a.rows * 0.9),
        "rate": a.rate,
        "cpus": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "elapsed_s": round(time.monotonic() - t_begin, 1),
    }
    print(json.dumps(summary), flush=True)
    print(
        "\n| variant | remove old rows | rows/s | WAL of the removal | live p50 base / during "
        "| live p99 base / during | p99 ratio (window) | after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, key in (("delete", "pruning"), ("partition", "drop")):
        r = results.get(name)
        if not r:
            continue
        w = r[key]["window"]
        after = (
            f"VACUUM {r['vacuum_after_s']} s, {r['vacuum_after_wal_bytes']:,} B WAL"
            if name == "delete"
            else f"detach {r['detach_s']} s + drop {r['drop_s']} s; shadow writer p99 "
            f"{r['shadow_baseline']['p99_ms']} / {r['shadow_drop']['window']['p99_ms']} ms"
        )
        print(
            f"| {name} | {r['remove_s']} s | {r['rows_per_s']} | "
            f"{(r['remove_wal_bytes'] or 0):,} B | {r['baseline']['all']['p50_ms']} / "
            f"{w['p50_ms']} ms | {r['baseline']['all']['p99_ms']} / {w['p99_ms']} ms | "
            f"{r['p99_ratio_window']} | {after} |"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"partition-drop-{stamp}.json").write_text(
        json.dumps({"summary": summary, **results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
