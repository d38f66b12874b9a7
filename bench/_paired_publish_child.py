"""One publish run of ``bench/paired_commits.py --only publish``, with ``PYTHONPATH=<tree>/src``.

Allocates a fresh generation, then ``--producers`` connections each publish ``--n`` single
events, one transaction per event (``BEGIN; Publisher.publish_async; COMMIT``: the wait a user
feels), all at once.  The connections are the caller's, as in an application: psycopg's
defaults (``--prepare default``: statements prepared after 5 uses) or, as behind a
transaction pooler, nothing prepared (``--prepare none``).  Prints one JSON line: events/s
over the whole run, the client CPU per event and, with ``--pg-pid``, the server's CPU per
event over the same window (see ``_paired_drain_child.py``).

Only public names every tree since the outbox's first release has (``Publisher``), so an
older commit runs the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from _paired_drain_child import _cpu_s, _server_cpu_s

TOPIC = "bench.paired"


async def _run(a: argparse.Namespace) -> dict[str, float]:
    import psycopg

    from spectral_core.generations import allocate_generation
    from spectral_core.outbox import Publisher

    with psycopg.connect(a.uri, autocommit=True) as conn:
        gen = allocate_generation(conn, f"paired-{a.label}")
    kwargs = {"prepare_threshold": None} if a.prepare == "none" else {}
    conns = [
        await psycopg.AsyncConnection.connect(a.uri, autocommit=True, **kwargs)
        for _ in range(a.producers)
    ]
    pub = Publisher(gen)

    async def produce(conn: psycopg.AsyncConnection, n: int) -> None:
        for i in range(n):
            async with conn.transaction():
                await pub.publish_async(conn, TOPIC, {"i": i})

    try:
        await asyncio.gather(*(produce(c, 20) for c in conns))  # warm: imports, plans
        srv0 = _server_cpu_s(a.pg_pid) if a.pg_pid else 0.0
        cpu0, t0 = _cpu_s(), time.perf_counter()
        await asyncio.gather(*(produce(c, a.n) for c in conns))
        elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
        srv = _server_cpu_s(a.pg_pid) - srv0 if a.pg_pid else float("nan")
    finally:
        for c in conns:
            await c.close()
    total = a.n * a.producers
    return {
        "rate": total / elapsed,
        "client_cpu_us_per_event": cpu / total * 1e6,
        "server_cpu_us_per_event": srv / total * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uri", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--n", type=int, required=True, help="events per producer")
    ap.add_argument("--producers", type=int, default=1)
    ap.add_argument("--prepare", choices=["default", "none"], default="default")
    ap.add_argument("--pg-pid", type=int, default=0, help="the postmaster's pid")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(_run(a))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
