"""Automatic retention under live traffic (issue 17.3, ADR 0030), side by side.

    python bench/bench_retention.py                 # 1,000,000 done rows, 2 rounds, ~30 min
    python bench/bench_retention.py --rows 200000   # ~8 min on 2 cores
    python bench/bench_retention.py --rows 20000 --seconds 5 --rounds 2   # smoke test

The claim measured (issue 17.3): with ``--rows`` ``done`` rows to prune while a steady
``--rate`` events/s flows, the live events' p99 latency stays within 1.5x of the same run
without pruning.

Starts its own throwaway embedded PostgreSQL (``durable=True``: fsync and synchronous
commit on), migrates it, and allocates two generations: generation 1 holds ``--rows``
``done`` outbox rows finished 8 days ago plus as many ledger rows handled 30 days ago
(drained, so prunable), generation 2 is the serving generation.  Before every run the
tables are refilled in bulk (``INSERT ... SELECT generate_series``), vacuumed, analyzed and
checkpointed, so both contenders start from the same state.  During a run the real consumer
of generation 2 (``bench/_live.py``: the settings' lanes and batch, LISTEN, a no-op
handler) runs in this process while a producer publishes single events at ``--rate`` per
second for ``--seconds``; the latency of an event is its publisher's call start -> its
handler start.

Two contenders, same rate, same duration: ``none`` (no pruning) and ``prune`` (the workers'
:class:`~spectral_core.retention.Pruner` at ``--rows-per-s`` and ``--batch``, by default the
settings' defaults, passes back to back from the traffic's start until a pass finds nothing
left).  By default a run lasts long enough for the pruner to finish at its pace
(``2 * rows / rows_per_s + 30`` s, at least 60 s).  Paired rounds, the order rotated per
round (none/prune, prune/none, ...), after an uncounted ``--warmup`` run.  Per round: p50
and p99 of both runs and their ratios; the same over the events published while the pruner
was deleting (the same offsets in the run without pruning); the prune time and rows/s
(outbox + ledger rows); the WAL bytes of each run (``pg_current_wal_lsn()`` at the
traffic's start and end) and their difference; the checkpoints the server started during
each run (``pg_stat_checkpointer``, requested / timed); what the server's processes were
waiting on during each run (``pg_stat_activity`` sampled every 20 ms: the live statements,
the pruner, autovacuum, the WAL writer, ...).  The summary gives the median of each
per-round ratio (never the best round).  If the pruner did not finish within a run the
summary says so: raise ``--seconds``.  Figures of record need a quiet machine: on the
shared 2-vCPU development box runs vary by 10-30 %.

Writes ``bench/results/retention-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _live import TOPIC, LiveRun, live_run, wal_lsn, wal_since  # noqa: E402

from spectral_core import Database, Settings  # noqa: E402
from spectral_core.embedded import EmbeddedPostgres  # noqa: E402
from spectral_core.generations import allocate_generation  # noqa: E402
from spectral_core.logging import configure_logging  # noqa: E402
from spectral_core.migrate import run_migrations  # noqa: E402
from spectral_core.retention import Pruner, RetentionConfig  # noqa: E402

_DEFAULTS = Settings.from_env({})


def fill(url: str, rows: int) -> None:
    """Generation 1: exactly ``rows`` old done rows and ledger rows; generation 2 empty.
    Bulk-loaded (``INSERT ... SELECT generate_series``), vacuumed, analyzed, and followed by
    a CHECKPOINT so every run starts at the same point of the WAL's full-page-write cycle."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE core.outbox, core.event_handled")
        conn.execute(
            """
            INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status,
                                     attempts, created_at, finished_at)
            SELECT 1, %s, '{"n": 1}', 'old-' || i, 'done', 1,
                   now() - interval '8 days', now() - interval '8 days'
            FROM generate_series(1, %s) AS i
            """,
            (TOPIC, rows),
        )
        conn.execute(
            """
            INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id,
                                            generation, handled_at)
            SELECT 'bench.noop', 'old-' || i, NULL, 1, now() - interval '30 days'
            FROM generate_series(1, %s) AS i
            """,
            (rows,),
        )
        conn.execute("VACUUM ANALYZE core.outbox")
        conn.execute("VACUUM ANALYZE core.event_handled")
        conn.execute("CHECKPOINT")


