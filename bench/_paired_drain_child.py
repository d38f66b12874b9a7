"""One drain of ``bench/paired_commits.py``, run with ``PYTHONPATH=<tree>/src``.

Allocates a fresh generation, publishes ``--n`` events in it (untimed), analyzes the outbox
as the peer harness does before every drain, then runs the real :class:`Consumer` of the tree
on its path (``--lanes`` x ``--batch-size``, LISTEN on, one no-op handler: the ledger row and
the ``done`` mark are still written) until it has handled all of them.  Prints one JSON line:
events/s from the consumer's start to the last event handled, and the client CPU per event.
With ``--pg-pid`` (the postmaster's pid) also the server's CPU per event over the same window
(every server process: the postmaster's own and reaped children's times plus its live
children's, from ``/proc``); when ``pg_stat_statements`` is loaded, the top-level statements
per batch, by statement (the client's round trips); with ``--profile FILE`` a cProfile of the
drain window (distorts the rates: for attribution only).

With ``SPECTRAL_OTLP_ENDPOINT`` in the environment (``paired_commits.py --sdk``) it first
configures the OpenTelemetry SDK as ``spectral-workers`` does (``spectral_core.tracing.configure``:
a ``BatchSpanProcessor`` and the OTLP/HTTP exporter; and the worker counters pushed with
``push_worker_metrics``): only trees with ADR 0029's tracing can run that way.

Only public names that every tree since the outbox's first release has (``Publisher``,
``EventIn``, ``Consumer``, ``ConsumerConfig``, ``HandlerRegistry``, ``open_pools``), so an
older commit runs the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import uuid

TOPIC = "bench.paired"


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _server_cpu_s(pm: int) -> float:
    """CPU seconds of a PostgreSQL cluster so far: the postmaster, its reaped children
    (exited backends) and its live children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(d), int(fields[1])
        if pid == pm:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif ppid == pm:
            total += int(fields[11]) + int(fields[12])
    return total / tick


_STATEMENTS = """
SELECT regexp_replace(left(query, 60), '\\s+', ' ', 'g'), calls, total_exec_time
FROM pg_stat_statements
WHERE query NOT LIKE '%%pg_stat_statements%%' AND calls > 0
ORDER BY calls DESC
"""


def _statements(uri: str, reset: bool) -> list[tuple[str, int, float]]:
    import psycopg

    try:
        with psycopg.connect(uri, autocommit=True) as conn:
            if reset:
                conn.execute("SELECT pg_stat_statements_reset()")
                return []
            return [(r[0], int(r[1]), float(r[2])) for r in conn.execute(_STATEMENTS)]
    except psycopg.Error:
        return []  # not loaded


async def _run(a: argparse.Namespace) -> dict[str, float]:
    import psycopg

    from spectral_core.db.pools import open_pools
    from spectral_core.generations import allocate_generation
    from spectral_core.outbox import (
        Consumer,
        ConsumerConfig,
        EventIn,
        HandlerRegistry,
        Publisher,
    )
    from spectral_core.settings import Settings

    with psycopg.connect(a.uri, autocommit=True) as conn:
        gen = allocate_generation(conn, f"paired-{a.label}")
    async with await psycopg.AsyncConnection.connect(a.uri, autocommit=True) as conn:
        pub = Publisher(gen)
        for start in range(0, a.n, 1000):
            events = [
                EventIn(topic=TOPIC, payload={"i": i}) for i in range(start, min(a.n, start + 1000))
            ]
            await pub.publish_many_async(conn, events)
        await conn.execute("ANALYZE core.outbox")

    done = asyncio.Event()
    handled = 0

    async def noop(event: object, conn: object) -> None:
        nonlocal handled
        handled += 1
        if handled >= a.n:
            done.set()

    registry = HandlerRegistry()
    registry.register("bench.paired.noop", TOPIC, noop)
    settings = Settings(
        database_url=a.uri,
        generation=gen,
        database_pool_max=a.lanes + 2,
        database_pool_min=a.lanes,
    )
    config = ConsumerConfig(batch_size=a.batch_size, lanes=a.lanes, listen=True)
    shutdowns = []
    endpoint = os.environ.get("SPECTRAL_OTLP_ENDPOINT")
    if endpoint:  # paired_commits.py --sdk: the SDK as spectral-workers configures it
        from spectral_core.tracing import configure

        settings = settings.replace(otlp_endpoint=endpoint)
        shutdowns.append(configure(settings, service_name="spectral-workers"))
    async with open_pools(settings) as db:
        worker_id = uuid.uuid4()
        consumer = Consumer(
            db, generation=gen, worker_id=worker_id, registry=registry, config=config
        )
        if endpoint:  # and the worker's counters pushed over OTLP, as spectral-workers does
            from spectral_core.metrics.otlp import push_worker_metrics

            shutdowns.append(
                push_worker_metrics(settings, consumer.stats, worker_id=str(worker_id))
            )
        _statements(a.uri, reset=True)
        prof = None
        if a.profile:
            import cProfile

            prof = cProfile.Profile()
        srv0 = _server_cpu_s(a.pg_pid) if a.pg_pid else 0.0
        cpu0, t0 = _cpu_s(), time.perf_counter()
        if prof:
            prof.enable()
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(done.wait(), a.timeout)
        if prof:
            prof.disable()
        elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
        srv = _server_cpu_s(a.pg_pid) - srv0 if a.pg_pid else float("nan")
        statements = _statements(a.uri, reset=False)
        if prof:
            prof.dump_stats(a.profile)
        consumer.stop()
        await asyncio.wait_for(task, 30)
    for shutdown in shutdowns:  # flush what is queued (not timed)
        shutdown()
    with psycopg.connect(a.uri, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM core.outbox WHERE generation = %s AND status <> 'done'", (gen,)
        ).fetchone()
    batches = a.n / a.batch_size
    return {
        "rate": a.n / elapsed,
        "seconds": elapsed,
        "client_cpu_us_per_event": cpu / a.n * 1e6,
        "server_cpu_us_per_event": srv / a.n * 1e6,
        "statements_per_batch": sum(c for _, c, _ in statements) / batches,
        "statements": [
            [q, round(c / batches, 2), round(t * 1000 / max(c, 1), 1)] for q, c, t in statements
        ],
        "not_done": int(left[0]) if left else -1,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--pg-pid", type=int, default=0, help="the postmaster's pid")
    ap.add_argument("--profile", default=None, help="write a cProfile of the drain here")
    a = ap.parse_args()
    from spectral_core.logging import configure_logging

    sys.stdout.flush()
    real_stdout = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the production log configuration (JSON at info), lines discarded
    configure_logging(fmt="json", level="info")
    result = asyncio.run(_run(a))
    os.dup2(real_stdout, 1)
    sys.stdout = os.fdopen(1, "w")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
