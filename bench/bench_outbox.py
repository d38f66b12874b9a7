"""Outbox micro-benchmarks on a fresh embedded PostgreSQL 18 (default durability, fsync on).

    python bench/bench_outbox.py                      # ~4-5 min on a 2-vCPU box
    python bench/bench_outbox.py --quick              # smoke test (numbers meaningless)
    python bench/bench_outbox.py --only publish,drain --drain-n 50000 --rounds 5

Sections (``--only``):

publish   (a) one event per transaction: ``BEGIN; Publisher.publish_async; COMMIT`` vs a bare
          ``BEGIN; INSERT; COMMIT`` into a plain table with the same columns (no NOTIFY, no
          partial indexes, no FK), plus a hand-written INSERT into ``core.outbox`` without
          NOTIFY to split the overhead; (b) batches of 100: ``publish_many_async`` vs a bare
          ``INSERT ... SELECT ... FROM unnest(...)`` (and the same into ``core.outbox``).
          Variants are interleaved in small blocks inside each round (50 transactions, 5
          calls of 100), the order rotating per block, so the box's drifts (disk flush
          latency moves 2-3x within minutes) hit every variant alike; the figure is the
          median over rounds.
          ``--publish-conns K`` (default 4) repeats (a) with K producers at once.
drain     (c) N pending events drained by one consumer process (``--lanes`` x ``--batches``)
          with a no-op handler (the ledger ``core.event_handled`` row and the ``done`` update
          are still written); rate = N / (go -> every row settled: with one process the
          consumer's own count, confirmed by one count query; with several, 10 ms polls of
          the count through the partial indexes).
          The table is ANALYZEd after the fill (as the peer harness does); ``--plan-check``
          batch sizes are drained again with the statistics cleared (``--no-analyze``: all).
latency   (d) a consumer process idles on an empty queue; producers in this process publish
          single events at a steady rate; latency = the publisher's call started (its
          ``BEGIN; publish; COMMIT``, the wait a user feels) -> handler start
          (``time.monotonic`` is system-wide on Linux); also shown from the COMMIT
          acknowledgement.  With LISTEN and with ``ConsumerConfig(listen=False)`` (poll
          interval ``--poll-interval``, default 1 s); CPU per event of the consumer process
          during the steady phase.  A closing table shows every configuration run with its
          verdict against the floor (p50 <= 2 / p99 <= 5 ms at 100/s, p99 <= 5 ms at 1,000/s),
          misses included.  Beside each LISTEN rate (order alternating) runs the
          hand-written ceiling, cycle ``ceiling``: the same publisher transaction into a
          plain table whose trigger notifies, and a consumer that takes the pending rows and
          marks them done in one statement per wake-up (no committed claim before the
          handler, no ledger): what this machine allows any LISTEN-woken queue
          (``--no-ceiling`` skips it).  One producer connection per 100 events/s.
          Every run also prints the publisher's own COMMIT (sent -> ack), the cluster's WAL
          fsyncs and CPU per event.  ``--steps`` times each event's path in the consumer
          (claim sent and returned, the ``BEGIN`` and start round trips, the handler; the
          notifications, the lanes busy at each ack, the GC's collections) and prints what
          the slowest 1 % waited on (ADR 0047); ``--no-poll`` skips the polling runs.
procs     (e) drain with K consumer processes (``--procs``, default 2) x lanes 4 x batch 100.
burst     (f) a consumer idles on the outbox (``--steady-lanes`` x ``--steady-batch``, LISTEN
          on); then ``--burst-n`` events (default 20,000) are published in calls of 1,000
          and the rate is ``--burst-n`` / (first publish call -> last handler start).  On the
          ``empty`` outbox the statistics were taken while it was empty (a fresh install, or
          after retention emptied it: the plans' worst case); issue 20's floor is the empty
          rate >= 80 % of the rate with history, which the closing line reports.

(c), (d), (e) and (f) run on each ``--outbox`` state: ``empty`` and ``history`` (``--history-n``
handled rows, default 1,000,000, kept under the run).  The rows still to handle are counted
through the partial indexes (never a table scan, whose cost grows with the history).

Writes ``bench/results/outbox-<UTC>.json`` and, with matplotlib installed, the chart
``docs/perf/outbox.png`` (``--chart PATH`` to change, ``--no-chart`` to skip,
``--chart-from JSON`` to redraw from a results file).  ``--profile-consumer PREFIX`` runs each
consumer process under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import resource
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# this tree's code, not whatever spectral_core is installed: a paired run of two trees
# measures each tree (spawned consumer processes run this module's top level too)
sys.path.insert(0, str(ROOT / "src"))
TOPIC = "bench.noop"
GEN = 1
# Rows still to handle, counted through the partial indexes (one count per status, each
# predicate the index's own), on a connection with sequential scans off (``WATCH_OPTIONS``):
# the cost follows the live rows, not the table, so a watcher polling it on a large outbox
# does not slow the drain it measures.  ``check_live_plan`` proves the shape at start.
LIVE = (
    "SELECT (SELECT count(*) FROM core.outbox WHERE generation = 1 AND status = 'pending')"
    " + (SELECT count(*) FROM core.outbox WHERE generation = 1 AND status = 'in_flight')"
)
WATCH_OPTIONS = "-c enable_seqscan=off"
OUTBOX_STATES = ("empty", "history")


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def server_cpu(uri: str) -> float | None:
    """CPU seconds the whole cluster used so far: the postmaster and its live children, plus
    the children already reaped (cutime/cstime), as the peer harness's Meter counts it."""
    import psutil
    import psycopg

    try:
        with psycopg.connect(uri, autocommit=True) as conn:  # its backend's parent
            pm = psutil.Process(
                psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0]).ppid()
            )
        t = pm.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for ch in pm.children():
            try:
                c = ch.cpu_times()
                total += c.user + c.system
            except psutil.Error:  # exited meanwhile: counted once reaped (children_*)
                pass
        return total
    except (psutil.Error, psycopg.Error):  # a server on another host
        return None


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------- database set-up
def prepare(uri: str) -> None:
    import psycopg

    from spectral_core.generations import allocate_generation
    from spectral_core.migrate import run_migrations

    with psycopg.connect(uri, autocommit=True) as conn:
        run_migrations(conn)
        assert allocate_generation(conn, "bench") == GEN
        conn.execute("CREATE SCHEMA bench")
        # same columns, defaults, identity and CHECKs as core.outbox; a plain PK, nothing else
        conn.execute(
            "CREATE TABLE bench.plain (LIKE core.outbox INCLUDING DEFAULTS "
            "INCLUDING IDENTITY INCLUDING CONSTRAINTS, PRIMARY KEY (id))"
        )
        for stmt in CEILING_SCHEMA:
            conn.execute(stmt)


# (d)'s hand-written ceiling: the least any LISTEN-woken queue can do per event. The
# publisher inserts a row whose statement trigger notifies (as core.outbox's does); the
# consumer, woken, takes pending rows and marks them done in ONE statement (no claim
# committed before the handler, no ledger, no handler transaction), then "handles" them.
CEILING_SCHEMA = (
    "CREATE TABLE bench.ceiling_q (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "payload jsonb NOT NULL, status text NOT NULL DEFAULT 'pending')",
    "CREATE INDEX ON bench.ceiling_q (id) WHERE status = 'pending'",
    "CREATE FUNCTION bench.ceiling_notify() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_notify('bench_ceiling', ''); RETURN NULL; END $$",
    "CREATE TRIGGER ceiling_notify AFTER INSERT ON bench.ceiling_q "
    "FOR EACH STATEMENT EXECUTE FUNCTION bench.ceiling_notify()",
)
CEILING_LIVE = "SELECT count(*) FROM bench.ceiling_q WHERE status = 'pending'"
CEILING_INSERT = "INSERT INTO bench.ceiling_q (payload) VALUES (%s::jsonb)"
CEILING_TAKE = (
    "UPDATE bench.ceiling_q SET status = 'done' WHERE id IN (SELECT id FROM bench.ceiling_q "
    "WHERE status = 'pending' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING payload"
)


