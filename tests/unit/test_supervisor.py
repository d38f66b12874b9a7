"""The supervisor with real child processes: restart with backoff, give up, never
restart a "cannot start" child, forward signals and escalate to SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from spectral_cli.supervisor import EXIT_CANNOT_START, Supervisor


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run_until_exit(sup: Supervisor, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while sup.exit_code is None:
        assert time.monotonic() < deadline, "supervisor did not finish"
        sup.tick()
        time.sleep(0.02)
    return sup.exit_code


def test_crashing_child_is_restarted_with_backoff_then_supervisor_gives_up(tmp_path: Path) -> None:
    """A child that keeps crashing is restarted with growing delays; past max_restarts in the
    window the supervisor stops its siblings and exits 1."""
    starts = tmp_path / "starts"
    crash = py(
        f"import time; open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n'); "
        "raise SystemExit(1)"
    )
    sleeper = py("import time; time.sleep(60)")
    sup = Supervisor(
        {"bad": crash, "good": sleeper},
        grace_s=2,
        max_restarts=3,
        window_s=60,
        backoff_base_s=0.1,
        backoff_cap_s=1,
    )
    assert run_until_exit(sup) == 1
    times = [float(x) for x in starts.read_text().split()]
    assert len(times) == 4  # first start + 3 restarts
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[-1] > gaps[0]  # exponential backoff
    assert all(c.proc is None for c in sup.children)  # the healthy sibling was stopped too


def test_cannot_start_exit_code_is_never_restarted(tmp_path: Path) -> None:
    """A child exiting with the reserved code 3 stops everything at once with exit 3."""
    starts = tmp_path / "starts"
    child = py(f"open({str(starts)!r}, 'a').write('x'); raise SystemExit({EXIT_CANNOT_START})")
    sup = Supervisor({"api": child, "workers": py("import time; time.sleep(60)")}, grace_s=2)
    assert run_until_exit(sup) == EXIT_CANNOT_START
    assert starts.read_text() == "x"


def test_sigterm_is_forwarded_and_a_stubborn_child_is_killed(tmp_path: Path) -> None:
    """SIGTERM reaches both children; one exits cleanly, the one ignoring TERM is killed
    after the grace period; the supervisor exits 0."""
    marker = tmp_path / "got-term"
    polite = py(
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').write('1'), "
        "sys.exit(0)))\n"
        "time.sleep(60)"
    )
    stubborn = py(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    )
    sup = Supervisor({"polite": polite, "stubborn": stubborn}, grace_s=1.0)
    sup.tick()
    time.sleep(1.0)  # let the children install their handlers
    procs = {c.name: c.proc for c in sup.children}
    sup.signals.append(signal.SIGTERM)
    started = time.monotonic()
    assert run_until_exit(sup) == 0
    assert marker.read_text() == "1"
    assert procs["polite"] is not None and procs["polite"].returncode == 0
    assert procs["stubborn"] is not None and procs["stubborn"].returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_signal_handler_only_enqueues() -> None:
    """The installed handler records the signal; the main loop acts on it later."""
    sup = Supervisor({"x": py("pass")})
    sup._enqueue(signal.SIGTERM, None)
    assert list(sup.signals) == [signal.SIGTERM] and sup.exit_code is None
    assert os.getpid() > 0


def test_children_do_not_receive_group_signals_directly(tmp_path: Path) -> None:
    """A terminal Ctrl-C or a cgroup-wide SIGTERM hits the supervisor's process group; the
    children live in their own groups, so each receives exactly one SIGTERM (forwarded by
    the supervisor) and a worker never mistakes it for a second "exit now" signal."""
    import subprocess

    log = tmp_path / "terms"
    child = (
        "import signal, sys, time\n"
        f"def h(*a):\n    open({str(log)!r}, 'a').write('x')\n    time.sleep(0.3)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, h)\n"
        "time.sleep(60)\n"
    )
    runner = (
        "import sys\nfrom spectral_cli.supervisor import Supervisor\n"
        f"sup = Supervisor({{'a': [sys.executable, '-c', {child!r}]}}, grace_s=5)\n"
        "sup.install_signal_handlers()\nraise SystemExit(sup.run())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", runner], start_new_session=True)
    time.sleep(1.5)  # supervisor and child up, handlers installed
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group, like systemd or a terminal
    assert proc.wait(20) == 0
    assert log.read_text() == "x"


def test_default_grace_exceeds_the_childrens_own_grace() -> None:
    """The supervisor escalates to SIGKILL only after the children's own stop budget
    (SPECTRAL_SHUTDOWN_GRACE_S) plus a margin; a value the children refuse falls back."""
    from spectral_cli.supervisor import default_grace

    assert default_grace({}) == 15.0
    assert default_grace({"SPECTRAL_SHUTDOWN_GRACE_S": "4"}) == 9.0
    for bad in ("x", "-1", "0", "nan", "inf"):
        assert default_grace({"SPECTRAL_SHUTDOWN_GRACE_S": bad}) == 15.0


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_supervisor_lines_are_structured_like_the_childrens(
    fmt: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor's lines carry the level and the UTC timestamp in the children's
    format (SPECTRAL_LOG_FORMAT json or console): they used to be bare JSON objects with
    neither, beside the children's structured lines under `spectral up`."""
    import re

    from spectral_cli import supervisor

    monkeypatch.setattr(supervisor, "_LOG_FORMAT", fmt)
    supervisor.log("supervisor.giving_up", child="api", code=3)
    supervisor.log("supervisor.child_started", child="api", pid=7)
    lines = capsys.readouterr().err.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    if fmt == "json":
        first, second = (json.loads(line) for line in lines)
        assert (first["event"], first["level"], first["code"]) == (
            "supervisor.giving_up",
            "error",
            3,
        )
        assert second["level"] == "info" and re.fullmatch(stamp, second["timestamp"])
    else:
        assert re.match(rf"{stamp} \[error\s*\] supervisor.giving_up\s+child=api code=3", lines[0])
        assert "[info" in lines[1] and "pid=7" in lines[1]
