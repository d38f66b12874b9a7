"""Two commits side by side on one server: drain and decide, paired rounds, rotated order.

    python bench/paired_commits.py --base bd89f0d                 # base vs the working tree
    python bench/paired_commits.py --base v1 --head v2 --rounds 6
    python bench/paired_commits.py --base bd89f0d --only drain

What runs (the "no measurable regression" check of a change):

* each commit is checked out in a detached worktree under ``$TMPDIR/spectral-paired/``
  (``--head`` defaults to this checkout as it is, uncommitted changes included);
* one embedded PostgreSQL, migrated by the *head* commit (forward-only migrations must keep
  the base commit's code working on it: expand/contract);
* **drain**: per round, each commit in turn (the order rotated every round) runs
  ``bench/_paired_drain_child.py`` with ``PYTHONPATH=<its tree>/src``: a fresh generation,
  ``--drain-n`` events published, ``ANALYZE``, the real consumer (4 lanes x batch 100) until
  all are handled.  Same N for both; history of earlier rounds stays in the table for both;
* **decide**: both commits' ``spectral-api`` apps serve at once on two ports (each through its
  own ``bench/bench_decide.py --serve``, the real ``create_app`` plus ``/bench/bare``) over
  the same tenant, module and approval; per round each is loaded in turn (order rotated)
  with ``POST /api/decide`` and ``POST /bench/bare`` (their order alternating too) by the
  load generator of ``bench/bench_decide.py``, with the server's CPU per request read from
  ``/proc`` and a warning for rounds where the load generator used about a whole core.

The summary prints every round and the median of the per-round ratios head/base (never the
best round).  A ratio near 1.00 with rounds on both sides of it is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_decide as bd  # noqa: E402  (the load generator and the setup are shared)


def worktree(rev: str) -> Path:
    """A detached checkout of ``rev`` (reused when it already exists)."""
    sha = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", rev], text=True).strip()
    path = Path(tempfile.gettempdir()) / "spectral-paired" / sha[:12]
    if not (path / "src").is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), sha],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def tree_env(tree: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    env["PYTHONPATH"] = str(tree / "src")
    env.update(extra or {})
    return env


def drain_once(tree: Path, label: str, uri: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "_paired_drain_child.py"), "--uri", uri, "--label", label]
        + ["--n", str(n)],
        env=tree_env(tree),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(
            f"drain {label} in {tree} failed ({out.returncode}):\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_server(tree: Path, url: str, generation: int, public: str) -> tuple[int, Any]:
    port = bd.free_port()
    env = tree_env(
        tree,
        {
            "SPECTRAL_DATABASE_URL": url,
            "SPECTRAL_GENERATION": str(generation),
            "SPECTRAL_OPERATOR_KEYS": public,
            "SPECTRAL_API_RATE": "1000000",
            "SPECTRAL_API_BURST": "1000000",
            "SPECTRAL_API_CONCURRENCY": "100000",
            "SPECTRAL_LOG_LEVEL": "warning",
            "BENCH_ACCESS_LOG": "0",
        },
    )
    script = tree / "bench" / "bench_decide.py"
    proc = subprocess.Popen([sys.executable, str(script), "--serve", str(port)], env=env)
    bd.wait_ready(port, proc)
    return port, proc


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", required=True, help="the commit to compare against")
    ap.add_argument("--head", default=None, help="default: this checkout as it is")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=["drain", "decide"], default=None)
    ap.add_argument("--drain-n", type=int, default=40000)
    ap.add_argument("--decide-seconds", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()

    trees = {"base": worktree(a.base), "head": worktree(a.head) if a.head else ROOT}
    # this process migrates and seeds with the head's code, whatever the environment's
    # installed copy of spectral is
    sys.path.insert(0, str(trees["head"] / "src"))
    from spectral_core.embedded import EmbeddedPostgres

    shas = {
        k: subprocess.check_output(
            ["git", "-C", str(t), "rev-parse", "--short", "HEAD"], text=True
        ).strip()
        for k, t in trees.items()
    }
    print(f"command: python {shlex.join(['bench/paired_commits.py', *sys.argv[1:]])}")
    print(f"base {shas['base']} ({trees['base']}), head {shas['head']} ({trees['head']})")
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="spectral-paired-pg-")))
    url = pg.start()
    servers: dict[str, Any] = {}
    drains: list[dict[str, dict[str, Any]]] = []
    decides: list[dict[str, dict[str, Any]]] = []
    try:
        generation, token, public = bd.prepare(url)  # head's migrations, tenant, module
        if a.only != "decide":
            for name, tree in trees.items():  # warm-up (imports, first plans), not counted
                drain_once(tree, f"warm-{name}", url, 2000)
        if a.only != "drain":
            for name, tree in trees.items():
                servers[name] = start_server(tree, url, generation, public)
            payloads = {
                "decide": bd.request_bytes("/api/decide", token, bd.BODY),
                "bare": bd.request_bytes("/bench/bare", None, bd.BODY),
            }
            for port, _ in servers.values():
                for payload in payloads.values():
                    bd.anyio.run(bd.load, port, payload, a.concurrency, 1.5, backend="asyncio")
        for r in range(a.rounds):
            order = ["base", "head"] if r % 2 == 0 else ["head", "base"]
            if a.only != "decide":
                row: dict[str, dict[str, Any]] = {}
                for name in order:
                    row[name] = drain_once(trees[name], f"{name}-{r}", url, a.drain_n)
                drains.append(row)
                print(
                    f"drain round {r + 1}: "
                    + ", ".join(f"{k} {v['rate']:,.0f}/s" for k, v in sorted(row.items())),
                    flush=True,
                )
            if a.only != "drain":
                drow: dict[str, dict[str, Any]] = {}
                for name in order:
                    port, proc = servers[name]
                    whats = list(payloads) if r % 2 == 0 else list(payloads)[::-1]
                    for what in whats:
                        payload = payloads[what]
                        drow[f"{name}:{what}"] = bd.measure(
                            port, proc.pid, payload, a.concurrency, a.decide_seconds
                        )
                decides.append(drow)
                print(
                    f"decide round {r + 1}: "
                    + ", ".join(f"{k} {v['rps']:,.0f}/s" for k, v in sorted(drow.items())),
                    flush=True,
                )
    finally:
        for _, proc in servers.values():
            proc.send_signal(signal.SIGTERM)
        for _, proc in servers.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.destroy()

    print(f"\n{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} CPUs")
    if drains:
        print(f"\ndrain, {a.drain_n:,} events, 4 lanes x batch 100, LISTEN on (events/s)")
        print("| round | base | head | head/base | client CPU us/event base / head |")
        print("|---|---|---|---|---|")
        ratios = []
        for i, row in enumerate(drains, 1):
            b, h = row["base"], row["head"]
            ratios.append(h["rate"] / b["rate"])
            print(
                f"| {i} | {b['rate']:,.0f} | {h['rate']:,.0f} | {ratios[-1]:.3f} | "
                f"{b['client_cpu_us_per_event']:.0f} / {h['client_cpu_us_per_event']:.0f} |"
            )
            if b["not_done"] or h["not_done"]:
                print(f"WARNING round {i}: rows not done base {b['not_done']} head {h['not_done']}")
        print(f"median head/base {med(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    if decides:
        print(f"\ndecide, concurrency {a.concurrency}, {a.decide_seconds:g} s per variant (req/s)")
        print(
            "| round | decide base | decide head | head/base | bare base | bare head | "
            "server CPU us/decide base / head |"
        )
        print("|---|---|---|---|---|---|---|")
        ratios, bare_ratios = [], []
        for i, d in enumerate(decides, 1):
            b, h = d["base:decide"], d["head:decide"]
            ratios.append(h["rps"] / b["rps"])
            bare_ratios.append(d["head:bare"]["rps"] / d["base:bare"]["rps"])
            print(
                f"| {i} | {b['rps']:,.0f} | {h['rps']:,.0f} | {ratios[-1]:.3f} | "
                f"{d['base:bare']['rps']:,.0f} | {d['head:bare']['rps']:,.0f} | "
                f"{b['cpu_us'] or 0:.0f} / {h['cpu_us'] or 0:.0f} |"
            )
            bad = {
                k: {s: n for s, n in v["statuses"].items() if s != 200}
                for k, v in d.items()
                if any(s != 200 for s in v["statuses"])
            }
            if bad:
                print(f"WARNING round {i}: non-200 answers {bad}")
            busy = {k: v["client_busy"] for k, v in d.items() if v.get("client_busy", 0) >= 0.9}
            if busy:
                print(
                    f"WARNING round {i}: client-bound (load generator's share of a core) "
                    + ", ".join(f"{k} {v:.0%}" for k, v in sorted(busy.items()))
                )
        print(
            f"median decide head/base {med(ratios):.3f} (min {min(ratios):.3f}, "
            f"max {max(ratios):.3f}); bare head/base {med(bare_ratios):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