def admin(uri: str, *stmts: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        for s in stmts:
            conn.execute(s)


def reset(uri: str) -> None:
    """Empty the tables; no ANALYZE (statistics of an empty table are a choice, see
    :func:`outbox_state`)."""
    admin(
        uri, "TRUNCATE core.outbox, core.event_handled, bench.plain, bench.ceiling_q", "CHECKPOINT"
    )


_HISTORY: dict[str, int] = {}  # uri -> highest id of the handled history rows


def outbox_state(uri: str, state: str, a, *, analyze_empty: bool) -> None:
    """Put the outbox in ``state`` before a drain or a steady run.

    ``empty``: truncated; with ``analyze_empty`` also ANALYZEd while empty, the statistics a
    fresh install has after its first autovacuum, or any outbox after retention emptied it.
    ``history``: ``--history-n`` handled rows (status ``done``, same generation, each with
    its ledger row) written and VACUUM ANALYZEd once; later calls delete only what the
    previous run added and VACUUM, keeping the large table's statistics.
    """
    if state == "empty":
        _HISTORY.pop(uri, None)
        reset(uri)
        if analyze_empty:
            admin(uri, "ANALYZE core.outbox, core.event_handled", "CHECKPOINT")
        return
    top = _HISTORY.get(uri)
    if top is None:
        reset(uri)
        admin(
            uri,
            "INSERT INTO core.outbox (generation, topic, payload, idempotency_key, status, "
            "attempts, finished_at) SELECT 1, 'bench.history', '{\"s\": -2}', 'history-' || g, "
            f"'done', 1, now() FROM generate_series(1, {int(a.history_n)}) AS g",
            "INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, generation) "
            "SELECT 'bench.outbox.noop', idempotency_key, id, generation FROM core.outbox",
            "VACUUM ANALYZE core.outbox, core.event_handled",
            "CHECKPOINT",
        )
        import psycopg

        with psycopg.connect(uri, autocommit=True) as conn:
            row = conn.execute("SELECT coalesce(max(id), 0) FROM core.outbox").fetchone()
        _HISTORY[uri] = int(row[0]) if row else 0
        return
    admin(
        uri,
        f"DELETE FROM core.event_handled WHERE outbox_id > {top}",
        f"DELETE FROM core.outbox WHERE id > {top}",
        "VACUUM core.outbox, core.event_handled",
        "CHECKPOINT",
    )


def check_live_plan(uri: str) -> None:
    """Fail fast if the rows-to-handle count would scan the table instead of the partial
    indexes (a schema change that drops them, or a reshaped query)."""
    import psycopg

    with psycopg.connect(uri, autocommit=True, options=WATCH_OPTIONS) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + LIVE).fetchall())
    if "Seq Scan" in plan:
        raise SystemExit(f"the LIVE count scans core.outbox:\n{plan}")


async def aconnect(uri: str):
    import psycopg

    from spectral_core.db.pools import connect_kwargs

    # the library's own connection options: autocommit, prepare_threshold=1
    return await psycopg.AsyncConnection.connect(uri, **connect_kwargs())


# ------------------------------------------------------------------------- (a)/(b) publish
BARE_ONE = (
    "INSERT INTO bench.plain (generation, topic, payload, idempotency_key) "
    "VALUES (%(generation)s, %(topic)s, %(payload)s::jsonb, %(key)s)"
)
HAND_ONE = (
    "INSERT INTO core.outbox (generation, topic, payload, idempotency_key) "
    "VALUES (%(generation)s, %(topic)s, %(payload)s::jsonb, %(key)s)"
)
# arrays in binary, as the library sends them (psycopg's text array dumper costs 2-3 ms of
# client CPU per 100 rows): the fastest hand-written batched insert, not a strawman
BARE_MANY = (
    "INSERT INTO bench.plain (generation, topic, payload, idempotency_key) "
    "SELECT %(generation)s, t, p::jsonb, k "
    "FROM unnest(%(topics)b::text[], %(payloads)b::text[], %(keys)b::text[]) AS u (t, p, k)"
)
HAND_MANY = BARE_MANY.replace("bench.plain", "core.outbox")


