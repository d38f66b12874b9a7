"""`spectral deploy drain` progress (issue 17.5): JSON lines per interval with --json or
when stdout is not a terminal, an in-place line on a terminal, and a final summary."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
from typing import Any

import psycopg

from spectral_cli._progress import DrainProgress
from spectral_core import Publisher, allocate_generation
from spectral_core.outbox import EventIn

from ..acceptance.procs import clean_env


def _drain(db_url: str, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "spectral_cli", "deploy", "drain", *args],
        env=clean_env(SPECTRAL_DATABASE_URL=db_url),
        **kw,
    )


def _backlog(db_url: str, n: int) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        g = allocate_generation(conn, "1.0.0")
        Publisher(g).publish_many(conn, [EventIn(topic="platform.record", payload={})] * n)
        return g


def _finish_gradually(db_url: str, steps: int, step_s: float) -> None:
    """Mark the pending rows done in ``steps`` slices, ``step_s`` apart."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        (total,) = conn.execute("SELECT count(*) FROM core.outbox").fetchone() or (0,)
        per = -(-total // steps)
        for _ in range(steps):
            time.sleep(step_s)
            conn.execute(
                "UPDATE core.outbox SET status = 'done', finished_at = now() WHERE id IN "
                "(SELECT id FROM core.outbox WHERE status = 'pending' ORDER BY id LIMIT %s)",
                (per,),
            )


def test_json_lines_per_interval_then_the_summary(db_url: str) -> None:
    """With --json, every stdout line is a JSON document: progress lines (remaining rows
    never growing here, a rate and an ETA once two counts are known), then the summary
    line with the same keys as before."""
    g = _backlog(db_url, 40)
    proc = _drain(
        db_url,
        "--generation",
        str(g),
        "--json",
        "--interval",
        "0.2",
        "--timeout",
        "60",
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the drain is counting: now the rows finish
    _finish_gradually(db_url, steps=8, step_s=0.4)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in (first + out).decode().splitlines()]
    *progress, summary = lines
    assert summary == {"generation": g, "drained": True, "pending": 0, "in_flight": 0}
    assert len(progress) >= 3
    assert all(p["event"] == "progress" and p["generation"] == g for p in progress)
    remaining = [p["remaining"] for p in progress]
    assert remaining[0] == 40 and remaining == sorted(remaining, reverse=True)
    assert any(p["rate_per_s"] and p["rate_per_s"] > 0 and p["eta_s"] is not None for p in progress)


def test_not_a_terminal_gets_json_progress_and_the_text_summary(db_url: str) -> None:
    """Without --json into a pipe: JSON progress lines, then the usual text summary (also
    when the wait times out: exit 1 with the counts)."""
    g = _backlog(db_url, 3)
    proc = _drain(
        db_url,
        "--generation",
        str(g),
        "--interval",
        "0.2",
        "--timeout",
        "1",
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    *progress, summary = out.decode().splitlines()
    assert progress and all(json.loads(p)["remaining"] == 3 for p in progress)
    assert summary == f"generation {g} not drained after 1s: 3 pending, 0 in flight"


def test_terminal_gets_one_line_rewritten_in_place(db_url: str) -> None:
    """On a terminal the progress is one line rewritten with carriage returns (pending,
    in flight, rate, ETA), ended before the summary line; no JSON."""
    g = _backlog(db_url, 20)
    leader, follower = pty.openpty()
    proc = _drain(db_url, "--generation", str(g), "--timeout", "60", stdout=follower)
    os.close(follower)
    chunks = [os.read(leader, 65536)]  # the drain is counting: now the rows finish
    _finish_gradually(db_url, steps=4, step_s=0.5)
    assert proc.wait(timeout=60) == 0
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    text = b"".join(chunks).decode()
    assert text.count("\rgeneration") >= 2
    assert f"generation {g}: 20 pending, 0 in flight" in text
    assert "ETA" in text and "{" not in text
    assert text.rstrip().splitlines()[-1] == f"generation {g} drained"


def test_rate_and_eta_follow_the_counts() -> None:
    """The rate is the fall of the remaining rows over the recent window and the ETA the
    remaining rows at that rate; none while the count does not fall."""
    now = [0.0]
    out = io.StringIO()
    p = DrainProgress(7, as_json=True, interval_s=0.0, out=out, clock=lambda: now[0])
    for t, pending in [(0, 100), (1, 90), (2, 80), (3, 80)]:
        now[0] = float(t)
        p(pending, 0)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["rate_per_s"] for d in docs] == [None, 10.0, 10.0, 6.7]
    assert [d["eta_s"] for d in docs] == [None, 9.0, 8.0, 12.0]
    now[0] = 30.0  # the window moved on: only the flat counts remain
    p(80, 0)
    now[0] = 31.0
    p(80, 0)
    last = json.loads(out.getvalue().splitlines()[-1])
    assert last["rate_per_s"] == 0.0 and last["eta_s"] is None