class PruneLog:
    """What the pruner did within one run (times in seconds after the traffic started)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None
        self.outbox = 0
        self.ledger = 0
        self.batches = 0
        self.wal_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        took = None if self.start is None or self.end is None else self.end - self.start
        deleted = self.outbox + self.ledger
        return {
            "deleted_outbox": self.outbox,
            "deleted_ledger": self.ledger,
            "batches": self.batches,
            # from the pruner's first pass until a pass found nothing left (None: the run
            # ended first)
            "prune_s": None if took is None else round(took, 2),
            "rows_per_s": None if not took else round(deleted / took),
            "prune_wal_bytes": self.wal_bytes,
        }


def pruner_beside(settings: Settings, plog: PruneLog, expected: int) -> Any:
    """The workers' pruner (paced by the settings' rows per second), passes
    back to back from the start of the traffic until the ``expected`` rows are deleted (or a
    pass finds nothing left): the end of that pass is the prune time."""
    pruner = Pruner(RetentionConfig.from_settings(settings))

    async def prune(db: Database, t_start: float) -> None:
        lsn = await wal_lsn(db)
        plog.start = time.monotonic() - t_start
        while True:
            async with db.pool.connection() as conn:
                result = await pruner.prune(conn)
            plog.outbox += result.outbox
            plog.ledger += result.ledger
            plog.batches += result.batches
            done = plog.outbox + plog.ledger >= expected
            if done or (result.deleted == 0 and not result.contended):
                plog.end = time.monotonic() - t_start
                plog.wal_bytes = await wal_since(db, lsn)
                return

    return prune


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def med(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.median(vals), 3) if vals else None


def checkpoints(url: str) -> tuple[int, int]:
    """Checkpoints the server started so far: (requested, timed)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.info.server_version >= 170000:
            sql = "SELECT num_requested, num_timed FROM pg_stat_checkpointer"
        else:
            sql = "SELECT checkpoints_req, checkpoints_timed FROM pg_stat_bgwriter"
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


class WaitSampler:
    """Samples ``pg_stat_activity`` every ``every_s`` from a process of its own (not to share
    the live loop's interpreter) during a run: per (who, wait event) the number of samples in
    which a backend was active and waiting on it.  ``who`` is ``live`` (the traffic's
    statements), ``pruner``, or the server process's type (autovacuum worker, walwriter,
    checkpointer, ...); ``CPU`` when active and not waiting."""

    SQL = """
        SELECT CASE WHEN backend_type <> 'client backend' THEN backend_type
                    WHEN query LIKE '%%WITH win AS%%' THEN 'pruner'
                    ELSE 'live' END,
               coalesce(wait_event_type || ':' || wait_event, 'CPU')
        FROM pg_stat_activity
        WHERE pid <> pg_backend_pid()
          AND (backend_type <> 'client backend' OR state = 'active')
          AND wait_event_type IS DISTINCT FROM 'Activity'
          AND wait_event_type IS DISTINCT FROM 'Client'
          AND query NOT LIKE 'LISTEN%%'
    """

    def __init__(self, url: str, every_s: float = 0.02) -> None:
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        self._proc = ctx.Process(target=self._run, args=(url, every_s), daemon=True)
        self.counts: dict[str, int] = {}
        self.samples = 0

    def _run(self, url: str, every_s: float) -> None:
        counts: collections.Counter[str] = collections.Counter()
        samples = 0
        with psycopg.connect(url, autocommit=True) as conn:
            while not self._stop.wait(every_s):
                samples += 1
                for who, wait in conn.execute(self.SQL).fetchall():
                    counts[f"{who} {wait}"] += 1
        self._out.put((samples, dict(counts)))

    def __enter__(self) -> WaitSampler:
        self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.samples, self.counts = self._out.get(timeout=30)
        self._proc.join(10)

    def top(self, n: int = 8) -> dict[str, float]:
        """The ``n`` most frequent, as the share of samples (%)."""
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]
        return {k: round(100.0 * v / max(self.samples, 1), 1) for k, v in ranked}


