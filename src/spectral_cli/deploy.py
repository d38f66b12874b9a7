"""``spectral deploy``: allocate a generation, see per-generation status, drain."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from spectral_core import Settings, allocate_generation
from spectral_core.db.budget import fleet_connections
from spectral_core.errors import ConfigError, MigrationError
from spectral_core.migrate import ledger_sets, migration_sets, plan
from spectral_core.outbox import drain, generation_status
from spectral_core.sql import query

from ._db import allocated, connect
from ._progress import DrainProgress


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deploy", help="deployment generations")
    verbs = p.add_subparsers(dest="deploy_verb", required=True, metavar="VERB")
    a = verbs.add_parser("allocate", help="allocate a new generation and print it")
    a.add_argument("--version", required=True, help="the version being deployed")
    a.add_argument("--note", default=None)
    a.set_defaults(run=allocate)
    s = verbs.add_parser(
        "status",
        help="per generation: outbox rows by status, workers and API processes by "
        "state, drained / draining / stranded",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--dir",
        action="append",
        default=[],
        dest="dirs",
        metavar="PATH",
        help="an app's migration directory to report on (repeatable; beside "
        "SPECTRAL_MIGRATION_DIRS)",
    )
    s.set_defaults(run=status)
    d = verbs.add_parser("drain", help="wait until a generation has no pending or in-flight rows")
    d.add_argument("--generation", type=int, required=True)
    d.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    d.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between two JSON progress lines (--json or stdout not a terminal; default 2)",
    )
    d.add_argument(
        "--json",
        action="store_true",
        help="one JSON progress line per interval, then the result as one JSON line",
    )
    d.set_defaults(run=drain_cmd)
    register_health(verbs)


def allocate(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        print(allocate_generation(conn, args.version, args.note))
    return 0


def migration_status(conn: Any, settings: Settings, dirs: list[str]) -> list[dict[str, Any]]:
    """Per migration set: applied, pending, newest applied; sets the ledger holds whose
    directory was not given are listed as unchecked."""
    sets = migration_sets([*settings.migration_dir_list, *dirs])
    out: list[dict[str, Any]] = []
    for s in sets:
        entry: dict[str, Any] = {"set": s.name, "directory": str(s.directory)}
        try:
            p = plan(conn, s.migrations, migration_set=s.name)
        except MigrationError as exc:
            entry.update(state="error", error=exc.message)
        else:
            entry.update(
                state="at head" if p.at_head else "pending",
                applied=len(p.applied),
                pending=[m.name for m in p.pending],
                head=p.deployed_through,
            )
        out.append(entry)
    given = {s.name for s in sets}
    for ls in ledger_sets(conn):
        if ls.name not in given:
            out.append(
                {
                    "set": ls.name,
                    "directory": None,
                    "state": "unchecked",
                    "applied": ls.applied,
                    "head": ls.head,
                }
            )
    return out


def status(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as conn:
        gens = generation_status(
            conn,
            stale_after_s=settings.worker_stale_after_s,
            retention_s=settings.worker_retention_s,
        )
        migrations = migration_status(conn, settings, args.dirs)
        connections = connection_budget(conn, settings, gens)
    if args.json:
        from .main import print_json

        print_json(
            {
                "generations": [g.as_dict() for g in gens],
                "migrations": migrations,
                "connections": connections,
            }
        )
        return 0
    print(
        f"{'gen':>4} {'version':<16} {'pending':>8} {'in_flight':>9} {'done':>8} {'dead':>6}  "
        f"{'turns pend/run/dead':<20} {'workers live/reconn/lost/exited':<32} "
        f"{'api live/reconn/lost/exited':<28} verdict"
    )
    for g in gens:
        d = g.as_dict()
        o, w, t, a = d["outbox"], d["workers"], d["turns"], d["api"]
        workers = f"{w['live']}/{w['reconnecting']}/{w['lost']}/{w['exited']}"
        api = f"{a['live']}/{a['reconnecting']}/{a['lost']}/{a['exited']}"
        turns = f"{t['pending']}/{t['running']}/{t['dead']}"
        print(
            f"{g.generation:>4} {g.version[:16]:<16} {o['pending']:>8} {o['in_flight']:>9} "
            f"{o['done']:>8} {o['dead']:>6}  {turns:<20} {workers:<32} {api:<28} {g.verdict}"
        )
    print()
    print(f"{'migration set':<24} {'applied':>7} {'head':>5}  state")
    for m in migrations:
        state = m["state"]
        if state == "pending":
            state = f"{len(m['pending'])} pending: {', '.join(m['pending'])}"
        elif state == "error":
            state = f"error: {m['error']}"
        elif state == "unchecked":
            state = "unchecked: directory not given (--dir, SPECTRAL_MIGRATION_DIRS)"
        print(f"{m['set'][:24]:<24} {m.get('applied', '-'):>7} {m.get('head', 0):>04}  {state}")
    print()
    print_connections(connections)
    return 0


def connection_budget(conn: Any, settings: Settings, gens: list[Any]) -> dict[str, Any]:
    """The live fleet's database connections (ADR 0035), assuming every process runs with
    this shell's settings, beside the server's limit and current use."""
    api = sum(g.api.get("live", 0) + g.api.get("reconnecting", 0) for g in gens)
    workers = sum(g.workers.get("live", 0) + g.workers.get("reconnecting", 0) for g in gens)
    out = fleet_connections(settings, api=api, workers=workers)
    row = conn.execute(query("server_connections")).fetchone()
    out["server"] = {"max_connections": row[0], "superuser_reserved": row[1], "in_use": row[2]}
    out["budget_per_process"] = settings.database_max_connections
    return out


def print_connections(c: dict[str, Any]) -> None:
    a, w, srv = c["per_api"], c["per_worker"], c["server"]
    print("connections (ADR 0035; every process assumed to run with these settings)")
    print(f"  per API process:    {a['total']:>4} = pool {a['pool']} + registry {a['heartbeat']}")
    print(
        f"  per worker process: {w['total']:>4} = pool {w['pool']} + heartbeat {w['heartbeat']}"
        f" + LISTEN {w['listen']} + checkpointer pool {w['checkpointer']}"
    )
    print(f"  live fleet: {c['formula']}")
    print(
        f"  total {c['total']} (server connections; through a transaction pooler those on "
        "SPECTRAL_DATABASE_URL are its clients, and the server sees the pooler's own pool)"
    )
    print(
        f"  server: max_connections {srv['max_connections']} "
        f"({srv['superuser_reserved']} reserved for superusers), {srv['in_use']} in use now"
    )
    if c["budget_per_process"] is not None:
        print(
            f"  budget per process (SPECTRAL_DATABASE_MAX_CONNECTIONS): {c['budget_per_process']}"
        )


def drain_cmd(args: argparse.Namespace, settings: Settings) -> int:
    if args.interval <= 0:
        raise ConfigError("--interval must be a positive number of seconds")
    with connect(settings) as conn:
        allocated(conn, args.generation)
        progress = DrainProgress(args.generation, as_json=args.json, interval_s=args.interval)
        try:
            ok, pending, in_flight = drain(
                conn, args.generation, timeout_s=args.timeout, on_poll=progress
            )
        finally:
            progress.close()
    doc = {"generation": args.generation, "drained": ok, "pending": pending}
    doc["in_flight"] = in_flight
    if ok:
        text = f"generation {args.generation} drained"
    else:
        text = (
            f"generation {args.generation} not drained after {args.timeout:g}s: "
            f"{pending} pending, {in_flight} in flight"
        )
    if args.json:
        # the summary is the last JSON line, after the progress lines
        print(msgspec.json.encode(doc).decode(), flush=True)
    else:
        print(text, flush=True)
    return 0 if ok else 1


def register_health(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    h = verbs.add_parser(
        "wait-healthy", help="go/no-go: wait until GET /health answers 200 (status pass or warn)"
    )
    h.add_argument("--url", required=True, help="base URL of the new generation's API")
    h.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    h.add_argument(
        "--generation",
        type=int,
        default=None,
        help="also require /health's releaseId to be this generation",
    )
    h.set_defaults(run=wait_healthy)


def wait_healthy(args: argparse.Namespace, settings: Settings) -> int:
    import json
    import time
    import urllib.error
    import urllib.request

    if args.generation is not None:
        with connect(settings) as conn:
            allocated(conn, args.generation)
    deadline = time.monotonic() + args.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(args.url.rstrip("/") + "/health", timeout=5) as resp:
                doc = json.loads(resp.read())
            release = str(doc.get("releaseId"))
            if args.generation is None or release == str(args.generation):
                print(f"go: {doc.get('status')} (generation {release})")
                return 0
            last = f"answering for generation {release}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            try:  # a 503's document says which check failed
                failing = sorted(
                    name
                    for name, entries in json.loads(exc.read()).get("checks", {}).items()
                    if entries and entries[0].get("status") == "fail"
                )
                if failing:
                    last += f" (failing: {', '.join(failing)})"
            except (OSError, ValueError, AttributeError):
                pass
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) else exc.reason
            last = (
                f"{args.url} unreachable: {reason or exc.reason} (is spectral-api running there?)"
            )
        except (OSError, ValueError) as exc:
            last = f"{args.url}/health: {exc}"
        time.sleep(0.5)
    print(f"no-go after {args.timeout:g}s: {last}", file=sys.stderr)
    return 1
