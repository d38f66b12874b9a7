"""spectral's outbox in the side-by-side peer benchmark (/work/shared/bench-peers).

Adapter for ``peers_common.run_peer`` (see that module for the phases).  Run it through the
harness so it shares the server and the rounds with pgqueuer/procrastinate::

    cd /work/shared/bench-peers && bash setup.sh && "$VENV/bin/pip" install -e /work/main
    RESULTS_DIR=/work/main/bench/results \
    EXTRA="/work/main/bench/peer_spectral.py --label l4b100 --lanes 4 --batch-size 100" \
    REPEATS=1 ONLY="pgqueuer" bash run_all.sh

What each adapter function does with spectral:

- ``setup_db``: ``run_migrations`` + ``allocate_generation`` (generation 1) in the fresh DB.
- ``enqueue_one``: ``Publisher(1).publish_async(...)`` on a psycopg ``AsyncConnection`` opened
  with the library's own connection options (autocommit + ``prepare_threshold=1``): one
  statement that is its own transaction, like the peers' single enqueue.  In an application
  the publish joins the caller's transaction, whose BEGIN/COMMIT the application pays anyway;
  ``--publish txn`` wraps it in ``BEGIN ... COMMIT`` (three round trips) to measure that too.
- ``enqueue_many``: ``Publisher.publish_many_async`` (one statement, autocommit).
- ``worker_main``: the real :class:`spectral_core.Consumer` (``--lanes`` x ``--batch-size``,
  LISTEN on unless ``--no-listen``) on a pool from ``open_pools``, one no-op handler
  registered through :class:`HandlerRegistry`; the processor still writes the
  ``core.event_handled`` ledger row for every event and marks the batch ``done``.
  Drain mode: a watcher (own connection) stops the consumer when the generation's
  pending/in_flight count is 0 (with one worker process it first waits in-process until the
  consumer has handled the backlog counted at go, then polls every 20 ms).  Steady mode: stops on the harness's event.
  Logging is configured as the worker entrypoint does (JSON, level ``--log-level``, default
  info: one ``outbox.batch_handled`` line per batch), written to /dev/null.
- Event loop (``--loop``): uvloop by default, as ``spectral-workers`` uses when it is
  installed (``SPECTRAL_EVENT_LOOP=auto``) and as the pgqueuer adapter runs; ``--loop
  asyncio`` for the standard loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

from peers_common import WorkerStats, common_args, loop_runner, run_peer, wait_mp_event

NAME = "spectral"
TOPIC = "bench.noop"
GENERATION = 1


def FAMILY(cfg) -> str:
    return "spectral" if cfg.get("listen", True) else "spectral[nolisten]"


async def setup_db(uri: str, cfg) -> None:
    import psycopg

    from spectral_core.generations import allocate_generation
    from spectral_core.migrate import run_migrations

    with psycopg.connect(uri, autocommit=True) as conn:
        run_migrations(conn)
        gen = allocate_generation(conn, "bench")
    assert gen == GENERATION, gen


class _Prod:
    def __init__(self, conn, txn: bool):
        from spectral_core.outbox import Publisher

        self.conn = conn
        self.txn = txn
        self.pub = Publisher(GENERATION)


async def open_producer(uri: str, cfg):
    import psycopg

    from spectral_core.db.pools import connect_kwargs

    conn = await psycopg.AsyncConnection.connect(uri, **connect_kwargs())
    return _Prod(conn, cfg.get("publish", "autocommit") == "txn")


async def enqueue_one(prod: _Prod, t: float) -> None:
    if prod.txn:
        async with prod.conn.transaction():  # BEGIN ... COMMIT around the outbox write
            await prod.pub.publish_async(prod.conn, TOPIC, {"t": t})
    else:  # one statement in autocommit: its own transaction, as a peer's enqueue
        await prod.pub.publish_async(prod.conn, TOPIC, {"t": t})


async def enqueue_many(prod: _Prod, ts: list[float]) -> None:
    from spectral_core.outbox import EventIn

    await prod.pub.publish_many_async(
        prod.conn, [EventIn(topic=TOPIC, payload={"t": t}) for t in ts]
    )


async def close_producer(prod: _Prod) -> None:
    await prod.conn.close()


# rows still to handle through the partial indexes (one count per status), sequential scans
# off on the counting connection: its cost follows the live rows, not the table
_LIVE = (
    "SELECT (SELECT count(*) FROM core.outbox WHERE generation = 1 AND status = 'pending')"
    " + (SELECT count(*) FROM core.outbox WHERE generation = 1 AND status = 'in_flight')"
)
_COUNT_OPTIONS = "-c enable_seqscan=off"


def _consumer_config(config_cls, cycle: str, **kw):
    """``ConsumerConfig`` with ``fused_cycle`` only on a tree that still has it (the claim path
    of issue 20 has one cycle): ``--cycle general`` is refused there."""
    import dataclasses

    if "fused_cycle" in {f.name for f in dataclasses.fields(config_cls)}:
        kw["fused_cycle"] = cycle == "fused"
    elif cycle != "fused":
        raise SystemExit(f"--cycle {cycle}: this tree's consumer has one claim path")
    return config_cls(**kw)


async def pending(uri: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        uri, autocommit=True, options=_COUNT_OPTIONS
    ) as c:
        return (await (await c.execute(_LIVE)).fetchone())[0]


async def verify(uri: str) -> dict:
    import psycopg

    async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as c:
        rows = await (
            await c.execute("SELECT status, count(*) FROM core.outbox GROUP BY 1 ORDER BY 1")
        ).fetchall()
        ledger = (await (await c.execute("SELECT count(*) FROM core.event_handled")).fetchone())[0]
    return {"outbox": {s: n for s, n in rows}, "ledger_rows": ledger}


def _configure_logging(level: str) -> None:
    from spectral_core.logging import configure_logging

    # the production configuration (JSON lines to stdout), with stdout sent to /dev/null
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    configure_logging(fmt="json", level=level)


def worker_main(uri, cfg, mode, go, stop, out, idx) -> None:
    _configure_logging(cfg.get("log_level", "info"))
    loop_runner(cfg.get("loop", "asyncio"))(_worker(uri, cfg, mode, go, stop, out, idx))


async def _worker(uri, cfg, mode, go, stop, out, idx) -> None:
    import psycopg

    from spectral_core.db.pools import open_pools
    from spectral_core.outbox import Consumer, ConsumerConfig, HandlerRegistry
    from spectral_core.settings import Settings

    st = WorkerStats()
    registry = HandlerRegistry()

    async def noop(event, conn) -> None:
        st.hit(float(event.payload["t"]))

    registry.register("bench.peer.noop", TOPIC, noop)
    lanes = cfg["lanes"]
    settings = Settings(
        database_url=uri,
        generation=GENERATION,
        database_pool_max=lanes + 2,
        database_pool_min=lanes,
    )
    config = _consumer_config(
        ConsumerConfig,
        cfg.get("cycle", "fused"),
        batch_size=cfg["batch_size"],
        lanes=lanes,
        listen=cfg["listen"],
        poll_interval_s=cfg["poll_interval_s"],
    )
    async with open_pools(settings) as db:
        consumer = Consumer(
            db, generation=GENERATION, worker_id=uuid.uuid4(), registry=registry, config=config
        )
        watch = await psycopg.AsyncConnection.connect(uri, autocommit=True, options=_COUNT_OPTIONS)
        st.mark_ready(out, idx)
        await wait_mp_event(go)

        async def drain_watcher() -> None:
            # With one worker process, wait in-process until the consumer has handled the
            # backlog counted at go, then confirm in the database (20 ms polls from there).
            backlog = (await (await watch.execute(_LIVE)).fetchone())[0]
            while cfg["procs"] == 1 and consumer.handled < backlog:
                await asyncio.sleep(0.005)
            while True:
                n = (await (await watch.execute(_LIVE)).fetchone())[0]
                if n == 0:
                    consumer.stop()
                    return
                await asyncio.sleep(0.02)

        async def stopper() -> None:
            await wait_mp_event(stop)
            consumer.stop()

        side = asyncio.create_task(drain_watcher() if mode == "drain" else stopper())
        try:
            await consumer.run()
        finally:
            side.cancel()
            await watch.close()
    st.report(out, idx)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common_args(ap)
    ap.add_argument("--lanes", type=int, default=4, help="ConsumerConfig.lanes")
    ap.add_argument("--batch-size", type=int, default=100, help="ConsumerConfig.batch_size")
    ap.add_argument("--no-listen", action="store_true", help="ConsumerConfig(listen=False)")
    ap.add_argument(
        "--poll-interval", type=float, default=1.0, help="ConsumerConfig.poll_interval_s"
    )
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument(
        "--cycle",
        choices=["fused", "general"],
        default="fused",
        help="consumer cycle: claim and start in one message (default, ADR 0015) or "
        "the general path (claim, then BEGIN + start; used behind a pooler)",
    )
    ap.add_argument(
        "--publish",
        choices=["autocommit", "txn"],
        default="autocommit",
        help="single enqueue: one publish statement in autocommit (its own "
        "transaction, like the peers' enqueue; default) or wrapped in "
        "BEGIN ... COMMIT (two more round trips)",
    )
    ap.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of the workers and the producer (default uvloop: what "
        "spectral-workers runs on when it is installed, SPECTRAL_EVENT_LOOP=auto)",
    )
    a = ap.parse_args()
    cfg = {
        "lanes": a.lanes,
        "batch_size": a.batch_size,
        "listen": not a.no_listen,
        "cycle": a.cycle,
        "poll_interval_s": a.poll_interval,
        "log_level": a.log_level,
        "loop": a.loop,
        "publish": a.publish,
    }
    import peer_spectral as mod

    run_peer(mod, "peer_spectral", a, cfg)


if __name__ == "__main__":
    main()