def one_run(
    settings: Settings, mode: str, rate: float, seconds: float, rows: int
) -> tuple[LiveRun, PruneLog, tuple[int, int], dict[str, float]]:
    plog = PruneLog()
    beside = pruner_beside(settings, plog, 2 * rows) if mode == "prune" else None
    assert settings.database_url is not None
    c0 = checkpoints(settings.database_url)
    with WaitSampler(settings.database_url) as waits:
        run = anyio.run(
            lambda: live_run(settings, rate=rate, seconds=seconds, beside=beside, key_prefix=mode)
        )
    c1 = checkpoints(settings.database_url)
    return run, plog, (c1[0] - c0[0], c1[1] - c0[1]), waits.top()


def main() -> int:
    t_begin = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="done rows to prune")
    ap.add_argument("--rate", type=float, default=100.0, help="live events per second")
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="length of one run (default: 2 * rows / rows-per-s + 30, at least 60)",
    )
    ap.add_argument("--rounds", type=int, default=2, help="paired rounds (order rotated)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of an uncounted first run")
    ap.add_argument(
        "--batch",
        type=int,
        default=_DEFAULTS.retention_batch_size,
        help="SPECTRAL_RETENTION_BATCH_SIZE (default: the setting's default)",
    )
    ap.add_argument(
        "--rows-per-s",
        type=float,
        default=_DEFAULTS.retention_rows_per_s,
        help="SPECTRAL_RETENTION_ROWS_PER_S, the pruner's pace (default: the setting's default)",
    )
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = max(60.0, round(2 * args.rows / args.rows_per_s + 30))
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    print(
        f"pacing: SPECTRAL_RETENTION_ROWS_PER_S={args.rows_per_s:g} "
        f"SPECTRAL_RETENTION_BATCH_SIZE={args.batch}; {args.rows:,} outbox + {args.rows:,} "
        f"ledger rows to prune, {args.rate:g} events/s, {args.seconds:g} s runs, "
        f"{args.rounds} rounds",
        flush=True,
    )
    # the workers' production logging (JSON, level info), written to /dev/null
    configure_logging(fmt="json", level="info", stream=open(os.devnull, "w"))  # noqa: SIM115
    root = Path(tempfile.mkdtemp(prefix="spectral-bench-retention-"))
    server = EmbeddedPostgres(root, durable=True)
    url = server.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            run_migrations(conn)
            allocate_generation(conn, "old")
            allocate_generation(conn, "live")
        settings = Settings.from_env(
            {},
            database_url=url,
            generation=2,
            retention_batch_size=args.batch,
            retention_rows_per_s=args.rows_per_s,
        )
        if args.warmup > 0:  # imports, first plans, the pools: not counted
            one_run(settings, "none", args.rate, args.warmup, 0)
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ["none", "prune"] if r % 2 == 0 else ["prune", "none"]
            runs: dict[str, LiveRun] = {}
            plog = PruneLog()
            fills: dict[str, float] = {}
            ckpts: dict[str, tuple[int, int]] = {}
            waits: dict[str, dict[str, float]] = {}
            for mode in order:
                t0 = time.monotonic()
                fill(url, args.rows)
                fills[mode] = round(time.monotonic() - t0, 1)
                runs[mode], log_, ckpts[mode], waits[mode] = one_run(
                    settings, mode, args.rate, args.seconds, args.rows
                )
                if mode == "prune":
                    plog = log_
            # whole runs, and the events published while the pruner was deleting (the same
            # offsets in the run without pruning)
            w0 = plog.start or 0.0
            w1 = plog.end if plog.end is not None else float("inf")
            row: dict[str, Any] = {"round": r + 1, "order": order, "fill_s": fills}
            for mode in ("none", "prune"):
                row[mode] = {
                    "all": runs[mode].stats(),
                    "while_pruning": runs[mode].stats(w0, w1),
                    "lost": runs[mode].lost,
                    "wal_bytes": runs[mode].wal_bytes,
                    "load_avg_1m_at_end": runs[mode].load_avg,
                    "checkpoints_req_timed": list(ckpts[mode]),
                    "waits_pct_of_samples": waits[mode],
                }
            row["prune"].update(plog.as_dict())
            row["p99_ratio"] = ratio(row["prune"]["all"]["p99_ms"], row["none"]["all"]["p99_ms"])
            row["p50_ratio"] = ratio(row["prune"]["all"]["p50_ms"], row["none"]["all"]["p50_ms"])
            row["p99_ratio_while_pruning"] = ratio(
                row["prune"]["while_pruning"]["p99_ms"], row["none"]["while_pruning"]["p99_ms"]
            )
            row["extra_wal_bytes"] = runs["prune"].wal_bytes - runs["none"].wal_bytes
            rounds.append(row)
            n, p = row["none"], row["prune"]
            print(
                f"round {r + 1} ({'/'.join(order)}): "
                f"p50 none {n['all']['p50_ms']} / prune {p['all']['p50_ms']} ms, "
                f"p99 none {n['all']['p99_ms']} / prune {p['all']['p99_ms']} ms, "
                f"p99 ratio {row['p99_ratio']} (while pruning: none {n['while_pruning']['p99_ms']}"
                f" / prune {p['while_pruning']['p99_ms']} ms, ratio "
                f"{row['p99_ratio_while_pruning']}); pruned {p['deleted_outbox']:,} outbox + "
                f"{p['deleted_ledger']:,} ledger rows in {p['prune_s']} s "
                f"({p['rows_per_s']} rows/s); WAL none {n['wal_bytes']:,} / prune "
                f"{p['wal_bytes']:,} B (pruner's window {p['prune_wal_bytes']}); "
                f"checkpoints (requested, timed) none {n['checkpoints_req_timed']} / prune "
                f"{p['checkpoints_req_timed']}; "
                f"lost {n['lost']}/{p['lost']}; fill {fills}; load average at the ends "
                f"{n['load_avg_1m_at_end']} / {p['load_avg_1m_at_end']}",
                flush=True,
            )
            for mode in ("none", "prune"):
                print(f"  waits ({mode}, % of 20 ms samples): {waits[mode]}", flush=True)
        summary = {
            "rows": args.rows,
            "rate": args.rate,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "batch": args.batch,
            "rows_per_s_budget": args.rows_per_s,
            "p99_ratio_per_round": [x["p99_ratio"] for x in rounds],
            "p99_ratio_while_pruning_per_round": [x["p99_ratio_while_pruning"] for x in rounds],
            "median_p99_ratio": med([x["p99_ratio"] for x in rounds]),
            "median_p50_ratio": med([x["p50_ratio"] for x in rounds]),
            "median_p99_ratio_while_pruning": med([x["p99_ratio_while_pruning"] for x in rounds]),
            "median_p99_ms": {
                m: med([x[m]["all"]["p99_ms"] for x in rounds]) for m in ("none", "prune")
            },
            "median_p50_ms": {
                m: med([x[m]["all"]["p50_ms"] for x in rounds]) for m in ("none", "prune")
            },
            "median_prune_s": med([x["prune"]["prune_s"] for x in rounds]),
            "median_rows_per_s": med([x["prune"]["rows_per_s"] for x in rounds]),
            "median_extra_wal_bytes": med([x["extra_wal_bytes"] for x in rounds]),
            "pruning_finished_in_every_run": all(x["prune"]["prune_s"] is not None for x in rounds),
            "target_p99_ratio": 1.5,
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
            "elapsed_s": round(time.monotonic() - t_begin, 1),
        }
        print(json.dumps(summary), flush=True)
        if not summary["pruning_finished_in_every_run"]:
            print(
                "WARNING: the pruner had not finished when a run ended: the whole-run ratio "
                "covers only part of the pruning; raise --seconds",
                flush=True,
            )
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        (out / f"retention-{stamp}.json").write_text(
            json.dumps({"summary": summary, "rounds": rounds}, indent=2)
        )
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
