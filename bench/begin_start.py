"""The batch's handler transaction opened three ways: what one round trip fewer would buy.

    python bench/begin_start.py                         # 150 cycles of 1 row, 10 ms apart
    python bench/begin_start.py --batch 100 --gap-ms 0  # back to back, 100 rows each

One cycle is what a lane does with a batch (ADR 0042): the claim (``core.outbox_claim_v1``,
autocommit), the handler transaction opened with its first statement (the start,
``core.outbox_start_v2``), no handler, ``COMMIT``.  The three forms of the opening:

* ``plain``: ``async with conn.transaction():`` then the start, as the consumer does:
  ``BEGIN`` and the start are two round trips;
* ``pipeline``: psycopg's pipeline mode with the transaction entered inside it and left open
  after it (an exit stack), the form ADR 0042 measured;
* ``one_message``: ``BEGIN; <start>`` sent as one simple-query message through a client-side
  binding cursor, the transaction ended by hand (``conn.commit()``);

on one connection, the forms interleaved and their order rotated per cycle, a fresh row set
published before each cycle (outside the timing).  Per cycle: wall time (from the claim
sent to the ``COMMIT`` acknowledged, durable), the client's CPU time and the backend's
(``/proc/<pid>/schedstat``).  ``--trace`` writes libpq's protocol trace of one cycle per
form, which shows the round trips each form makes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

GENERATION = 1


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def measure(url: str, cycles: int, batch: int, gap_s: float, trace: str | None) -> None:
    import psycopg

    from spectral_core.sql import query

    # the client-side binding cursor cannot send binary parameters
    start = query("start_batch").replace("%(ids)b", "%(ids)s")
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
    pub = await psycopg.AsyncConnection.connect(url, autocommit=True)
    pid = conn.info.backend_pid
    base = {"generation": GENERATION, "worker_id": uuid.uuid4()}

    def params(ids: list[int]) -> dict[str, Any]:
        return {**base, "ids": ids, "topics": ["t.x"], "handlers": ["h"]}

    async def plain(ids: list[int]) -> None:
        async with conn.transaction():
            await (await conn.execute(start, params(ids))).fetchall()

    async def pipeline(ids: list[int]) -> None:
        async with contextlib.AsyncExitStack() as transaction:
            async with conn.pipeline():
                await transaction.enter_async_context(conn.transaction())
                cur = await conn.execute(start, params(ids))
            await cur.fetchall()

    async def one_message(ids: list[int]) -> None:
        cur = psycopg.AsyncClientCursor(conn)
        try:
            await cur.execute("BEGIN; " + start, params(ids))
            cur.nextset()
            await cur.fetchall()
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()

    forms: dict[str, Callable[[list[int]], Awaitable[None]]] = {
        "plain": plain,
        "pipeline": pipeline,
        "one_message": one_message,
    }
    names = list(forms)

    async def cycle(name: str) -> tuple[float, float, float]:
        await pub.execute(
            "INSERT INTO core.outbox (generation, topic, payload, idempotency_key) "
            "SELECT %s, 't.x', '{}', gen_random_uuid()::text FROM generate_series(1, %s)",
            (GENERATION, batch),
        )
        if gap_s:
            await asyncio.sleep(gap_s)
        t0, c0, s0 = time.perf_counter(), time.process_time(), backend_ns(pid)
        cur = await conn.execute(query("claim_batch"), {**base, "limit": batch})
        ids = [r[0] for r in await cur.fetchall()]
        assert len(ids) == batch, (name, len(ids))
        await forms[name](ids)
        return (
            time.perf_counter() - t0,
            time.process_time() - c0,
            (backend_ns(pid) - s0) / 1e9,
        )

    if trace:
        with open(trace, "w") as f:
            for name in names:
                f.write(f"==== {name}\n")
                f.flush()
                conn.pgconn.trace(f.fileno())
                await cycle(name)
                conn.pgconn.untrace()
    res: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    for i in range(cycles):
        for name in names[i % 3 :] + names[: i % 3]:  # the order rotated per cycle
            res[name].append(await cycle(name))
    await conn.close()
    await pub.close()
    print(
        f"\n| form | wall p50 us | wall p90 us | client CPU us | server CPU us | "
        f"vs plain: wall p50 / client / server |  ({cycles} cycles of {batch} row(s), "
        f"{gap_s * 1000:g} ms apart)"
    )
    print("|---|---|---|---|---|---|")
    ref = None
    for name in names:
        wall = sorted(r[0] for r in res[name])
        row = (
            statistics.median(wall),
            statistics.mean(r[1] for r in res[name]),
            statistics.mean(r[2] for r in res[name]),
        )
        ref = ref or row
        print(
            f"| {name} | {row[0] * 1e6:.0f} | {wall[int(len(wall) * 0.9)] * 1e6:.0f} | "
            f"{row[1] * 1e6:.0f} | {row[2] * 1e6:.0f} | "
            f"{row[0] / ref[0]:.3f} / {row[1] / ref[1]:.3f} / {row[2] / ref[2]:.3f} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="default: a fresh embedded PostgreSQL (durable)")
    ap.add_argument("--cycles", type=int, default=150, help="cycles per form")
    ap.add_argument("--batch", type=int, default=1, help="rows per cycle")
    ap.add_argument("--gap-ms", type=float, default=10.0, help="idle time before each cycle")
    ap.add_argument("--trace", help="write libpq's protocol trace of one cycle per form here")
    a = ap.parse_args()
    from _server import migrated_server

    with migrated_server(a.url, "spectral-begin-start-pg-") as url:
        print(f"command: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        asyncio.run(measure(url, a.cycles, a.batch, a.gap_ms / 1000, a.trace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
