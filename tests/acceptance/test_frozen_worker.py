"""A frozen worker must not stall recovery for its generation (issue 16.1): real
spectral-workers processes, one stopped with SIGSTOP in the middle of a handler
transaction, one SIGKILLed while holding claims."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core.outbox import generation_status

from .procs import Proc, scalar, start_workers, wait_for
from .test_workers_faults import SLOW, counts, exactly_once, publish

pytestmark = pytest.mark.slow

STALE_S = 3.0  # SPECTRAL_WORKER_STALE_AFTER_S in procs.FAST
#: the usual recovery bound: the stale bound and a few reaper intervals, with room for a
#: noisy machine (the same bound as the plain SIGKILL drill's)
BOUND_S = 15.0


def worker_id(url: str, proc: Proc) -> Any:
    return wait_for(
        lambda: scalar(url, "SELECT id FROM core.workers WHERE pid = %s", (proc.p.pid,)),
        30,
        "the worker's row",
    )


def held_by(url: str, wid: Any) -> int:
    return scalar(
        url,
        "SELECT count(*) FROM core.outbox WHERE status = 'in_flight' AND claimed_by = %s",
        (wid,),
    )


def test_a_frozen_worker_does_not_stall_recovery_of_a_killed_ones_claims(
    db_url: str, conn: psycopg.Connection[Any], generation: int, tmp_path: Path
) -> None:
    """Three workers of one generation hold claims: one is frozen with SIGSTOP in the middle
    of its handler transaction (its rows stay locked), the other is SIGKILLed.  A surviving
    worker re-pends the killed worker's claims within the usual bound although the frozen
    one keeps its transaction open (the reaper used to wait on the frozen worker's row
    locks for the whole freeze), terminates the frozen worker's server sessions so its rows
    are re-pended too, while it is still frozen, and `deploy status` shows both as lost.
    After the frozen worker resumes, every event has taken effect exactly once."""
    publish(conn, generation, 30, topic="drill.slow", payload={"sleep_s": 1.0})
    one_lane = {"SPECTRAL_OUTBOX_BATCH_SIZE": "5", "SPECTRAL_OUTBOX_LANES": "1", **SLOW}
    frozen = start_workers(db_url, generation, tmp_path / "frozen.log", **one_lane)
    killed = start_workers(db_url, generation, tmp_path / "killed.log", **one_lane)
    survivor = start_workers(db_url, generation, tmp_path / "survivor.log", **one_lane)
    procs = [frozen, killed, survivor]
    try:
        ids = [worker_id(db_url, p) for p in procs]
        frozen_id, killed_id = ids[0], ids[1]
        wait_for(lambda: all(held_by(db_url, w) == 5 for w in ids), 60, "every worker's claims")
        time.sleep(0.5)  # both are inside a handler's pg_sleep, their rows locked
        frozen.signal(signal.SIGSTOP)
        killed.kill()
        faulted = time.monotonic()

        wait_for(lambda: held_by(db_url, killed_id) == 0, BOUND_S + 10, "killed claims reaped")
        killed_s = time.monotonic() - faulted
        wait_for(lambda: held_by(db_url, frozen_id) == 0, BOUND_S + 10, "frozen claims reaped")
        frozen_s = time.monotonic() - faulted
        with psycopg.connect(db_url, autocommit=True) as c:
            status = {s.generation: s for s in generation_status(c, stale_after_s=STALE_S)}
        workers = status[generation].as_dict()["workers"]
        assert frozen.p.poll() is None  # still frozen, never resumed so far
        assert killed_s < BOUND_S, f"killed worker's claims re-pended after {killed_s:.1f}s"
        assert frozen_s < BOUND_S, f"frozen worker's claims re-pended after {frozen_s:.1f}s"
        assert workers["lost"] == 2 and workers["live"] == 1, workers
        assert "reaper.session_terminated" in survivor.output()

        frozen.signal(signal.SIGCONT)
        wait_for(lambda: counts(db_url) == {"done": 30}, 90, "drain")
        for p in (frozen, survivor):
            p.signal(signal.SIGTERM)
        assert survivor.wait(20) == 0
        frozen.wait(20)
        exactly_once(db_url, 30)
        print(f"claims re-pended: killed {killed_s:.2f}s, frozen {frozen_s:.2f}s")
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.signal(signal.SIGCONT)
            p.kill()
