"""Our drain against the hand-written cycle, per row: server CPU, WAL, heap and index writes.

    python bench/drain_per_row.py                      # 3 rounds x 20,000 rows, embedded PG
    python bench/drain_per_row.py --rounds 5 --n 40000 --variants start_sql,start_nosort

One connection, batch 100, on one fresh embedded PostgreSQL (durable, the server's
defaults).  Each phase drains ``--n`` rows that were published just before it into an empty,
freshly analyzed table, after a CHECKPOINT (so every phase pays its full-page images
alike), and reports per row:

* the backend's CPU per statement kind, from ``/proc/<pid>/schedstat`` around each await
  (what the statement costs the server, not waiting for a core);
* the whole cluster's CPU over the phase (postmaster and children: autovacuum, the WAL
  writer, the checkpointer), from ``/proc``;
* WAL bytes between the phase's first and last LSN, and ``pg_waldump --stats=record`` of
  that range (heap updates and inserts, index inserts, full-page images, commits).

Phases: ``ceiling`` is the peer harness's cycle (``/work/shared/bench-peers/ceiling.py``,
``synchronous_commit`` off, prepared statements); ``ours`` is the consumer's statements as it
sends them (``core.outbox_claim_v1``, ``BEGIN``, ``core.outbox_start_v2``, ``COMMIT``;
unprepared, ADR 0041).  ``--variants`` adds candidate forms of our statements, created as
functions in a ``bench`` schema of the benchmark database only (see ``VARIANTS``); the
order of the phases rotates every round.  Figures are medians over rounds.  (Session 9's
logs taken while the ctid claim was ``core.outbox_claim_v2`` name it "ours" and the claim
by primary key "claim_v1"; it was withdrawn, ADR 0048: here it is the variant
"claim_ctid".)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _paired_drain_child import _server_cpu_s  # noqa: E402  (the cluster's CPU, one reading)

CEILING_DDL = """
CREATE TABLE IF NOT EXISTS ceil_outbox (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    status smallint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz,
    done_at timestamptz
);
CREATE INDEX IF NOT EXISTS ceil_outbox_pending ON ceil_outbox (id) WHERE status = 0;
"""
CEIL_FILL = "INSERT INTO ceil_outbox (payload) SELECT unnest(%s::jsonb[])"
CEIL_CLAIM = """
UPDATE ceil_outbox SET status = 1, claimed_at = now()
 WHERE id IN (SELECT id FROM ceil_outbox WHERE status = 0
               ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, payload
"""
CEIL_DONE = "UPDATE ceil_outbox SET status = 2, done_at = now() WHERE id = ANY(%s)"

CLAIM = "SELECT * FROM {schema}.{claim}(%(generation)s, %(worker_id)s, %(limit)s)"
START = (
    "SELECT * FROM {schema}.{start}(%(generation)s, %(worker_id)s, %(ids)b::bigint[], "
    "%(topics)s::text[], %(handlers)s::text[])"
)

# candidate forms, each (claim function, start function); the bodies are in BENCH_DDL
# candidate forms: (claim function, start function, the outbox's fillfactor)
VARIANTS: dict[str, tuple[str, str, int]] = {
    "ours": ("core.outbox_claim_v1", "core.outbox_start_v2", 100),
    "start_sql": ("core.outbox_claim_v1", "bench.start_sql", 100),
    "start_nosort": ("core.outbox_claim_v1", "bench.start_nosort", 100),
    "claim_sql": ("bench.claim_sql", "core.outbox_start_v2", 100),
    # the claim's UPDATE reaching the rows its CTE locked by ctid, not by primary key
    # (measured and withdrawn, ADR 0048)
    "claim_ctid": ("bench.claim_ctid", "core.outbox_start_v2", 100),
    # attribution only: the claim without its `SET enable_seqscan = off` (the GUC saved and
    # restored on every call); the done update leaving claimed_by and last_error as they are
    "claim_noguc": ("bench.claim_noguc", "core.outbox_start_v2", 100),
    "start_keep": ("core.outbox_claim_v1", "bench.start_keep", 100),
    "both_sql": ("bench.claim_sql", "bench.start_sql", 100),
    "ff90": ("core.outbox_claim_v1", "core.outbox_start_v2", 90),
    "ff80": ("core.outbox_claim_v1", "core.outbox_start_v2", 80),
    "ff70": ("core.outbox_claim_v1", "core.outbox_start_v2", 70),
    "ff50": ("core.outbox_claim_v1", "core.outbox_start_v2", 50),
    # attribution only: the start's two writes as statements of their own; our statements
    # prepared (psycopg prepare_threshold=0; none of our connections prepares, ADR 0041);
    # the claim without outbox_in_flight_v2 to write (dropped for the phase)
    "split": ("core.outbox_claim_v1", "split", 100),
    "prepared": ("core.outbox_claim_v1", "core.outbox_start_v2", 100),
    "no_inflight_idx": ("core.outbox_claim_v1", "core.outbox_start_v2", 100),
    # attribution only: the handler transaction committed without waiting for its flush
    "async_commit": ("core.outbox_claim_v1", "core.outbox_start_v2", 100),
}
SPLIT_DONE = """
UPDATE core.outbox AS o
SET status = 'done', finished_at = now(), claimed_by = NULL, last_error = NULL
WHERE o.id = ANY(%(ids)b::bigint[]) AND o.generation = %(generation)s
  AND o.status = 'in_flight' AND o.claimed_by = %(worker_id)s
  AND o.topic = ANY(%(topics)s::text[])
RETURNING o.id, o.idempotency_key
"""
SPLIT_LEDGER = """
INSERT INTO core.event_handled AS h (handler_name, idempotency_key, outbox_id, generation)
SELECT %(handler)s, k, i, %(generation)s
FROM unnest(%(keys)b::text[], %(ids)b::bigint[]) AS u (k, i)
ORDER BY k, i
ON CONFLICT DO NOTHING
RETURNING h.handler_name, h.outbox_id
"""

START_BODY = """
    WITH done AS (
        UPDATE core.outbox AS o
        SET {done_set}
        WHERE o.id = ANY(p_ids) AND o.generation = p_generation
          AND o.status = 'in_flight' AND o.claimed_by = p_worker_id
          AND o.topic = ANY(p_topics)
        RETURNING o.id, o.topic, o.idempotency_key
    ), fresh AS (
        INSERT INTO core.event_handled AS h (handler_name, idempotency_key, outbox_id, generation)
        SELECT r.h, d.idempotency_key, d.id, p_generation
        FROM done AS d JOIN unnest(p_topics, p_handlers) AS r (t, h) ON r.t = d.topic
        {order}
        ON CONFLICT DO NOTHING
        RETURNING h.handler_name, h.outbox_id
    )
    SELECT coalesce(array_agg(d.id), '{{}}'::bigint[]), NULL::text, NULL::bigint FROM done AS d
    UNION ALL
    SELECT NULL::bigint[], f.handler_name, f.outbox_id FROM fresh AS f
"""
START_SIG = """(
    p_generation bigint, p_worker_id uuid, p_ids bigint[], p_topics text[], p_handlers text[]
) RETURNS TABLE (held bigint[], handler_name text, outbox_id bigint)"""

CLAIM_SIG = """(p_generation bigint, p_worker_id uuid, p_limit integer)
RETURNS TABLE (
    id bigint, generation bigint, topic text, payload jsonb, idempotency_key text,
    attempts integer, created_at timestamptz, trace_parent text
)"""
# core.outbox_claim_v1's statement (migration 0013) with the CTE's output and the UPDATE's
# join as parameters: by primary key (v1's, BY_ID) or by the locked versions' ctid
CLAIM_STATEMENT = """WITH c AS (
        SELECT {pick} FROM core.outbox AS o
        WHERE o.generation = p_generation AND o.status = 'pending' AND o.available_at <= now()
        ORDER BY o.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE core.outbox AS o
    SET status = 'in_flight', attempts = o.attempts + 1, claimed_at = now(),
        claimed_by = p_worker_id
    FROM c
    WHERE {join}
    RETURNING o.id, o.generation, o.topic, o.payload, o.idempotency_key, o.attempts,
              o.created_at, o.trace_parent"""
BY_ID = {"pick": "o.id", "join": "o.id = c.id"}
CLAIM_BODY = """#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    {statement};
END"""

ORDER = "ORDER BY r.h, d.idempotency_key, d.id"
DONE_SET = "status = 'done', finished_at = now(), claimed_by = NULL, last_error = NULL"
BENCH_DDL = f"""
CREATE SCHEMA IF NOT EXISTS bench;
CREATE OR REPLACE FUNCTION bench.start_keep{START_SIG}
LANGUAGE plpgsql SET enable_seqscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY {START_BODY.format(order=ORDER, done_set="status = 'done', finished_at = now()")};
END
$$;
CREATE OR REPLACE FUNCTION bench.claim_noguc{CLAIM_SIG} LANGUAGE plpgsql AS $$
{CLAIM_BODY.format(statement=CLAIM_STATEMENT.format(**BY_ID))}
$$;
CREATE OR REPLACE FUNCTION bench.claim_ctid{CLAIM_SIG} LANGUAGE plpgsql SET enable_seqscan = off AS $$
{CLAIM_BODY.format(statement=CLAIM_STATEMENT.format(pick="o.ctid AS row_version", join="o.ctid = c.row_version"))}
$$;
CREATE OR REPLACE FUNCTION bench.start_sql{START_SIG}
LANGUAGE sql SET enable_seqscan = off AS $$
{START_BODY.format(order=ORDER, done_set=DONE_SET)}
$$;
CREATE OR REPLACE FUNCTION bench.start_nosort{START_SIG}
LANGUAGE plpgsql SET enable_seqscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY {START_BODY.format(order="", done_set=DONE_SET)};
END
$$;
CREATE OR REPLACE FUNCTION bench.claim_sql{CLAIM_SIG}
LANGUAGE sql SET enable_seqscan = off AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    {CLAIM_STATEMENT.format(**BY_ID)}
$$;
"""


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def cluster_s(pm: int) -> float:
    """CPU seconds of the cluster so far: the postmaster, its reaped and live children."""
    return _server_cpu_s(pm)


WALDUMP_LINE = re.compile(r"^(\S+/\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)")


def waldump(bindir: Path, datadir: Path, start: str, end: str) -> dict[str, tuple[int, int, int]]:
    """Record type -> (count, record bytes, FPI bytes) between two LSNs."""
    proc = subprocess.run(
        [
            str(bindir / "pg_waldump"),
            "-p",
            str(datadir / "pg_wal"),
            "-s",
            start,
            "-e",
            end,
            "--stats=record",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    out, err = proc.stdout, proc.stderr
    if os.environ.get("WALDUMP_RAW"):
        with open(os.environ["WALDUMP_RAW"], "a") as f:
            f.write(f"== {start} {end}\n{out}\n{err}\n")
    res: dict[str, tuple[int, int, int]] = {}
    for line in out.splitlines():
        m = WALDUMP_LINE.match(line.strip())
        if m:
            res[m.group(1)] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    return res


def pending_entries_read(side: Any) -> int:
    """Index entries the claims have read so far in the pending rows' partial indexes
    (ours and the ceiling's): the walk over entries of rows no longer pending."""
    row = side.execute(
        "SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes "
        "WHERE indexrelname IN ('outbox_pending_id_v1', 'outbox_pending_v1', "
        "'ceil_outbox_pending')"
    ).fetchone()
    return int(row[0])


class Phase:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.server: dict[str, int] = {}

    def timed(self, key: str, fn: Any, *args: Any, **kw: Any) -> Any:
        s0 = backend_ns(self.pid)
        out = fn(*args, **kw)
        self.server[key] = self.server.get(key, 0) + backend_ns(self.pid) - s0
        return out


def ceiling_fill(side: Any, n: int) -> None:
    side.execute("TRUNCATE ceil_outbox")
    for s in range(0, n, 1000):
        side.execute(
            CEIL_FILL,
            (
                [
                    json.dumps({"t": time.time(), "k": f"order-{i:09d}"})
                    for i in range(s, min(n, s + 1000))
                ],
            ),
        )
    side.execute("ANALYZE ceil_outbox")
    side.execute("CHECKPOINT")


def ceiling_drain(conn: Any, batch: int, pid: int) -> Phase:
    ph = Phase(pid)
    while True:
        rows = ph.timed(
            "claim", lambda: conn.execute(CEIL_CLAIM, (batch,), prepare=True).fetchall()
        )
        if not rows:
            break
        ids = [r[0] for r in rows]
        ph.timed("done", conn.execute, CEIL_DONE, (ids,), prepare=True)
    return ph


def ours_fill(side: Any, n: int, gen: int, fillfactor: int) -> None:
    from spectral_core.outbox import EventIn, Publisher

    side.execute(f"ALTER TABLE core.outbox SET (fillfactor = {int(fillfactor)})")
    side.execute("TRUNCATE core.outbox, core.event_handled")
    pub = Publisher(gen)
    for s in range(0, n, 1000):
        pub.publish_many(
            side,
            [
                EventIn(topic="bench.row", payload={"t": time.time()})
                for _ in range(s, min(n, s + 1000))
            ],
        )
    side.execute("ANALYZE core.outbox, core.event_handled")
    side.execute("CHECKPOINT")


def ours_drain(
    conn: Any,
    batch: int,
    pid: int,
    gen: int,
    worker: uuid.UUID,
    claim_fn: str,
    start_fn: str,
    _ff: int,
) -> Phase:
    cs, cn = claim_fn.split(".")
    claim = CLAIM.format(schema=cs, claim=cn)
    start = ""
    if start_fn != "split":
        ss, sn = start_fn.split(".")
        start = START.format(schema=ss, start=sn)
    ph = Phase(pid)
    params = {"generation": gen, "worker_id": worker, "limit": batch}
    topics, handlers = ["bench.row"], ["bench.row.noop"]
    while True:
        rows = ph.timed("claim", lambda: conn.execute(claim, params).fetchall())
        if not rows:
            break
        ids = [r[0] for r in rows]
        ph.timed("begin", conn.execute, "BEGIN")
        sp = {
            "generation": gen,
            "worker_id": worker,
            "ids": ids,
            "topics": topics,
            "handlers": handlers,
        }
        if start_fn == "split":
            done = ph.timed("done", lambda sp=sp: conn.execute(SPLIT_DONE, sp).fetchall())
            lp = {
                "handler": handlers[0],
                "generation": gen,
                "keys": [d[1] for d in done],
                "ids": [d[0] for d in done],
            }
            out = ph.timed("ledger", lambda lp=lp: conn.execute(SPLIT_LEDGER, lp).fetchall())
            out.append(None)
        else:
            out = ph.timed("start", lambda sp=sp: conn.execute(start, sp).fetchall())
        assert len(out) == len(ids) + 1, (len(out), len(ids))
        ph.timed("commit", conn.execute, "COMMIT")
    return ph


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lanes", type=int, default=1, help="connections draining at once")
    ap.add_argument("--variants", default="", help=f"comma list of {sorted(VARIANTS)}")
    ap.add_argument("--url", default=None, help="a server of yours (waldump then skipped)")
    a = ap.parse_args()
    import psycopg

    from spectral_core.embedded import EmbeddedPostgres, find_bindir
    from spectral_core.generations import allocate_generation
    from spectral_core.migrate import run_migrations

    pg = None
    root = Path(tempfile.mkdtemp(prefix="spectral-perrow-pg-"))
    url = a.url
    if url is None:
        pg = EmbeddedPostgres(root)
        url = pg.start()
    phases = ["ceiling", "ours"] + [v for v in a.variants.split(",") if v]
    results: dict[str, list[dict[str, float]]] = {p: [] for p in phases}
    wal: dict[str, list[dict[str, tuple[int, int, int]]]] = {p: [] for p in phases}
    try:
        with psycopg.connect(url, autocommit=True) as side:
            run_migrations(side)
            side.execute(CEILING_DDL)
            side.execute(BENCH_DDL)
            gen = allocate_generation(side, f"perrow-{uuid.uuid4().hex[:6]}")
            pm = int(
                side.execute(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
                ).fetchone()[0]
            )
            pm = int(open(f"/proc/{pm}/stat").read().rsplit(")", 1)[1].split()[1])
            datadir = Path(side.execute("SHOW data_directory").fetchone()[0])
            bindir = find_bindir() if pg is not None else None
            for r in range(a.rounds):
                order = phases[r % len(phases) :] + phases[: r % len(phases)]
                for p in order:
                    opts = "-c synchronous_commit=off" if p in ("ceiling", "async_commit") else ""
                    if p == "no_inflight_idx":
                        side.execute("DROP INDEX core.outbox_in_flight_v2")
                    prep = 0 if p == "prepared" else None
                    conns = [
                        psycopg.connect(url, autocommit=True, options=opts, prepare_threshold=prep)
                        for _ in range(a.lanes)
                    ]
                    try:
                        pids = [
                            int(c.execute("SELECT pg_backend_pid()").fetchone()[0]) for c in conns
                        ]
                        if p == "ceiling":
                            ceiling_fill(side, a.n)
                        else:
                            ours_fill(side, a.n, gen, VARIANTS[p][2])
                        lsn0 = side.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[
                            0
                        ]
                        c0 = cluster_s(pm)
                        read0 = pending_entries_read(side)
                        worker = uuid.uuid4()  # one worker, its lanes (as the consumer)

                        def lane(
                            i: int,
                            p: str = p,
                            worker: uuid.UUID = worker,
                            conns: list[Any] = conns,
                            pids: list[int] = pids,
                        ) -> Phase:
                            if p == "ceiling":
                                return ceiling_drain(conns[i], a.batch, pids[i])
                            return ours_drain(conns[i], a.batch, pids[i], gen, worker, *VARIANTS[p])

                        with ThreadPoolExecutor(a.lanes) as pool:
                            lanes = list(pool.map(lane, range(a.lanes)))
                        c1 = cluster_s(pm)
                        lsn1 = side.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[
                            0
                        ]
                        # a segment switch flushes the WAL up to here, for pg_waldump (a
                        # commit that wrote nothing itself does not flush)
                        side.execute("SELECT pg_switch_wal()")
                        nbytes = int(
                            side.execute(
                                "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (lsn1, lsn0)
                            ).fetchone()[0]
                        )
                    finally:
                        for c in conns:
                            c.close()
                    time.sleep(0.3)  # the lanes' backends flush their statistics as they exit
                    read1 = pending_entries_read(side)
                    ph = Phase(0)
                    for one in lanes:
                        for k, v in one.server.items():
                            ph.server[k] = ph.server.get(k, 0) + v
                    if p == "no_inflight_idx":
                        side.execute(
                            "CREATE INDEX outbox_in_flight_v2 ON core.outbox "
                            "(generation, claimed_by, id) WHERE status = 'in_flight'"
                        )
                    row = {k: v / 1e3 / a.n for k, v in ph.server.items()}
                    row["backend"] = sum(ph.server.values()) / 1e3 / a.n
                    row["cluster"] = (c1 - c0) * 1e6 / a.n
                    row["wal_bytes"] = nbytes / a.n
                    row["pending_read"] = (read1 - read0) / a.n
                    results[p].append(row)
                    if bindir is not None:
                        wal[p].append(waldump(bindir, datadir, lsn0, lsn1))
                    print(
                        f"round {r + 1} {p}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()),
                        flush=True,
                    )
    finally:
        if pg is not None:
            pg.destroy()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ncommand: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, n {a.n}, batch {a.batch}, "
        f"lanes {a.lanes}, load {os.getloadavg()[0]:.1f}"
    )
    keys = [
        "claim",
        "done",
        "ledger",
        "begin",
        "start",
        "commit",
        "backend",
        "cluster",
        "wal_bytes",
        "pending_read",
    ]
    print("\n| per row (median of rounds) | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for p in phases:
        cells = []
        for k in keys:
            vals = [r[k] for r in results[p] if k in r]
            cells.append(f"{statistics.median(vals):.2f}" if vals else "-")
        print(f"| {p} | " + " | ".join(cells) + " |")
    print(
        "\nCPU in us per row (backend: the statements' own; cluster: every server process);"
        " wal_bytes per row; pending_read: entries the claims read in the pending indexes"
        " per row claimed"
    )
    if any(wal.values()):
        print(
            "\n| WAL record, per row (median of rounds: count / record bytes / FPI bytes) | "
            + " | ".join(phases)
            + " |"
        )
        print("|---" * (len(phases) + 1) + "|")
        types = sorted(
            {t for p in phases for d in wal[p] for t in d},
            key=lambda t: (
                -max(
                    statistics.median(
                        d.get(t, (0, 0, 0))[1] + d.get(t, (0, 0, 0))[2] for d in wal[p] or [{}]
                    )
                    for p in phases
                )
            ),
        )
        for t in types:
            cells = []
            for p in phases:
                ds = wal[p]
                c = statistics.median(d.get(t, (0, 0, 0))[0] for d in ds) / a.n
                b = statistics.median(d.get(t, (0, 0, 0))[1] for d in ds) / a.n
                f = statistics.median(d.get(t, (0, 0, 0))[2] for d in ds) / a.n
                cells.append(f"{c:.2f} / {b:.0f} / {f:.0f}")
            print(f"| {t} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
