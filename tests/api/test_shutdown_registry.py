"""The API's last registry write at shutdown (``exited``, ADR 0032) is not lost to its own
heartbeat: a beat in flight when the shutdown begins shares the registry's connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from .conftest import Api


def test_a_beat_in_flight_at_shutdown_does_not_cost_the_exited_mark(
    api_factory: Callable[..., Api],
) -> None:
    """A heartbeat blocked in the server when the shutdown begins (here: a row lock held by
    another session, released 0.3 s into the shutdown) is cancelled and finished before the
    final write runs; the process's row then reads ``exited``, not ``running`` (which the
    fleet would count as live until the stale bound: seen once in CI)."""
    api = api_factory(heartbeat_interval_s=0.05)
    deadline = time.monotonic() + 10
    while not api.sql("SELECT 1 FROM core.api_processes WHERE state = 'running'"):
        assert time.monotonic() < deadline, "the API process never registered"
        time.sleep(0.02)
    with psycopg.connect(api.db_url) as locker:
        locker.execute("SELECT id FROM core.api_processes FOR UPDATE")
        time.sleep(0.3)  # the next beats wait on the lock: one is in flight
        blocked = api.sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%%api_processes%%'"
        )
        assert blocked == [(1,)], "no beat in flight: the setup cannot fail"
        release = threading.Timer(0.3, locker.rollback)
        release.start()
        api.server.stop()
        release.join()
    assert not api.server.thread.is_alive()
    assert api.sql("SELECT state FROM core.api_processes") == [("exited",)]
