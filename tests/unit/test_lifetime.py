"""Process lifetime rules (ADR 0019): the shutdown plan fits the grace, and the hard exit
ends a real process that something else keeps alive."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from spectral_core.lifetime import ShutdownPlan


@pytest.mark.parametrize("grace", [0.5, 1.0, 4.0, 5.0, 10.0, 60.0])
def test_shutdown_plan_fits_the_grace(grace: float) -> None:
    """Work plus final part add up to the grace, each part is positive, and the hard exit
    comes only after the grace."""
    plan = ShutdownPlan(grace)
    assert plan.work_s > 0 and plan.final_s > 0
    assert plan.work_s + plan.final_s == pytest.approx(grace)
    assert plan.final_writes_s <= max(plan.final_s, 0.25)
    assert plan.hard_exit_s > grace


@pytest.mark.parametrize(
    "keeper",
    [
        # a non-daemon thread that never ends (the interpreter joins it at exit)
        "threading.Thread(target=time.sleep, args=(600,), name='stuck-worker').start()",
        # an exit handler that never returns
        "import atexit; atexit.register(time.sleep, 600)",
    ],
)
def test_hard_exit_ends_a_process_kept_alive_after_its_work(keeper: str) -> None:
    """Something keeps the process alive after main returned: the armed hard exit ends it
    with the intended code, and says what was still running."""
    code = (
        "import threading, time\n"
        "from spectral_core.lifetime import arm_hard_exit\n"
        f"{keeper}\n"
        "arm_hard_exit(0.5, code=7, reason='test')\n"
        "raise SystemExit(0)\n"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 7, out.stderr
    assert time.monotonic() - started < 20
    assert "process.forced_exit" in out.stderr + out.stdout


def test_hard_exit_never_keeps_a_process_alive() -> None:
    """An armed hard exit is a daemon thread: a process that finishes earlier exits at
    once with its own code."""
    code = (
        "from spectral_core.lifetime import arm_hard_exit\n"
        "arm_hard_exit(300, code=7, reason='test')\n"
        "raise SystemExit(5)\n"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 5, out.stderr
    assert time.monotonic() - started < 20
