"""Rows held by a worker cut off from the server (issue 16.1, server side): a real network
partition between the worker and a TCP forwarder that keeps its server connections open
(as a connection pooler or proxy in the path would), so the server never learns that the
worker is gone and the worker's handler transaction keeps its row locks."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .netns import Forwarder, namespace
from .procs import Proc, clean_env, scalar, start_workers, wait_for
from .test_frozen_worker import held_by, worker_id
from .test_workers_faults import SLOW, counts, exactly_once, publish

pytestmark = pytest.mark.slow

#: the issue's target: held rows leave `in_flight` within 15 s of the cut (stale bound 3 s)
BOUND_S = 15.0


def test_rows_held_by_a_partitioned_worker_leave_in_flight_and_end_done(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """A worker holding five claims in an open handler transaction is cut off (packets
    dropped both ways) while its server connections stay open through a forwarder.  A
    peer's reaper terminates the lost worker's sessions, so the held rows leave
    `in_flight` within 15 s of the cut although the server never sees the worker go (the
    reaper used to wait on their row locks for the whole cut); every row ends `done`,
    handled exactly once, with no operator action; after the heal the cut-off worker is
    `running` and handling events again within 30 s, by itself."""
    params = conninfo_to_dict(db_url)
    publish(conn, generation, 20, topic="drill.slow", payload={"sleep_s": 1.0})
    one_lane = {"SPECTRAL_OUTBOX_BATCH_SIZE": "5", "SPECTRAL_OUTBOX_LANES": "1", **SLOW}
    with namespace() as ns:
        fwd = Forwarder(ns.host_ip, (str(params["host"]), int(params["port"])))
        via_link = make_conninfo(db_url, host=ns.host_ip, port=str(fwd.port))
        env = clean_env(
            SPECTRAL_DATABASE_URL=via_link,
            SPECTRAL_GENERATION=str(generation),
            **one_lane,
        )
        cut_off = Proc(
            [*ns.prefix(), sys.executable, "-m", "spectral_workers"], env, tmp_path / "cut.log"
        )
        peer = start_workers(db_url, generation, tmp_path / "peer.log", **one_lane)
        try:
            cut_id = worker_id(db_url, cut_off)
            wait_for(lambda: held_by(db_url, cut_id) == 5, 60, "the cut-off worker's claims")
            time.sleep(0.5)  # inside a handler's pg_sleep: its rows are locked
            ns.cut()
            cut = time.monotonic()
            wait_for(lambda: held_by(db_url, cut_id) == 0, BOUND_S + 10, "held rows released")
            released_s = time.monotonic() - cut
            assert released_s < BOUND_S, f"held rows left in_flight after {released_s:.1f}s"
            wait_for(lambda: counts(db_url) == {"done": 20}, 90, "every row done")
            assert cut_off.p.poll() is None  # still cut off, and nobody acted by hand
            ns.heal()
            healed = time.monotonic()
            time.sleep(1)
            exactly_once(db_url, 20)
            print(f"partition: held rows released {released_s:.2f}s after the cut")
            assert "reaper.session_terminated" in peer.output()
            peer.signal(signal.SIGTERM)
            assert peer.wait(30) == 0
            # the cut-off worker, whose sessions the reaper terminated, comes back by itself:
            # `running` with a fresh heartbeat and handling events (it is the only worker
            # left) within 30 s of the heal (issue 16.1's target)
            publish(conn, generation, 5, "drill.slow", {"sleep_s": 0.0}, prefix="after")
            wait_for(lambda: counts(db_url) == {"done": 25}, 60, "handling after the heal")
            wait_for(lambda: running_fresh(db_url, cut_id), 60, "running after the heal")
            back_s = time.monotonic() - healed
            print(
                f"partition: the cut-off worker running and handling {back_s:.2f}s after the heal"
            )
            assert back_s < 30, cut_off.output()[-3000:]
            exactly_once(db_url, 25)
        finally:
            for p in (cut_off, peer):
                p.kill()
            fwd.close()


def running_fresh(url: str, wid: Any) -> bool:
    """The worker's registry row says `running` with a heartbeat under 5 s old."""
    return bool(
        scalar(
            url,
            "SELECT state = 'running' AND now() - last_seen < interval '5 seconds' "
            "FROM core.workers WHERE id = %s",
            (wid,),
        )
    )