def _enc(doc: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(doc)


async def _interleaved(
    run_block, variants: list[str], blocks: int, offset: int
) -> dict[str, float]:
    """Run ``blocks`` blocks of every variant, interleaved (variant order rotates per block), so
    a drift of the shared box (disk flush latency moves by 2-3x within minutes) hits every
    variant alike; return items/s per variant over its own blocks' time."""
    spent = dict.fromkeys(variants, 0.0)
    items = dict.fromkeys(variants, 0)
    for b in range(blocks):
        k = (b + offset) % len(variants)
        for v in variants[k:] + variants[:k]:
            t0 = time.perf_counter()
            items[v] += await run_block(v)
            spent[v] += time.perf_counter() - t0
    return {v: items[v] / spent[v] for v in variants}


async def _single(conn, variant: str, n: int) -> float:
    from spectral_core.outbox import Publisher

    pub = Publisher(GEN)
    t0 = time.perf_counter()
    if variant == "publish":
        for i in range(n):
            async with conn.transaction():
                await pub.publish_async(conn, TOPIC, {"i": i})
    else:
        sql = BARE_ONE if variant == "bare" else HAND_ONE
        for i in range(n):
            async with conn.transaction():
                # the caller still builds a payload and a key, with the cheapest tools
                # (msgspec, os.urandom: what publish uses), so only the library's own work and
                # the table differ
                await conn.execute(
                    sql,
                    {
                        "generation": GEN,
                        "topic": TOPIC,
                        "payload": _enc({"i": i}).decode(),
                        "key": os.urandom(16).hex(),
                    },
                )
    return n / (time.perf_counter() - t0)


async def _batched(conn, variant: str, calls: int, size: int) -> float:
    from spectral_core.outbox import EventIn, Publisher

    pub = Publisher(GEN)
    t0 = time.perf_counter()
    if variant == "publish":
        for c in range(calls):
            await pub.publish_many_async(
                conn, [EventIn(topic=TOPIC, payload={"i": c * size + j}) for j in range(size)]
            )
    else:
        sql = BARE_MANY if variant == "bare" else HAND_MANY
        for c in range(calls):
            await conn.execute(
                sql,
                {
                    "generation": GEN,
                    "topics": [TOPIC] * size,
                    "payloads": [_enc({"i": c * size + j}).decode() for j in range(size)],
                    "keys": [os.urandom(16).hex() for _ in range(size)],
                },
            )
    return calls * size / (time.perf_counter() - t0)


async def _count(coro, n: int) -> int:
    await coro
    return n


def bench_publish(uri: str, a) -> dict[str, Any]:
    variants = ["bare", "hand", "publish"]
    single: dict[str, list[float]] = {v: [] for v in variants}
    batched: dict[str, list[float]] = {v: [] for v in variants}

    async def run() -> None:
        conn = await aconnect(uri)
        try:
            for v in variants:  # warm-up: prepare statements, fill caches
                await _single(conn, v, 20)
                await _batched(conn, v, 3, 100)
            for r in range(a.rounds):
                block = 50  # transactions per variant per block
                rates = await _interleaved(
                    lambda v, block=block: _count(_single(conn, v, block), block),
                    variants,
                    max(1, a.single_n // block),
                    r,
                )
                for v in variants:
                    single[v].append(rates[v])
                calls = 5  # calls of 100 per variant per block
                rates = await _interleaved(
                    lambda v, calls=calls: _count(_batched(conn, v, calls, 100), calls * 100),
                    variants,
                    max(1, a.batch_calls // calls),
                    r,
                )
                for v in variants:
                    batched[v].append(rates[v])
                reset(uri)
        finally:
            await conn.close()

    conc: dict[str, list[float]] = {v: [] for v in variants}

    async def run_concurrent(k: int) -> None:
        # k producers at once, one transaction per event each: NOTIFY serialises commits
        conns = [await aconnect(uri) for _ in range(k)]
        try:
            for c in conns:
                for v in variants:
                    await _single(c, v, 5)
            block = 25  # transactions per producer per variant per block
            for r in range(a.rounds):

                async def run_block(v: str) -> int:
                    await asyncio.gather(*(_single(c, v, block) for c in conns))
                    return k * block

                rates = await _interleaved(
                    run_block, variants, max(1, a.single_n // (k * block)), r
                )
                for v in variants:
                    conc[v].append(rates[v])
                reset(uri)
        finally:
            for c in conns:
                await c.close()

    reset(uri)
    asyncio.run(run())
    if a.publish_conns > 1:
        asyncio.run(run_concurrent(a.publish_conns))
    out: dict[str, Any] = {
        "single_n": a.single_n,
        "batch_calls": a.batch_calls,
        "rounds": a.rounds,
        "publish_conns": a.publish_conns,
    }
    groups = [("single", single), ("batch100", batched)]
    if a.publish_conns > 1:
        groups.append((f"single_c{a.publish_conns}", conc))
    for name, d in groups:
        med = {v: statistics.median(xs) for v, xs in d.items()}
        out[name] = {
            "median_per_s": med,
            "rounds_per_s": d,
            "publish_vs_bare": med["publish"] / med["bare"],
            "hand_outbox_vs_bare": med["hand"] / med["bare"],
        }
    s, b = out["single"], out["batch100"]
    say(
        f"(a) single txn   bare {s['median_per_s']['bare']:8,.0f}/s   outbox by hand (no NOTIFY) "
        f"{s['median_per_s']['hand']:8,.0f}/s   publish_async {s['median_per_s']['publish']:8,.0f}/s"
        f"   -> publish = {s['publish_vs_bare']:.1%} of bare ({1 / s['publish_vs_bare'] - 1:+.1%} time/event)"
    )
    say(
        f"(b) batch of 100 bare {b['median_per_s']['bare']:8,.0f}/s   outbox by hand (no NOTIFY) "
        f"{b['median_per_s']['hand']:8,.0f}/s   publish_many   {b['median_per_s']['publish']:8,.0f}/s"
        f"   -> publish_many = {b['publish_vs_bare']:.1%} of bare"
    )
    if a.publish_conns > 1:
        c = out[f"single_c{a.publish_conns}"]
        say(
            f"(a) {a.publish_conns} producers, single txn   bare {c['median_per_s']['bare']:8,.0f}/s   outbox by hand "
            f"(no NOTIFY) {c['median_per_s']['hand']:8,.0f}/s   publish_async {c['median_per_s']['publish']:8,.0f}/s"
            f"   -> publish = {c['publish_vs_bare']:.1%} of bare"
        )
    for name, _ in groups:
        say(
            f"    {name} rounds: "
            + "  ".join(
                f"{v}=" + ",".join(f"{x:,.0f}" for x in out[name]["rounds_per_s"][v])
                for v in variants
            )
        )
    return out


# ------------------------------------------------------------------------- consumer process
def _worker(uri: str, cfg: dict[str, Any], go, stop, out) -> None:
    """Spawned child: runs the real Consumer; reports handler timestamps and its CPU."""
    from spectral_core.logging import configure_logging

    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - production logging, to /dev/null
    configure_logging(fmt="json", level=cfg["log_level"])
    try:
        if cfg.get("profile"):  # --profile-consumer: cProfile the whole consumer process
            import cProfile

            prof = cProfile.Profile()
            prof.runcall(_runner(cfg), _worker_async(uri, cfg, go, stop, out))
            prof.dump_stats(f"{cfg['profile']}.{cfg['mode']}.{os.getpid()}.prof")
        else:
            _runner(cfg)(_worker_async(uri, cfg, go, stop, out))
    except BaseException as exc:  # never leave the parent waiting
        import traceback

        out.put(("error", traceback.format_exc()))
        raise exc


def _runner(cfg: dict[str, Any]):
    """The consumer's event loop: as spectral-workers picks it (``--loop auto``: uvloop when
    installed), or forced."""
    from spectral_core.boot import event_loop_options
    from spectral_core.settings import Settings

    opts = event_loop_options(Settings(event_loop=cfg.get("loop", "auto")))
    if opts.get("use_uvloop"):
        import uvloop

        return uvloop.run
    return asyncio.run


async def _ceiling_async(uri: str, cfg: dict[str, Any], go, stop, out) -> None:
    """(d)'s hand-written ceiling consumer: LISTEN, and on each notification take what is
    pending in one statement until nothing is left (see :data:`CEILING_SCHEMA`)."""
    import psycopg

    seen: list[tuple[int, float]] = []
    listen = await psycopg.AsyncConnection.connect(uri, autocommit=True)
    work = await psycopg.AsyncConnection.connect(uri, autocommit=True)
    await listen.execute("LISTEN bench_ceiling")
    handled = 0

    async def consume() -> None:
        nonlocal handled
        async for _ in listen.notifies():
            while True:
                cur = await work.execute(CEILING_TAKE, (cfg["batch"],))
                rows = await cur.fetchall()
                t = time.monotonic()
                for (p,) in rows:
                    seen.append((p.get("s", -1), t))
                handled += len(rows)
                if not rows:
                    break

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    out.put(("ready", None))
    await asyncio.to_thread(go.wait)
    cpu0 = cpu_self()
    await asyncio.to_thread(stop.wait)
    cpu = cpu_self() - cpu0
    out.put(("cpu", cpu))
    task.cancel()
    await listen.close()
    await work.close()
    out.put(("done", {"seen": seen, "cpu": cpu, "handled": handled}))


async def _worker_async(uri: str, cfg: dict[str, Any], go, stop, out) -> None:
    import psycopg

    if cfg["mode"] == "ceiling":
        return await _ceiling_async(uri, cfg, go, stop, out)

    from spectral_core.db.pools import open_pools
    from spectral_core.outbox import Consumer, ConsumerConfig, HandlerRegistry
    from spectral_core.settings import Settings

    seen: list[tuple[int, float]] = []
    registry = HandlerRegistry()

    async def noop(event, conn) -> None:
        seen.append((event.payload.get("s", -1), time.monotonic()))

    registry.register("bench.outbox.noop", TOPIC, noop)
    lanes = cfg["lanes"]
    settings = Settings(
        database_url=uri, generation=GEN, database_pool_min=lanes, database_pool_max=lanes + 2
    )
    import dataclasses

    kw: dict[str, Any] = {}
    if "fused_cycle" in {f.name for f in dataclasses.fields(ConsumerConfig)}:
        kw["fused_cycle"] = cfg.get("fused", True)
    config = ConsumerConfig(
        batch_size=cfg["batch"],
        lanes=lanes,
        listen=cfg["listen"],
        poll_interval_s=cfg["poll"],
        **kw,
    )
    async with open_pools(settings) as db:
        consumer = Consumer(
            db, generation=GEN, worker_id=uuid.uuid4(), registry=registry, config=config
        )
        steps = _trace_steps(consumer) if cfg.get("steps") else None
        if _freezes_heap(cfg.get("gc_freeze", "auto")):
            from spectral_core.boot import freeze_startup_heap

            freeze_startup_heap()  # as spectral-workers does once booted (ADR 0047)
        watch = await psycopg.AsyncConnection.connect(uri, autocommit=True, options=WATCH_OPTIONS)
        cpu0 = cpu_self()

        async def drain_watcher() -> None:
            # with one process, wait in-process for the backlog counted at go to be handled,
            # then confirm in the database (10 ms polls through the partial indexes)
            backlog = (await (await watch.execute(LIVE)).fetchone())[0]
            while cfg["procs"] == 1 and consumer.handled < backlog:
                await asyncio.sleep(0.002)
            while True:
                if (await (await watch.execute(LIVE)).fetchone())[0] == 0:
                    out.put(("settled", time.monotonic()))
                    consumer.stop()
                    return
                await asyncio.sleep(0.01)

        async def steady_control() -> None:
            await consumer.wait_listening() if cfg["listen"] else await asyncio.sleep(0.5)
            await asyncio.sleep(0.3)
            out.put(("ready", None))
            await asyncio.to_thread(go.wait)
            nonlocal cpu0
            cpu0 = cpu_self()
            await asyncio.to_thread(stop.wait)
            out.put(("cpu", cpu_self() - cpu0))
            consumer.stop()

        if cfg["mode"] == "drain":
            out.put(("ready", None))
            await asyncio.to_thread(go.wait)
            cpu0 = cpu_self()
            side = asyncio.create_task(drain_watcher())
        else:
            side = asyncio.create_task(steady_control())
        try:
            await consumer.run()
        finally:
            side.cancel()
            await watch.close()
        cpu = cpu_self() - cpu0
    done: dict[str, Any] = {"seen": seen, "cpu": cpu, "handled": consumer.handled}
    if steps is not None:
        done["steps"] = steps
    out.put(("done", done))


def _freezes_heap(mode: str) -> bool:
    """``--gc-freeze``: ``auto`` does what this tree's ``spectral-workers`` does (it imports
    ``freeze_startup_heap`` when it calls it once booted)."""
    if mode != "auto":
        return mode == "on"
    import spectral_workers.main

    return hasattr(spectral_workers.main, "freeze_startup_heap")


def _trace_steps(consumer) -> dict[str, Any]:
    """``--steps``: time each step of the consumer's path, in the consumer process only
    (the instance's methods wrapped here; production code untouched).  Per claim: sent and
    returned, with the events' ``s``; per batch: the start statement returned and the
    COMMIT acknowledged; every notification the listener passes on, with the number of
    idle lanes then; every collection of the cyclic GC, with its duration."""
    import gc

    tr: dict[str, Any] = {"claims": [], "starts": [], "ends": [], "wakes": [], "gc": []}
    processor, ids_s = consumer.processor, {}
    process = processor.process
    # the listener's per-notification call: _notified since ADR 0047, _wake_one before
    notify_name = "_notified" if hasattr(consumer, "_notified") else "_wake_one"
    on_notify = getattr(consumer, notify_name)

    class Traced(type(consumer.claimer)):  # Claimer has __slots__: wrap by subclassing
        async def claim(self, conn, limit):
            t0 = time.monotonic()
            events = await super().claim(conn, limit)
            t1 = time.monotonic()
            ss = [e.payload.get("s", -1) for e in events]
            ids_s.update((e.id, x) for e, x in zip(events, ss, strict=True))
            tr["claims"].append((t0, t1, ss, id(conn)))
            return events

        async def start_batch(self, conn, ids, routes):
            t0 = time.monotonic()
            res = await super().start_batch(conn, ids, routes)
            tr["starts"].append((t0, time.monotonic(), [ids_s.get(i, -1) for i in ids]))
            return res

    async def t_process(conn, events):
        await process(conn, events)
        tr["ends"].append((time.monotonic(), [e.payload.get("s", -1) for e in events]))

    def t_notified():
        tr["wakes"].append((time.monotonic(), len(consumer._idle)))
        on_notify()

    gc_t0 = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_t0[0] = time.monotonic()
        else:
            tr["gc"].append((gc_t0[0], time.monotonic() - gc_t0[0], info["generation"]))

    traced = Traced(consumer.claimer.generation, consumer.claimer.worker_id)
    consumer.claimer = processor.claimer = traced
    processor.process = t_process
    setattr(consumer, notify_name, t_notified)
    gc.callbacks.append(on_gc)
    return tr


class Workers:
    def __init__(self, uri: str, cfg: dict[str, Any], procs: int = 1):
        ctx = mp.get_context("spawn")
        self.go, self.stop, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.procs = [
            ctx.Process(target=_worker, args=(uri, cfg, self.go, self.stop, self.out), daemon=True)
            for _ in range(procs)
        ]
        self.msgs: list[tuple[str, Any]] = []

    def _get(self, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for i, (k, v) in enumerate(self.msgs):
                if k == kind:
                    del self.msgs[i]
                    return v
            try:
                k, v = self.out.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue_mod.Empty:
                raise TimeoutError(f"no {kind!r} from the consumer within {timeout}s") from None
            if k == "error":
                raise RuntimeError(f"consumer process failed:\n{v}")
            self.msgs.append((k, v))

    def start(self) -> None:
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self._get("ready", 60)

    def get_all(self, kind: str, timeout: float) -> list[Any]:
        return [self._get(kind, timeout) for _ in self.procs]

    def join(self) -> None:
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()


# ------------------------------------------------------------------------- (c)/(e) drain
async def _fill(uri: str, n: int) -> None:
    from spectral_core.outbox import EventIn, Publisher

    pub = Publisher(GEN)
    conn = await aconnect(uri)
    try:
        done = 0
        while done < n:
            k = min(1000, n - done)
            await pub.publish_many_async(conn, [EventIn(topic=TOPIC, payload={"s": -1})] * k)
            done += k
    finally:
        await conn.close()


def drain_once(
    uri: str,
    n: int,
    lanes: int,
    batch: int,
    procs: int,
    a,
    analyze: bool | None = None,
    cycle: str = "one",
    state: str = "empty",
) -> dict[str, Any]:
    analyze = a.analyze if analyze is None else analyze
    outbox_state(uri, state, a, analyze_empty=False)
    asyncio.run(_fill(uri, n))
    # ANALYZE as the peer harness does (stats then say "every row is pending"); --no-analyze
    # leaves the freshly truncated table without statistics (the planner's defaults)
    if analyze:
        admin(uri, "ANALYZE core.outbox", "CHECKPOINT")
    else:  # TRUNCATE keeps old statistics: clear them (PostgreSQL 18)
        admin(
            uri,
            "SELECT pg_clear_relation_stats('core', 'outbox')",
            "SELECT pg_clear_attribute_stats('core', 'outbox', attname, false) FROM pg_attribute "
            "WHERE attrelid = 'core.outbox'::regclass AND attnum > 0 AND NOT attisdropped",
            "CHECKPOINT",
        )
    w = Workers(
        uri,
        {
            "mode": "drain",
            "procs": procs,
            "lanes": lanes,
            "batch": batch,
            "listen": True,
            "poll": a.poll_interval,
            "log_level": a.log_level,
            "loop": a.loop,
            "profile": a.profile_consumer,
            "fused": cycle != "general",
        },
        procs,
    )
    try:
        w.start()
        s0 = server_cpu(uri)
        t_go = time.monotonic()
        w.go.set()
        settled = min(w.get_all("settled", a.timeout))
        done = w.get_all("done", 30)
    finally:
        w.join()
    # the consumer's backends exit with its pool: give the postmaster a moment to reap them
    # so their CPU moves to its children totals (it includes the few ms of shutting down)
    time.sleep(0.3)
    s1 = server_cpu(uri)
    handled = sum(d["handled"] for d in done)
    last = max(t for d in done for _, t in d["seen"])
    cpu = sum(d["cpu"] for d in done)
    res = {
        "n": n,
        "lanes": lanes,
        "batch": batch,
        "procs": procs,
        "handled": handled,
        "analyzed": analyze,
        "cycle": cycle,
        "outbox": state,
        "history_rows": a.history_n if state == "history" else 0,
        "rate": n / (settled - t_go),
        "rate_to_last_handler": n / (last - t_go),
        "consumer_cpu_us_per_event": cpu / n * 1e6,
        "server_cpu_us_per_event": None if s0 is None or s1 is None else (s1 - s0) / n * 1e6,
    }
    if handled != n:
        res["warning"] = f"handled {handled} != {n}"
    return res


def _us(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}"


def _where(r: dict[str, Any]) -> str:
    return (
        "empty outbox" if r.get("outbox", "empty") == "empty" else f"+{r['history_rows']:,} handled"
    )


def bench_drain(uri: str, a) -> list[dict[str, Any]]:
    rows = []
    for state in a.outboxes:
        for lanes in a.lanes:
            for batch in a.batches:
                for cycle in a.cycles:
                    r = drain_once(uri, a.drain_n, lanes, batch, 1, a, cycle=cycle, state=state)
                    rows.append(r)
                    say(
                        f"(c) drain n={a.drain_n:,} {_where(r)} lanes={lanes} batch={batch:<4} {cycle:7s} {r['rate']:9,.0f} ev/s settled "
                        f"({r['rate_to_last_handler']:,.0f} to last handler)  consumer CPU "
                        f"{r['consumer_cpu_us_per_event']:.0f} us/ev  server CPU {_us(r['server_cpu_us_per_event'])} "
                        f"us/ev {r.get('warning', '')}"
                    )
    if a.analyze and a.plan_check:
        # the same drains on a table without statistics: shows how much the claim plan chosen
        # under "every row is pending" statistics costs (see docs/performance.md)
        for batch in a.plan_check:
            r = drain_once(uri, a.drain_n, 4, batch, 1, a, analyze=False)
            r["plan_check"] = True
            rows.append(r)
            say(
                f"(c) drain n={a.drain_n:,} lanes=4 batch={batch:<4} NOT ANALYZED {r['rate']:9,.0f} ev/s "
                f"settled  consumer CPU {r['consumer_cpu_us_per_event']:.0f} us/ev {r.get('warning', '')}"
            )
    return rows


def bench_procs(uri: str, a) -> list[dict[str, Any]]:
    rows = []
    for state, procs in ((st, k) for st in a.outboxes for k in sorted({1, a.procs})):
        r = drain_once(uri, a.drain_n, 4, 100, procs, a, state=state)
        rows.append(r)
        say(
            f"(e) drain n={a.drain_n:,} {_where(r)} procs={procs} x lanes 4 x batch 100 {r['rate']:9,.0f} ev/s "
            f"settled  consumer CPU {r['consumer_cpu_us_per_event']:.0f} us/ev {r.get('warning', '')}"
        )
    return rows


# ------------------------------------------------------------------------- (f) burst
def burst_once(uri: str, n: int, a, state: str) -> dict[str, Any]:
    """An idle consumer on an outbox in ``state`` given ``n`` events at once."""
    import psycopg

    outbox_state(uri, state, a, analyze_empty=True)
    w = Workers(
        uri,
        {
            "mode": "steady",
            "lanes": a.steady_lanes,
            "batch": a.steady_batch,
            "listen": True,
            "poll": a.poll_interval,
            "log_level": a.log_level,
            "loop": a.loop,
            "fused": True,
            "profile": a.profile_consumer,
        },
    )
    try:
        w.start()
        w.go.set()
        time.sleep(0.5)  # idle: the consumer waits on LISTEN
        s0 = server_cpu(uri)
        t0 = time.monotonic()
        asyncio.run(_fill(uri, n))
        t_filled = time.monotonic()
        with psycopg.connect(uri, autocommit=True, options=WATCH_OPTIONS) as watch:
            deadline = time.monotonic() + a.timeout
            while watch.execute(LIVE).fetchone()[0] > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"burst of {n} not handled within {a.timeout} s")
                time.sleep(0.01)
        s1 = server_cpu(uri)
        w.stop.set()
        cpu = w.get_all("cpu", 30)[0]
        done = w.get_all("done", 30)[0]
    finally:
        w.join()
    last = max(t for s, t in done["seen"] if s == -1)
    res = {
        "outbox": state,
        "history_rows": a.history_n if state == "history" else 0,
        "n": n,
        "handled": sum(1 for s, _ in done["seen"] if s == -1),
        "fill_s": t_filled - t0,
        "rate": n / (last - t0),
        "consumer_cpu_us_per_event": cpu / n * 1e6,
        "server_cpu_us_per_event": None if s0 is None or s1 is None else (s1 - s0) / n * 1e6,
    }
    if res["handled"] != n:
        res["warning"] = f"handled {res['handled']} != {n}"
    return res


def bench_burst(uri: str, a) -> list[dict[str, Any]]:
    rows = []
    for _ in range(a.burst_rounds):
        for state in a.outboxes:
            r = burst_once(uri, a.burst_n, a, state)
            rows.append(r)
            say(
                f"(f) burst n={a.burst_n:,} {_where(r)} {r['rate']:9,.0f} ev/s (publish took "
                f"{r['fill_s']:.2f} s)  consumer CPU {r['consumer_cpu_us_per_event']:.0f} us/ev  "
                f"server CPU {_us(r['server_cpu_us_per_event'])} us/ev {r.get('warning', '')}"
            )
        a.outboxes.reverse()  # the order rotates per round
    by = {st: [r["rate"] for r in rows if r["outbox"] == st] for st in OUTBOX_STATES}
    if by["empty"] and by["history"]:
        ratios = [e / h for e, h in zip(by["empty"], by["history"], strict=False)]
        med = statistics.median(ratios)
        verdict = "meets" if med >= 0.8 else "MISS"
        say(
            f"(f) burst empty/history per round {', '.join(f'{x:.2f}' for x in ratios)}: "
            f"median {med:.2f} (floor 0.80: {verdict})"
        )
    return rows


# ------------------------------------------------------------------------- (d) latency
async def _produce(uri: str, rate: float, seconds: float, producers: int, ceiling: bool = False):
    import psycopg

    from spectral_core.outbox import Publisher

    pub = Publisher(GEN)
    conns = [await aconnect(uri) for _ in range(producers)]
    watch = await psycopg.AsyncConnection.connect(uri, autocommit=True, options=WATCH_OPTIONS)
    # per event: the publisher's call started, COMMIT sent, COMMIT acknowledged
    commits: dict[int, tuple[float, float, float]] = {}
    n = int(rate * seconds)
    interval = producers / rate

    async def one(k: int, conn) -> None:
        t0 = time.monotonic() + k / rate
        for j, s in enumerate(range(k, n, producers)):
            delay = t0 + j * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t_call = time.monotonic()
            async with conn.transaction():
                if ceiling:
                    await conn.execute(CEILING_INSERT, (f'{{"s": {s}}}',))
                else:
                    await pub.publish_async(conn, TOPIC, {"s": s})
                t_commit = time.monotonic()  # COMMIT is sent when the block exits
            commits[s] = (t_call, t_commit, time.monotonic())

    t_start = time.monotonic()
    try:
        await asyncio.gather(*(one(k, c) for k, c in enumerate(conns)))
        wall = time.monotonic() - t_start
        # wait until every event is settled (bounded)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cur = await watch.execute(CEILING_LIVE if ceiling else LIVE)
            if (await cur.fetchone())[0] == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        for c in conns:
            await c.close()
        await watch.close()
    return commits, n / wall


def latency_once(
    uri: str,
    rate: float,
    seconds: float,
    listen: bool,
    a,
    cycle: str = "one",
    state: str = "empty",
) -> dict[str, Any]:
    # empty: ANALYZEd while empty, the state of a fresh install or of an outbox retention
    # emptied (the plans' worst case); history: a large handled table's statistics
    outbox_state(uri, state, a, analyze_empty=True)
    w = Workers(
        uri,
        {
            "mode": "ceiling" if cycle == "ceiling" else "steady",
            "lanes": a.steady_lanes,
            "batch": a.steady_batch,
            "listen": listen,
            "poll": a.poll_interval,
            "log_level": a.log_level,
            "loop": a.loop,
            "fused": cycle != "general",
            "profile": a.profile_consumer,
            "steps": a.steps,
            "gc_freeze": a.gc_freeze,
        },
    )
    # one producer connection per 100 events/s: each waits for its own durable COMMIT
    # (about 1.5-2 ms here), so four at 1,000/s could not offer the rate
    producers = max(1, int(rate // 100))
    fsyncs0, server0 = wal_fsyncs(uri), server_cpu(uri)
    try:
        w.start()
        w.go.set()  # the consumer's CPU clock starts here
        time.sleep(0.2)
        commits, offered = asyncio.run(
            _produce(uri, rate, seconds, producers, ceiling=cycle == "ceiling")
        )
        time.sleep(0.3)
        w.stop.set()
        cpu = w.get_all("cpu", 30)[0]
        done = w.get_all("done", 30)[0]
    finally:
        w.join()
    fsyncs1, server1 = wal_fsyncs(uri), server_cpu(uri)
    seen = {s: t for s, t in done["seen"] if s >= 0}
    from_call = [seen[s] - commits[s][0] for s in commits if s in seen]
    from_commit_sent = [seen[s] - commits[s][1] for s in commits if s in seen]
    from_commit_ack = [seen[s] - commits[s][2] for s in commits if s in seen]
    res = {
        "outbox": state,
        "history_rows": a.history_n if state == "history" else 0,
        "rate": rate,
        "offered": offered,
        "seconds": seconds,
        "listen": listen,
        "cycle": cycle,
        "producers": producers,
        "n": len(commits),
        "handled": len(seen),
        "consumer_cpu_s": cpu,
        "consumer_cpu_us_per_event": cpu / max(1, len(seen)) * 1e6,
    }
    for name, xs in (
        ("from_call", from_call),
        ("from_commit", from_commit_sent),
        ("from_commit_ack", from_commit_ack),
    ):
        for p in (50, 90, 99):
            v = pct(xs, p)
            res[f"{name}_p{p}_ms"] = None if v is None else v * 1000
        res[f"{name}_max_ms"] = max(xs) * 1000 if xs else None
    # the publisher's own COMMIT (sent -> acknowledged): it waits for the WAL flush, and a
    # notifying commit holds PostgreSQL's notify lock while it does
    pub_commit = [c[2] - c[1] for c in commits.values()]
    res["publisher_commit_p50_ms"] = (pct(pub_commit, 50) or 0) * 1000
    res["publisher_commit_p99_ms"] = (pct(pub_commit, 99) or 0) * 1000
    if fsyncs0 is not None and fsyncs1 is not None:
        # WAL flushes of the whole cluster over the run (publishers, consumer, start-up)
        res["wal_fsyncs_per_event"] = (fsyncs1 - fsyncs0) / max(1, len(commits))
    if server0 is not None and server1 is not None:
        # the cluster's CPU over the run (the consumer's start-up and wind-down included)
        res["server_cpu_us_per_event"] = (server1 - server0) / max(1, len(commits)) * 1e6
    if "steps" in done:
        res["steps"] = step_attribution(done["steps"], commits, seen, a.steady_lanes)
    return res


def wal_fsyncs(uri: str) -> int | None:
    """The cluster's WAL fsyncs so far (``pg_stat_io``, PostgreSQL 16+), or None."""
    import psycopg

    try:
        with psycopg.connect(uri, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(fsyncs), 0)::bigint FROM pg_stat_io WHERE object = 'wal'"
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


STEPS = (
    ("ack_to_claim_sent", "COMMIT ack -> claim sent"),
    ("claim", "claim round trip (core.outbox_claim_v1)"),
    ("begin", "claim returned -> start sent (BEGIN round trip)"),
    ("start", "start round trip (core.outbox_start_v2)"),
    ("to_handler", "start returned -> handler start"),
    ("from_ack", "total: COMMIT ack -> handler start"),
)


def step_attribution(
    tr: dict[str, Any],
    commits: dict[int, tuple[float, float, float]],
    seen: dict[int, float],
    lanes: int,
) -> dict[str, Any]:
    """``--steps``: each event's path split at the consumer's steps (see
    :func:`_trace_steps`), p50/p99 per step, and what the slowest 1 % waited on."""
    import bisect

    claim_of: dict[int, tuple[float, float]] = {}
    for t0, t1, ss, _ in tr["claims"]:
        for x in ss:
            claim_of[x] = (t0, t1)
    start_of = {x: (t0, t1) for t0, t1, ss in tr["starts"] for x in ss}
    # a lane is busy from its claim sent to its batch settled (or the empty claim returned)
    ends = sorted(tr["ends"])
    busy: list[tuple[float, float]] = []
    for t0, t1, ss, _ in tr["claims"]:
        if not ss:
            busy.append((t0, t1))
            continue
        i = bisect.bisect_left(ends, (t1,))
        end = next((t for t, es in ends[i:] if es and es[0] == ss[0]), t1)
        busy.append((t0, end))
    wakes = sorted(tr["wakes"])
    wake_t = [w[0] for w in wakes]
    # the collections of the steady phase only (not start-up's, nor freeze_startup_heap's)
    first = min((c[0] for c in commits.values()), default=0.0)
    last = max(seen.values(), default=0.0)
    gcs = [g for g in tr["gc"] if first <= g[0] <= last]
    per: dict[str, list[float]] = {k: [] for k, _ in STEPS}
    rows: list[dict[str, float]] = []
    for x, t_h in seen.items():
        if x not in commits or x not in claim_of or x not in start_of:
            continue
        ack = commits[x][2]
        c0, c1 = claim_of[x]
        s0, s1 = start_of[x]
        r = {
            "ack_to_claim_sent": c0 - ack,
            "claim": c1 - c0,
            "begin": s0 - c1,
            "start": s1 - s0,
            "to_handler": t_h - s1,
            "from_ack": t_h - ack,
            "busy_at_ack": sum(1 for b0, b1 in busy if b0 <= ack < b1),
            "gc_ms": sum(d for g0, d, _ in gcs if g0 < t_h and g0 + d > commits[x][0]) * 1000,
        }
        # the wake-up that preceded the claim (the listener's or a lane's), if any
        k = bisect.bisect_right(wake_t, c0) - 1
        r["wake_to_claim"] = c0 - wake_t[k] if k >= 0 and wake_t[k] >= ack - 0.05 else float("nan")
        rows.append(r)
        for key, _ in STEPS:
            per[key].append(r[key])
    out: dict[str, Any] = {"events": len(rows)}
    for key, label in STEPS:
        out[key] = {
            "label": label,
            "p50_ms": (pct(per[key], 50) or 0) * 1000,
            "p99_ms": (pct(per[key], 99) or 0) * 1000,
        }
    cut = pct(per["from_ack"], 99) or 0
    tail = [r for r in rows if r["from_ack"] >= cut]
    out["tail"] = {
        "n": len(tail),
        "from_ack_ms_at_least": cut * 1000,
        "mean_ms": {k: statistics.fmean(r[k] for r in tail) * 1000 for k, _ in STEPS}
        if tail
        else {},
        "all_lanes_busy_at_ack": sum(1 for r in tail if r["busy_at_ack"] >= lanes),
        "with_gc": sum(1 for r in tail if r["gc_ms"] >= 5),
        "gc_ms_mean": statistics.fmean(r["gc_ms"] for r in tail) if tail else 0.0,
    }
    out["all_lanes_busy_at_ack"] = sum(1 for r in rows if r["busy_at_ack"] >= lanes)
    out["claims"] = len(tr["claims"])
    out["empty_claims"] = sum(1 for c in tr["claims"] if not c[2])
    sizes = [len(c[2]) for c in tr["claims"] if c[2]]
    out["batch_p50"] = pct(sizes, 50)
    out["batch_max"] = max(sizes) if sizes else None
    out["wakes"] = len(wakes)
    out["wakes_no_idle_lane"] = sum(1 for _, idle in wakes if idle == 0)
    out["gc"] = {
        "collections": len(gcs),
        "by_generation": {g: sum(1 for *_, gg in gcs if gg == g) for g in (0, 1, 2)},
        "max_ms_by_generation": {
            g: round(max((d for _, d, gg in gcs if gg == g), default=0) * 1000, 2)
            for g in (0, 1, 2)
        },
        "total_ms": sum(d for _, d, _ in gcs) * 1000,
    }
    # per step (and per-claim wake -> claim sent), p50/p99
    wk = [r["wake_to_claim"] for r in rows if r["wake_to_claim"] == r["wake_to_claim"]]
    out["wake_to_claim"] = {
        "p50_ms": (pct(wk, 50) or 0) * 1000,
        "p99_ms": (pct(wk, 99) or 0) * 1000,
    }
    return out


def step_lines(r: dict[str, Any]) -> list[str]:
    st = r["steps"]
    lines = [
        f"    steps ({st['events']} events; claims {st['claims']}, empty {st['empty_claims']}, "
        f"batch p50 {st['batch_p50']} max {st['batch_max']}; wake-ups {st['wakes']}, "
        f"{st['wakes_no_idle_lane']} with no idle lane; all {r.get('lanes', '?')} lanes busy at "
        f"the ack for {st['all_lanes_busy_at_ack']} events; GC {st['gc']}):"
    ]
    for key, label in STEPS:
        lines.append(
            f"      {label:50s} p50 {st[key]['p50_ms']:6.2f}  p99 {st[key]['p99_ms']:6.2f} ms"
            f"   slowest 1 %: mean {st['tail']['mean_ms'].get(key, 0):6.2f}"
        )
    lines.append(
        f"      wake-up -> claim sent p50 {st['wake_to_claim']['p50_ms']:.2f} p99 "
        f"{st['wake_to_claim']['p99_ms']:.2f} ms; slowest 1 % ({st['tail']['n']} events, "
        f">= {st['tail']['from_ack_ms_at_least']:.2f} ms): all lanes busy at the ack for "
        f"{st['tail']['all_lanes_busy_at_ack']}, collections of >= 5 ms in flight for "
        f"{st['tail']['with_gc']} (mean {st['tail']['gc_ms_mean']:.1f} ms of collection in "
        "flight)"
    )
    return lines


# The floor of issue 20 for the steady phase, read from the publisher's call (its commit
# included: the wait a user feels): (rate at most, p50 ms, p99 ms); None = no bound.
LATENCY_FLOOR = ((100.0, 2.0, 5.0), (1000.0, None, 5.0))


def latency_verdict(r: dict[str, Any]) -> str:
    """``meets`` / ``MISS (...)`` for one steady run against :data:`LATENCY_FLOOR`."""
    bound = next(((p50, p99) for top, p50, p99 in LATENCY_FLOOR if r["rate"] <= top), None)
    if r["cycle"] == "ceiling":
        return "reference (hand-written ceiling)"
    if bound is None or not r["listen"]:
        return "no target" if r["listen"] else "no target (polling)"
    why = []
    if r["handled"] < r["n"]:
        why.append(f"handled {r['handled']}/{r['n']}")
    if r["offered"] < 0.95 * r["rate"]:
        why.append(f"offered only {r['offered']:,.0f}/s")
    for p, limit in zip((50, 99), bound, strict=True):
        v = r.get(f"from_call_p{p}_ms")
        if limit is not None and (v is None or v > limit):
            why.append(f"p{p} > {limit:g} ms")
    return "meets" if not why else "MISS (" + ", ".join(why) + ")"


def bench_latency(uri: str, a) -> list[dict[str, Any]]:
    rows = []
    for state in a.outboxes:
        for listen in (True,) if a.no_poll else (True, False):
            for rate in a.rates:
                runs = list(a.cycles if listen else a.cycles[:1])
                if listen and not a.no_ceiling:
                    # the hand-written ceiling beside ours, the order alternating per rate
                    runs = runs + ["ceiling"] if len(rows) % 2 == 0 else ["ceiling", *runs]
                for cycle in runs:
                    secs = a.steady_seconds if rate <= 100 else a.steady_seconds / 2
                    r = latency_once(uri, rate, secs, listen, a, cycle=cycle, state=state)
                    r["verdict"] = latency_verdict(r)
                    rows.append(r)
                    say(
                        f"(d) steady {rate:6,.0f}/s (offered {r['offered']:,.0f}/s, {r['producers']} producer conns) "
                        f"{_where(r)} listen={'on ' if listen else 'off'} {cycle:7s} call->handler p50 "
                        f"{r['from_call_p50_ms']:7.2f} ms p90 {r['from_call_p90_ms']:7.2f} p99 "
                        f"{r['from_call_p99_ms']:7.2f} max {r['from_call_max_ms']:7.2f} (from COMMIT ack: "
                        f"p50 {r['from_commit_ack_p50_ms']:.2f} p99 {r['from_commit_ack_p99_ms']:.2f})  "
                        f"consumer CPU {r['consumer_cpu_us_per_event']:.0f} us/ev  handled {r['handled']}/{r['n']}"
                    )
                    say(
                        f"    publisher's COMMIT (sent -> ack) p50 {r['publisher_commit_p50_ms']:.2f} "
                        f"p99 {r['publisher_commit_p99_ms']:.2f} ms; WAL fsyncs per event "
                        f"{r.get('wal_fsyncs_per_event', float('nan')):.2f}; server CPU per event "
                        f"{r.get('server_cpu_us_per_event', float('nan')):.0f} us"
                    )
                    if "steps" in r:
                        r["lanes"] = a.steady_lanes
                        for line in step_lines(r):
                            say(line)
    latency_table(rows)
    return rows


def latency_table(rows: list[dict[str, Any]]) -> None:
    """Every configuration measured, misses included, judged on the reading from the
    publisher's call (its commit included)."""
    say(
        "\n(d) steady-rate latency, publisher's call (with its COMMIT) -> handler start; "
        "every configuration run\n"
        "| outbox | rate/s | offered/s | wake-up | cycle | p50 ms | p99 ms | max ms | "
        "p50/p99 from COMMIT ack | verdict |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        wake = "LISTEN" if r["listen"] else "poll"
        say(
            f"| {_where(r)} | {r['rate']:,.0f} | {r['offered']:,.0f} | {wake} | {r['cycle']} | "
            f"{_ms(r['from_call_p50_ms'])} | {_ms(r['from_call_p99_ms'])} | "
            f"{_ms(r['from_call_max_ms'])} | {_ms(r['from_commit_ack_p50_ms'])} / "
            f"{_ms(r['from_commit_ack_p99_ms'])} | {r.get('verdict', latency_verdict(r))} |"
        )


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v:.2f}"


# ------------------------------------------------------------------------- chart
def chart(res: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib not installed: no chart (pip install matplotlib)")
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    drains = [d for d in res.get("drain") or [] if d.get("analyzed", True)]
    raw = [d for d in res.get("drain") or [] if not d.get("analyzed", True)]
    if raw:
        ax1.plot(
            [d["batch"] for d in raw],
            [d["rate"] for d in raw],
            linestyle="none",
            marker="x",
            color="black",
            label="4 lanes, table not ANALYZEd",
        )
    for state, lanes in sorted({(d.get("outbox", "empty"), d["lanes"]) for d in drains}):
        pts = sorted(
            (d["batch"], d["rate"])
            for d in drains
            if d["lanes"] == lanes and d.get("outbox", "empty") == state
        )
        ax1.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            linestyle="-" if state == "empty" else "--",
            label=f"{lanes} lane(s), {'empty outbox' if state == 'empty' else 'with history'}",
        )
    ax1.set_xscale("log")
    for ref in res.get("peer_refs", []):
        ax1.axhline(ref["rate"], linestyle="--", linewidth=1, color="grey")
        ax1.text(10, ref["rate"], ref["label"], fontsize=7, va="bottom", color="dimgrey")
    ax1.set_xticks([10, 50, 100, 200], ["10", "50", "100", "200"])
    ax1.set_xlabel("batch size")
    ax1.set_ylabel("events/s (drain, settled)")
    ax1.set_title(f"Drain of {res['args']['drain_n']:,} events, 1 consumer process")
    ax1.set_ylim(bottom=0)
    ax1.grid(alpha=0.3)
    ax1.legend()
    lats = res.get("latency") or []
    labels = [
        f"{r['rate']:,.0f}/s (got {r['offered']:,.0f}) {r.get('outbox', 'empty')}\n"
        f"{'LISTEN' if r['listen'] else 'poll ' + format(res['args']['poll_interval'], 'g') + ' s'}"
        for r in lats
    ]
    xs = range(len(lats))
    w = 0.27
    for k, (p, c) in enumerate(((50, "tab:blue"), (90, "tab:orange"), (99, "tab:red"))):
        ax2.bar(
            [x + (k - 1) * w for x in xs],
            [r.get(f"from_call_p{p}_ms", r[f"from_commit_p{p}_ms"]) for r in lats],
            w,
            label=f"p{p}",
            color=c,
        )
    ax2.set_xticks(list(xs), labels, fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("ms, publisher's call (with COMMIT) -> handler start (log)")
    ax2.set_title("Steady-rate latency, consumer in its own process")
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend()
    fig.suptitle("spectral outbox, PostgreSQL 18 embedded, fsync on, 2 shared vCPUs", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    say(f"chart: {path}")
    return True


# ------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--only",
        default="publish,drain,latency,procs",
        help="comma-separated subset of: publish, drain, latency, procs, burst",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument(
        "--uri",
        help="use this server (a database the script may fill) instead of starting an embedded one",
    )
    ap.add_argument("--rounds", type=int, default=3, help="(a)/(b) rounds")
    ap.add_argument(
        "--single-n", type=int, default=1500, help="(a) transactions per variant per round"
    )
    ap.add_argument(
        "--publish-conns",
        type=int,
        default=4,
        help="(a) also run the single-transaction variants with this many producers at once (1: skip)",
    )
    ap.add_argument(
        "--batch-calls", type=int, default=150, help="(b) calls of 100 per variant per round"
    )
    ap.add_argument("--drain-n", type=int, default=20000, help="(c)/(e) backlog size")
    ap.add_argument("--lanes", default="1,2,4", help="(c) lane counts")
    ap.add_argument("--batches", default="10,50,100,200", help="(c) batch sizes")
    ap.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="(c)/(e) skip the ANALYZE between fill and drain",
    )
    ap.add_argument(
        "--plan-check",
        default="10,100",
        help="(c) batch sizes also drained (lanes 4) without ANALYZE ('' to skip)",
    )
    ap.add_argument("--procs", type=int, default=2, help="(e) consumer processes")
    ap.add_argument("--burst-n", type=int, default=20_000, help="(f) events in the burst")
    ap.add_argument("--burst-rounds", type=int, default=3, help="(f) rounds (order rotated)")
    ap.add_argument(
        "--outbox",
        default="empty,history",
        help="(c)/(d)/(e) outbox states, comma-separated: empty (truncated; in (d) also "
        "ANALYZEd while empty, as a fresh install or after retention), history "
        "(--history-n handled rows kept, statistics taken with them)",
    )
    ap.add_argument(
        "--history-n",
        type=int,
        default=1_000_000,
        help="handled rows of the 'history' outbox (same generation, status done)",
    )
    ap.add_argument("--rates", default="100,1000", help="(d) events/s")
    ap.add_argument(
        "--steady-seconds",
        type=float,
        default=10.0,
        help="(d) seconds at 100/s (rates above 100/s run half as long)",
    )
    ap.add_argument("--steady-lanes", type=int, default=4)
    ap.add_argument("--steady-batch", type=int, default=100)
    ap.add_argument(
        "--poll-interval", type=float, default=1.0, help="ConsumerConfig.poll_interval_s"
    )
    ap.add_argument(
        "--no-ceiling",
        action="store_true",
        help="(d) skip the hand-written ceiling (a LISTEN consumer taking rows in one statement "
        "per wake-up, no claim commit, no ledger) run beside each LISTEN rate",
    )
    ap.add_argument(
        "--cycle",
        default=None,
        help="(c)/(d) consumer cycle(s), comma-separated, for trees before ADR 0034 (which "
        "have ConsumerConfig.fused_cycle): fused (claim and start in one message, their "
        "default; ADR 0015), general (claim, then BEGIN + start). Default: fused on those "
        "trees, 'one' (the single claim path) on later ones",
    )
    ap.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="consumer logging (JSON, production format, to /dev/null)",
    )
    ap.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="the consumer process's event loop (auto: uvloop when installed, as "
        "spectral-workers with SPECTRAL_EVENT_LOOP=auto)",
    )
    ap.add_argument(
        "--gc-freeze",
        default="auto",
        choices=["auto", "on", "off"],
        help="(c)-(f) the consumer process freezes its start-up heap (boot.freeze_startup_heap) "
        "once its consumer is built; auto: as this tree's spectral-workers does",
    )
    ap.add_argument(
        "--no-poll",
        action="store_true",
        help="(d) skip the runs without LISTEN (ConsumerConfig(listen=False))",
    )
    ap.add_argument(
        "--steps",
        action="store_true",
        help="(d) time each step of the consumer's path per event (claim, BEGIN, start, "
        "handler; wake-ups, lanes busy, GC pauses) and print the attribution",
    )
    ap.add_argument(
        "--profile-consumer",
        metavar="PREFIX",
        help="cProfile each consumer process, write PREFIX.<mode>.<pid>.prof",
    )
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", help="results JSON (default bench/results/outbox-<UTC>.json)")
    ap.add_argument("--chart", default=str(ROOT / "docs" / "perf" / "outbox.png"))
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument(
        "--peer-ref",
        action="append",
        default=[],
        help="LABEL=RATE horizontal reference line on the drain chart (same-run peer figures)",
    )
    ap.add_argument(
        "--chart-from", metavar="JSON", help="only redraw the chart from a results file"
    )
    a = ap.parse_args()
    if a.chart_from:
        chart(json.loads(Path(a.chart_from).read_text()), Path(a.chart))
        return
    a.lanes = [int(x) for x in a.lanes.split(",")]
    a.batches = [int(x) for x in a.batches.split(",")]
    a.rates = [float(x) for x in a.rates.split(",")]
    import dataclasses

    from spectral_core.outbox import ConsumerConfig

    two_cycles = "fused_cycle" in {f.name for f in dataclasses.fields(ConsumerConfig)}
    a.cycle = a.cycle or ("fused" if two_cycles else "one")
    a.cycles = [x for x in a.cycle.split(",") if x]
    if not two_cycles and a.cycles != ["one"]:
        ap.error("--cycle: this tree's consumer has one claim path (ADR 0034)")
    if two_cycles and (not a.cycles or set(a.cycles) - {"fused", "general"}):
        ap.error("--cycle takes fused and/or general")
    a.outboxes = [x for x in a.outbox.split(",") if x]
    if not a.outboxes or set(a.outboxes) - set(OUTBOX_STATES):
        ap.error(f"--outbox takes {' and/or '.join(OUTBOX_STATES)}")
    a.plan_check = [int(x) for x in a.plan_check.split(",") if x]
    # the consumer's bounds (ConsumerConfig), checked before anything starts
    from spectral_core.settings import OUTBOX_BATCH_MAX, OUTBOX_LANES_MAX

    if not all(1 <= b <= OUTBOX_BATCH_MAX for b in [*a.batches, *a.plan_check, a.steady_batch]):
        ap.error(
            f"batch sizes (--batches, --plan-check, --steady-batch) must be 1..{OUTBOX_BATCH_MAX}"
        )
    if not all(1 <= n <= OUTBOX_LANES_MAX for n in [*a.lanes, a.steady_lanes]):
        ap.error(f"lane counts (--lanes, --steady-lanes) must be 1..{OUTBOX_LANES_MAX}")
    if a.quick:
        a.rounds, a.single_n, a.batch_calls, a.drain_n, a.steady_seconds = 1, 200, 20, 3000, 2.0
        a.history_n = min(a.history_n, 20_000)
        a.burst_n, a.burst_rounds = 2000, 1
    only = set(a.only.split(","))
    say("$ " + " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]))
    ts = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    res: dict[str, Any] = {
        "ts": ts,
        "argv": sys.argv,
        "args": vars(a),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
    }
    for ref in a.peer_ref:
        label, _, rate = ref.rpartition("=")
        res.setdefault("peer_refs", []).append({"label": label, "rate": float(rate)})
    pg = None
    tmp = None
    if a.uri:
        uri = a.uri
    else:
        from spectral_core.embedded import EmbeddedPostgres

        tmp = tempfile.mkdtemp(prefix="spectral-bench-outbox-")
        pg = EmbeddedPostgres(Path(tmp), durable=True)
        uri = pg.start()
    t0 = time.monotonic()
    try:
        import psycopg

        with psycopg.connect(uri, autocommit=True) as c:
            res["postgres"] = {
                k: c.execute(f"SHOW {k}").fetchone()[0]
                for k in (
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "full_page_writes",
                    "shared_buffers",
                    "wal_sync_method",
                )
            }
        say(f"postgres {res['postgres']}  cpus={os.cpu_count()} load1={os.getloadavg()[0]:.2f}")
        prepare(uri)
        check_live_plan(uri)
        if "publish" in only:
            res["publish"] = bench_publish(uri, a)
        if "drain" in only:
            res["drain"] = bench_drain(uri, a)
        if "latency" in only:
            res["latency"] = bench_latency(uri, a)
        if "procs" in only:
            res["procs"] = bench_procs(uri, a)
        if "burst" in only:
            res["burst"] = bench_burst(uri, a)
    finally:
        if pg is not None:
            pg.destroy()
    res["runtime_s"] = time.monotonic() - t0
    res["machine"]["loadavg_end"] = os.getloadavg()
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"outbox-{ts}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    say(f"results: {out}  ({res['runtime_s']:.0f} s, load1 {os.getloadavg()[0]:.2f})")
    if not a.no_chart and ("drain" in res or "latency" in res):
        chart(res, Path(a.chart))


if __name__ == "__main__":
    main()
