"""``spectral-app``: starts ``spectral-api`` and ``spectral-workers`` as sibling processes.

Standard library only (gunicorn Arbiter / uvicorn Multiprocess shape):

* signal handlers only record the signal; the main loop acts on it;
* SIGTERM/SIGINT are forwarded to both children, escalating TERM -> grace -> KILL;
* a crashed child is restarted in its slot with bounded exponential backoff;
* more than ``max_restarts`` restarts within ``window_s`` -> stop everything, exit 1;
* a child exiting with the reserved "cannot start" code (3: bad settings, missing or
  unallocated generation) is never restarted: stop everything and exit 3.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Must equal spectral_core.errors.EXIT_CANNOT_START (a test checks it); duplicated so the
#: supervisor stays standard-library only.
EXIT_CANNOT_START = 3
EXIT_GAVE_UP = 1
#: The children's default SPECTRAL_SHUTDOWN_GRACE_S and the supervisor's margin over it.
CHILD_GRACE_S = 10.0
GRACE_MARGIN_S = 5.0

CHILDREN: dict[str, list[str]] = {
    "api": [sys.executable, "-m", "spectral_api"],
    "workers": [sys.executable, "-m", "spectral_workers"],
}


#: SPECTRAL_LOG_FORMAT of the environment the children get (set in ``main``)
_LOG_FORMAT = "json"
#: events that are not routine
_LEVELS = {
    "supervisor.child_exited": "warning",
    "supervisor.restarting": "warning",
    "supervisor.killing": "warning",
    "supervisor.giving_up": "error",
}


def _stamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def log(event: str, **kw: object) -> None:
    """One line on stderr in the children's format: the JSON of ``spectral_core.logging``
    (event, fields, level, UTC timestamp) or its console rendering; standard library only."""
    level = _LEVELS.get(event, "info")
    if _LOG_FORMAT == "console":
        fields = " ".join(f"{k}={v}" for k, v in {**kw, "process": "supervisor"}.items())
        line = f"{_stamp()} [{level:<9}] {event:<30} {fields}"
    else:
        doc = {"event": event, "process": "supervisor", **kw, "level": level}
        line = json.dumps({**doc, "timestamp": _stamp()})
    print(line, file=sys.stderr, flush=True)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: collections.deque[float] = field(default_factory=collections.deque)
    start_at: float | None = 0.0
    failures: int = 0


class Supervisor:
    def __init__(
        self,
        children: Mapping[str, list[str]],
        *,
        env: Mapping[str, str] | None = None,
        grace_s: float = 15.0,
        max_restarts: int = 5,
        window_s: float = 60.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 10.0,
    ) -> None:
        self.children = [Child(name, list(argv)) for name, argv in children.items()]
        self.env = dict(env) if env is not None else None
        self.grace_s = grace_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.signals: collections.deque[int] = collections.deque()
        self.exit_code: int | None = None

    # -- signals: handlers only enqueue -------------------------------------------
    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._enqueue)

    def _enqueue(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    # -- main loop ----------------------------------------------------------------------
    def run(self) -> int:
        log(
            "supervisor.starting",
            children=[c.name for c in self.children],
            pid=os.getpid(),
            grace_s=self.grace_s,
        )
        while self.exit_code is None:
            self.tick()
            time.sleep(0.05)
        return self.exit_code

    def tick(self) -> None:
        """One iteration: act on signals, reap children, (re)start due children."""
        while self.signals and self.exit_code is None:
            signum = self.signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                log("supervisor.stopping", signal=signal.Signals(signum).name)
                self.stop()
                self.exit_code = 0
                return
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and (code := child.proc.poll()) is not None:
                child.proc = None
                self._child_exited(child, code, now)
                if self.exit_code is not None:
                    return
            if child.proc is None and child.start_at is not None and now >= child.start_at:
                self._spawn(child)

    def _spawn(self, child: Child) -> None:
        # own process group: a terminal Ctrl-C or a cgroup-wide SIGTERM reaches only the
        # supervisor, which forwards exactly one SIGTERM (a second one means "exit now")
        # the child stops by itself if this process dies without forwarding a SIGTERM
        # (SIGKILL, OOM killer): it watches its parent pid (ADR 0022)
        env = dict(os.environ if self.env is None else self.env)
        env["SPECTRAL_PARENT_PID"] = str(os.getpid())
        child.proc = subprocess.Popen(child.argv, env=env, process_group=0)
        child.start_at = None
        log("supervisor.child_started", child=child.name, pid=child.proc.pid)

    def _child_exited(self, child: Child, code: int, now: float) -> None:
        log("supervisor.child_exited", child=child.name, code=code)
        if code == EXIT_CANNOT_START:
            log(
                "supervisor.giving_up",
                child=child.name,
                code=code,
                reason="child cannot start with this configuration; not restarting",
            )
            self.stop()
            self.exit_code = EXIT_CANNOT_START
            return
        child.restarts.append(now)
        while child.restarts and child.restarts[0] < now - self.window_s:
            child.restarts.popleft()
        if len(child.restarts) > self.max_restarts:
            log(
                "supervisor.giving_up",
                child=child.name,
                reason=f"{len(child.restarts)} restarts within {self.window_s:g}s",
            )
            self.stop()
            self.exit_code = EXIT_GAVE_UP
            return
        delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (len(child.restarts) - 1))
        child.start_at = now + delay
        log(
            "supervisor.restarting",
            child=child.name,
            in_s=round(delay, 2),
            restarts_in_window=len(child.restarts),
        )

    # -- shutdown: TERM, grace, KILL, reap ---------------------------------------------
    def stop(self) -> None:
        alive = [c for c in self.children if c.proc is not None]
        for c in alive:
            assert c.proc is not None
            try:
                c.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.grace_s
        for c in alive:
            assert c.proc is not None
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log("supervisor.killing", child=c.name, pid=c.proc.pid)
                c.proc.kill()
                c.proc.wait()
            log("supervisor.child_stopped", child=c.name, code=c.proc.returncode)
            c.proc = None
        for c in self.children:
            c.start_at = None


def default_grace(env: Mapping[str, str]) -> float:
    """The children stop within their own ``SPECTRAL_SHUTDOWN_GRACE_S`` (default 10);
    the supervisor waits that long plus 5 s before it escalates to SIGKILL.  A value the
    children will refuse (they exit 3) falls back to the default."""
    try:
        child_grace = float(env.get("SPECTRAL_SHUTDOWN_GRACE_S", CHILD_GRACE_S))
    except ValueError:
        child_grace = CHILD_GRACE_S
    if not 0 < child_grace < float("inf"):  # also false for NaN
        child_grace = CHILD_GRACE_S
    return child_grace + GRACE_MARGIN_S


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spectral-app",
        description="Run spectral-api and spectral-workers as supervised sibling processes.",
    )
    parser.add_argument(
        "--only",
        default="api,workers",
        help="comma-separated children to run (default: api,workers)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=default_grace(os.environ if env is None else env),
        help="seconds between TERM and KILL (default: the children's "
        "SPECTRAL_SHUTDOWN_GRACE_S + 5, i.e. 15)",
    )
    parser.add_argument("--max-restarts", type=int, default=5)
    parser.add_argument("--window", type=float, default=60.0, help="restart window in seconds")
    args = parser.parse_args(argv)
    global _LOG_FORMAT
    _LOG_FORMAT = (os.environ if env is None else env).get("SPECTRAL_LOG_FORMAT", "json")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHILDREN]
    if unknown or not names:
        parser.error(f"unknown child(ren): {', '.join(unknown) or '(none)'}")
    sup = Supervisor(
        {n: CHILDREN[n] for n in names},
        env=env,
        grace_s=args.grace,
        max_restarts=args.max_restarts,
        window_s=args.window,
    )
    sup.install_signal_handlers()
    return sup.run()


if __name__ == "__main__":
    raise SystemExit(main())
