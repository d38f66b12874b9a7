"""Two commits side by side on one server: drain and decide, paired rounds, rotated order.

    python bench/paired_commits.py --base bd89f0d                 # base vs the working tree
    python bench/paired_commits.py --base v1 --head v2 --rounds 6
    python bench/paired_commits.py --base bd89f0d --only drain
    python bench/paired_commits.py --base bd89f0d --sdk          # + head with the SDK on
    python bench/paired_commits.py --base bd89f0d --sdk --sdk-always  # + every span exported
    python bench/paired_commits.py --base HEAD --head HEAD --only drain \
        --base-sql "ALTER TABLE core.outbox SET (fillfactor = 100)" \
        --head-sql "ALTER TABLE core.outbox SET (fillfactor = 70)"   # one tree, two settings

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

* **publish** (only with ``--only publish``): per round, for 1 and 4 producers
  (``--publish-producers``) and for the caller's connection as psycopg makes it (statements
  prepared after 5 uses) and as behind a transaction pooler (nothing prepared), each commit
  in turn (order rotated) runs ``bench/_paired_publish_child.py``: ``--publish-n``
  single-event transactions per producer in a fresh generation, with the client's and the
  server's CPU per event.

* **sandbox** (only with ``--only sandbox``): per round each commit in turn runs
  ``bench/_paired_sandbox_child.py``: its ``WasmSandbox`` (default binding) calling the
  self-test module ``--sandbox-calls`` times on one thread, wall p50 / mean and CPU per call.

With ``--sdk`` a third contender, ``head+sdk``, runs the head's tree with the OpenTelemetry
SDK configured the way ``docs/reference/metrics.md`` tells users to (``SPECTRAL_OTLP_ENDPOINT``:
``spectral_core.tracing.configure`` installs a ``TracerProvider`` with a
``BatchSpanProcessor`` and the OTLP/HTTP exporter; the drain child also pushes the worker
counters with ``push_worker_metrics``), exporting to ``bench/_otlp_sink.py``, a local sink in
its own process that answers 200 and drops everything, with the sampler the docs recommend
for production (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``,
``OTEL_TRACES_SAMPLER_ARG=0.1``: :data:`SDK_SAMPLER`, ADR 0043).  With ``--sdk-always`` a
fourth, ``head+sdk-all``, is the same with the SDK's default sampler (every trace recorded
and exported: ``parentbased_always_on``).  They take their turn in the same rotated rounds
(their own servers for decide) and are reported separately: head+sdk/base and
head+sdk/head (and head+sdk-all/...) beside the plain head/base (metrics and tracing on, no
SDK).  The sink's
request and byte counts are printed at the end: the proof that spans were exported.

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

#: the sampler docs/reference/metrics.md recommends for production (``--sdk``)
SDK_SAMPLER = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
#: the SDK's default: every trace (``--sdk-always``)
SDK_ALWAYS = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}


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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECTRAL_", "OTEL_"))}
    env["PYTHONPATH"] = str(tree / "src")
    env.update(extra or {})
    return env


def run_child(script: str, args: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``args`` and ``env``; its last stdout line, as JSON."""
    out = subprocess.run(
        [sys.executable, str(HERE / script), *args], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{what} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def drain_once(
    tree: Path,
    label: str,
    uri: str,
    n: int,
    extra: dict[str, str] | None = None,
    pg_pid: int = 0,
    profile: str | None = None,
) -> dict[str, Any]:
    args = ["--uri", uri, "--label", label, "--n", str(n), "--pg-pid", str(pg_pid)]
    args += ["--profile", profile] if profile else []
    return run_child(
        "_paired_drain_child.py", args, tree_env(tree, extra), f"drain {label} in {tree}"
    )


def publish_once(
    tree: Path,
    label: str,
    uri: str,
    n: int,
    producers: int,
    prepare: str,
    pg_pid: int = 0,
) -> dict[str, Any]:
    args = ["--uri", uri, "--label", label, "--n", str(n), "--producers", str(producers)]
    args += ["--prepare", prepare, "--pg-pid", str(pg_pid)]
    return run_child("_paired_publish_child.py", args, tree_env(tree), f"publish {label} in {tree}")


def sandbox_once(tree: Path, calls: int) -> dict[str, Any]:
    return run_child(
        "_paired_sandbox_child.py", ["--calls", str(calls)], tree_env(tree), f"sandbox in {tree}"
    )


def start_server(
    tree: Path, url: str, generation: int, public: str, extra: dict[str, str] | None = None
) -> tuple[int, Any]:
    port = bd.free_port()
    env = tree_env(
        tree,
        {
            **(extra or {}),
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


def start_sink() -> tuple[str, subprocess.Popen[str]]:
    """The local OTLP/HTTP sink (``bench/_otlp_sink.py``) in its own process: its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_otlp_sink.py")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return f"http://127.0.0.1:{port}", proc


def sink_stats(endpoint: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(endpoint + "/stats", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def psycopg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def drain_table(drains: list[dict[str, dict[str, Any]]], head: str, base: str, n: int) -> None:
    print(f"\ndrain {head} vs {base}, {n:,} events, 4 lanes x batch 100, LISTEN on (events/s)")
    print(
        f"| round | {base} | {head} | {head}/{base} | client CPU us/event {base} / {head} | "
        f"server CPU us/event {base} / {head} | statements/batch {base} / {head} |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for i, row in enumerate(drains, 1):
        b, h = row[base], row[head]
        ratios.append(h["rate"] / b["rate"])
        print(
            f"| {i} | {b['rate']:,.0f} | {h['rate']:,.0f} | {ratios[-1]:.3f} | "
            f"{b['client_cpu_us_per_event']:.1f} / {h['client_cpu_us_per_event']:.1f} | "
            f"{b['server_cpu_us_per_event']:.1f} / {h['server_cpu_us_per_event']:.1f} | "
            f"{b['statements_per_batch']:.2f} / {h['statements_per_batch']:.2f} |"
        )
        if b["not_done"] or h["not_done"]:
            print(f"WARNING round {i}: rows not done {base} {b['not_done']} {head} {h['not_done']}")
    print(f"median {head}/{base} {med(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    for k in ("client_cpu_us_per_event", "server_cpu_us_per_event"):
        print(
            f"median {k} {base} {med([r[base][k] for r in drains]):.1f} "
            f"{head} {med([r[head][k] for r in drains]):.1f}"
        )
    for name in (base, head):
        print(f"\n{name}: top-level statements per batch (last round; mean us)")
        for q, per_batch, us in drains[-1][name]["statements"][:12]:
            print(f"  {per_batch:7.2f}  {us:8.1f}  {q}")


def publish_table(publishes: list[dict[str, dict[str, Any]]], head: str, base: str, n: int) -> None:
    configs = sorted({k.split("|", 1)[1] for k in publishes[0]})
    print(f"\npublish {head} vs {base}, {n:,} single-event transactions per producer (events/s)")
    print(
        f"| configuration | {base} | {head} | {head}/{base} (min-max) | client CPU us/event "
        f"{base} / {head} | server CPU us/event {base} / {head} |"
    )
    print("|---|---|---|---|---|---|")
    for c in configs:
        b = [row[f"{base}|{c}"] for row in publishes]
        h = [row[f"{head}|{c}"] for row in publishes]
        ratios = [y["rate"] / x["rate"] for x, y in zip(b, h, strict=True)]
        print(
            f"| {c} | {med([x['rate'] for x in b]):,.0f} | {med([y['rate'] for y in h]):,.0f} | "
            f"{med(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | "
            f"{med([x['client_cpu_us_per_event'] for x in b]):.1f} / "
            f"{med([y['client_cpu_us_per_event'] for y in h]):.1f} | "
            f"{med([x['server_cpu_us_per_event'] for x in b]):.1f} / "
            f"{med([y['server_cpu_us_per_event'] for y in h]):.1f} |"
        )


def sandbox_table(
    sandboxes: list[dict[str, dict[str, Any]]], head: str, base: str, calls: int
) -> None:
    print(f"\nsandbox {head} vs {base}, {calls:,} calls of the self-test module per round (us)")
    print(f"| round | p50 {base} / {head} | mean {base} / {head} | CPU per call {base} / {head} |")
    print("|---|---|---|---|")
    for i, row in enumerate(sandboxes, 1):
        b, h = row[base], row[head]
        print(
            f"| {i} | {b['p50_us']:.1f} / {h['p50_us']:.1f} | {b['mean_us']:.1f} / "
            f"{h['mean_us']:.1f} | {b['cpu_us']:.1f} / {h['cpu_us']:.1f} |"
        )
    for k in ("p50_us", "mean_us", "cpu_us"):
        diffs = [row[head][k] - row[base][k] for row in sandboxes]
        print(
            f"median {k} {base} {med([r[base][k] for r in sandboxes]):.1f}, "
            f"{head} {med([r[head][k] for r in sandboxes]):.1f}; median of per-round "
            f"{head} - {base} {med(diffs):+.1f} (min {min(diffs):+.1f}, max {max(diffs):+.1f})"
        )


def decide_table(
    decides: list[dict[str, dict[str, Any]]], head: str, base: str, a: argparse.Namespace
) -> None:
    print(
        f"\ndecide {head} vs {base}, concurrency {a.concurrency}, {a.decide_seconds:g} s per "
        "variant (req/s)"
    )
    print(
        f"| round | decide {base} | decide {head} | {head}/{base} | bare {base} | bare {head} | "
        f"server CPU us/decide {base} / {head} |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios, bare_ratios = [], []
    cpu_b: list[float] = []
    cpu_h: list[float] = []
    for i, d in enumerate(decides, 1):
        b, h = d[f"{base}:decide"], d[f"{head}:decide"]
        ratios.append(h["rps"] / b["rps"])
        if b["cpu_us"] and h["cpu_us"]:
            cpu_b.append(b["cpu_us"])
            cpu_h.append(h["cpu_us"])
        bare_ratios.append(d[f"{head}:bare"]["rps"] / d[f"{base}:bare"]["rps"])
        print(
            f"| {i} | {b['rps']:,.0f} | {h['rps']:,.0f} | {ratios[-1]:.3f} | "
            f"{d[f'{base}:bare']['rps']:,.0f} | {d[f'{head}:bare']['rps']:,.0f} | "
            f"{b['cpu_us'] or 0:.0f} / {h['cpu_us'] or 0:.0f} |"
        )
        mine = {k: v for k, v in d.items() if k.split(":")[0] in (base, head)}
        bad = {
            k: {s: n for s, n in v["statuses"].items() if s != 200}
            for k, v in mine.items()
            if any(s != 200 for s in v["statuses"])
        }
        if bad:
            print(f"WARNING round {i}: non-200 answers {bad}")
        busy = {k: v["client_busy"] for k, v in mine.items() if v.get("client_busy", 0) >= 0.9}
        if busy:
            print(
                f"WARNING round {i}: client-bound (load generator's share of a core) "
                + ", ".join(f"{k} {v:.0%}" for k, v in sorted(busy.items()))
            )
    print(
        f"median decide {head}/{base} {med(ratios):.3f} (min {min(ratios):.3f}, "
        f"max {max(ratios):.3f}); bare {head}/{base} {med(bare_ratios):.3f}"
    )
    if cpu_b:  # the reading least exposed to the box's other load
        diffs = [h - b for b, h in zip(cpu_b, cpu_h, strict=True)]
        print(
            f"server CPU us/decide: median {base} {med(cpu_b):.0f}, {head} {med(cpu_h):.0f}; "
            f"median of per-round {head} - {base} {med(diffs):+.1f} "
            f"(min {min(diffs):+.1f}, max {max(diffs):+.1f})"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", required=True, help="the commit to compare against")
    ap.add_argument("--head", default=None, help="default: this checkout as it is")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--only",
        choices=["drain", "decide", "publish", "sandbox"],
        default=None,
        help="default: drain and decide (publish and sandbox run only when asked)",
    )
    ap.add_argument("--drain-n", type=int, default=40000)
    ap.add_argument("--decide-seconds", type=float, default=4.0)
    ap.add_argument("--publish-n", type=int, default=2000, help="events per producer")
    ap.add_argument("--sandbox-calls", type=int, default=5000, help="calls per round")
    ap.add_argument("--publish-producers", default="1,4", help="producer counts, comma separated")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument(
        "--profile-dir", default=None, help="cProfile each drain into this folder (slows it)"
    )
    ap.add_argument(
        "--sdk",
        action="store_true",
        help="a third contender, head+sdk: the head with the OpenTelemetry SDK configured as "
        "the docs tell users (SPECTRAL_OTLP_ENDPOINT: BatchSpanProcessor + OTLP/HTTP exporter, "
        "and the workers' counters pushed), exporting to a local sink that drops everything; "
        "the recommended sampler: parentbased_traceidratio 0.1",
    )
    ap.add_argument(
        "--sdk-always",
        action="store_true",
        help="with --sdk: a fourth contender, head+sdk-all, with the SDK's default sampler "
        "(every span recorded and exported)",
    )
    ap.add_argument(
        "--base-sql",
        default="",
        help="SQL run on the server before each of the base's drains (a storage setting to "
        "compare on one tree, say)",
    )
    ap.add_argument("--head-sql", default="", help="the same, before each of the head's drains")
    a = ap.parse_args()

    head_tree = worktree(a.head) if a.head else ROOT
    trees = {"base": worktree(a.base), "head": head_tree}
    extras: dict[str, dict[str, str]] = {"base": {}, "head": {}}
    sink: subprocess.Popen[str] | None = None
    if a.sdk:
        endpoint, sink = start_sink()
        trees["head+sdk"] = head_tree
        extras["head+sdk"] = {"SPECTRAL_OTLP_ENDPOINT": endpoint, **SDK_SAMPLER}
        if a.sdk_always:
            trees["head+sdk-all"] = head_tree
            extras["head+sdk-all"] = {"SPECTRAL_OTLP_ENDPOINT": endpoint, **SDK_ALWAYS}
    names = list(trees)
    # this process migrates and seeds with the head's code, whatever the environment's
    # installed copy of spectral is
    sys.path.insert(0, str(head_tree / "src"))
    from spectral_core.embedded import EmbeddedPostgres

    shas = {
        k: subprocess.check_output(
            ["git", "-C", str(t), "rev-parse", "--short", "HEAD"], text=True
        ).strip()
        for k, t in trees.items()
    }
    print(f"command: python {shlex.join(['bench/paired_commits.py', *sys.argv[1:]])}")
    print(", ".join(f"{k} {shas[k]} ({trees[k]})" for k in names))
    for name, sql in (("base", a.base_sql), ("head", a.head_sql)):
        if sql:
            print(f"{name} before each drain: {sql}")
    for name in ("head+sdk", "head+sdk-all"):
        if name in extras:
            print(f"{name}: " + " ".join(f"{k}={v}" for k, v in extras[name].items()))
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="spectral-paired-pg-")))
    url = pg.start()
    # pg_stat_statements counts the statements (round trips) of each drain
    with psycopg_connect(url) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    pg.stop()
    url = pg.start()
    with psycopg_connect(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pg_pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    run_drain, run_decide = a.only in (None, "drain"), a.only in (None, "decide")
    run_publish, run_sandbox = a.only == "publish", a.only == "sandbox"
    servers: dict[str, Any] = {}
    drains: list[dict[str, dict[str, Any]]] = []
    publishes: list[dict[str, dict[str, Any]]] = []
    sandboxes: list[dict[str, dict[str, Any]]] = []
    decides: list[dict[str, dict[str, Any]]] = []
    exported: dict[str, Any] = {}
    try:
        generation, token, public = bd.prepare(url)  # head's migrations, tenant, module
        if run_drain:
            for name in names:  # warm-up (imports, first plans), not counted
                drain_once(trees[name], f"warm-{name}", url, 2000, extras[name])
        if run_decide:
            for name in names:
                servers[name] = start_server(trees[name], url, generation, public, extras[name])
            payloads = {
                "decide": bd.request_bytes("/api/decide", token, bd.BODY),
                "bare": bd.request_bytes("/bench/bare", None, bd.BODY),
            }
            for port, _ in servers.values():
                for payload in payloads.values():
                    bd.anyio.run(bd.load, port, payload, a.concurrency, 1.5, backend="asyncio")
        for r in range(a.rounds):
            k = r % len(names)  # rotated: every contender goes first in turn
            order = names[k:] + names[:k]
            if run_sandbox:
                sandboxes.append(
                    {name: sandbox_once(trees[name], a.sandbox_calls) for name in order}
                )
                print(f"sandbox round {r + 1} done", flush=True)
            if run_publish:
                prow: dict[str, dict[str, Any]] = {}
                for producers in (int(x) for x in a.publish_producers.split(",")):
                    for prepare in ("default", "none"):
                        config = f"{producers} producer(s), prepare {prepare}"
                        for name in order:
                            prow[f"{name}|{config}"] = publish_once(
                                trees[name],
                                f"{name}-{r}",
                                url,
                                a.publish_n,
                                producers,
                                prepare,
                                pg_pid,
                            )
                publishes.append(prow)
                print(f"publish round {r + 1} done", flush=True)
            if run_drain:
                row: dict[str, dict[str, Any]] = {}
                for name in order:
                    profile = (
                        str(Path(a.profile_dir) / f"{name}-{r}.prof") if a.profile_dir else None
                    )
                    setup = {"base": a.base_sql, "head": a.head_sql}.get(name)
                    if setup:
                        with psycopg_connect(url) as conn:
                            conn.execute(setup)
                    row[name] = drain_once(
                        trees[name], f"{name}-{r}", url, a.drain_n, extras[name], pg_pid, profile
                    )
                drains.append(row)
                print(
                    f"drain round {r + 1}: "
                    + ", ".join(f"{k} {row[k]['rate']:,.0f}/s" for k in order),
                    flush=True,
                )
            if run_decide:
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
                    + ", ".join(f"{k} {v['rps']:,.0f}/s" for k, v in drow.items()),
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
        if sink is not None:
            try:  # after the servers' shutdown flushed their last spans
                exported = sink_stats(extras["head+sdk"]["SPECTRAL_OTLP_ENDPOINT"])
            finally:
                sink.terminate()
                sink.wait(10)
        pg.destroy()

    print(f"\n{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} CPUs")
    pairs = [("head", "base")]
    for name in ("head+sdk", "head+sdk-all"):
        if name in trees:
            pairs += [(name, "base"), (name, "head")]
    for head, base in pairs:
        if drains:
            drain_table(drains, head, base, a.drain_n)
        if publishes:
            publish_table(publishes, head, base, a.publish_n)
        if sandboxes:
            sandbox_table(sandboxes, head, base, a.sandbox_calls)
        if decides:
            decide_table(decides, head, base, a)
    if a.sdk:
        print(f"\nOTLP sink received (head+sdk and head+sdk-all exported): {json.dumps(exported)}")
        if not exported.get("/v1/traces", {}).get("requests"):
            print("WARNING: the sink received no traces: head+sdk did not export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
