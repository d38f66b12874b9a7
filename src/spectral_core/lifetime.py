"""Process lifetime rules shared by the entrypoints (ADR 0022).

* :class:`ShutdownPlan` splits ``SPECTRAL_SHUTDOWN_GRACE_S`` (SIGTERM to exit) into the
  time in-flight work may take and the time left for the final writes and closing pools.
* :func:`watch_parent` makes a supervised child notice that its supervisor is gone
  (its parent pid changed) and stop as if it had received SIGTERM.
* :func:`arm_hard_exit` is the last resort: a daemon thread that ends the process with
  ``os._exit`` at a deadline, whatever keeps it alive (a stuck executor thread, a
  non-daemon thread, an exit handler, a pool waiting on a dead server).

Standard library only (threads, signals, ``os``): it must work when the event loop is
blocked and after it has ended.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import structlog

__all__ = [
    "LINGER_S",
    "ShutdownPlan",
    "arm_hard_exit",
    "parent_gone",
    "watch_parent",
]

log = structlog.get_logger("spectral.lifetime")

#: After a process logged its "stopped" line it has this long to be gone.
LINGER_S = 2.0
#: Past the grace period, the hard exit waits this much more (the normal path is bounded
#: by the grace; this only catches what is stuck).
HARD_EXIT_MARGIN_S = 1.0


@dataclass(frozen=True, slots=True)
class ShutdownPlan:
    """How a process spends ``grace_s`` seconds between SIGTERM and its exit.

    ``work_s`` for in-flight work (batches, turns, HTTP requests), then ``final_s`` for
    the final writes (releases, ``exited``) and closing the pools, each bounded, so the
    whole stop fits in the grace whatever the database does.
    """

    grace_s: float

    @property
    def final_s(self) -> float:
        """Time reserved at the end of the grace for final writes and closing."""
        return min(3.0, self.grace_s / 2)

    @property
    def work_s(self) -> float:
        """Time in-flight work may take after SIGTERM."""
        return self.grace_s - self.final_s

    @property
    def final_writes_s(self) -> float:
        """Bound of the final writes (they run side by side); the rest closes the pools."""
        return max(0.25, self.final_s - 1.0)

    @property
    def hard_exit_s(self) -> float:
        """When, after SIGTERM, the process is ended however far its stop got."""
        return self.grace_s + HARD_EXIT_MARGIN_S


def _lingering_threads() -> list[str]:
    me = threading.current_thread()
    return [t.name for t in threading.enumerate() if t is not me and t.is_alive()]


def arm_hard_exit(after_s: float, *, code: int, reason: str) -> threading.Timer:
    """End the process with ``os._exit(code)`` in ``after_s`` seconds unless it ended.

    The timer is a daemon thread: it never keeps the process alive itself, and it runs
    while the interpreter waits for non-daemon threads and runs exit handlers.  Arming
    several is fine (the earliest wins).  Entrypoints only: never call this in a library
    or test process.
    """

    def fire() -> None:
        try:
            log.error(
                "process.forced_exit",
                reason=reason,
                after_s=after_s,
                code=code,
                threads=_lingering_threads(),
            )
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

    timer = threading.Timer(after_s, fire)
    timer.daemon = True
    timer.name = "spectral-hard-exit"
    timer.start()
    return timer


def parent_gone(expected_ppid: int) -> bool:
    """True when this process's parent is no longer ``expected_ppid`` (it died and the
    process was re-parented to init or a subreaper).  Race-free: a parent that died
    before the first check is detected too."""
    return os.getppid() != expected_ppid


def watch_parent(
    expected_ppid: int | None, *, interval_s: float = 0.5, process: str = "process"
) -> threading.Thread | None:
    """When ``expected_ppid`` is set, poll ``os.getppid()`` from a daemon thread and send
    this process SIGTERM (its ordinary graceful stop) once the parent is gone.

    Returns the thread (``None`` when there is no parent to watch).
    """
    if expected_ppid is None:
        return None
    ppid = expected_ppid

    def poll() -> None:
        while not parent_gone(ppid):
            time.sleep(interval_s)
        log.warning(f"{process}.parent_gone", expected_ppid=ppid, ppid=os.getppid())
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=poll, name="spectral-parent-watch", daemon=True)
    thread.start()
    return thread
