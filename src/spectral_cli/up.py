"""``spectral up``: the whole system locally.

Without ``SPECTRAL_DATABASE_URL`` it starts the embedded PostgreSQL (data in
``.spectral/pg``, reused across runs, stopped on exit, and by a guardian process if
``spectral up`` is killed); then it applies migrations, allocates a generation and runs
the supervisor (API + workers) until Ctrl-C.  The supervisor runs in this process, so
the API and the workers stop by themselves if it dies (ADR 0022).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import subprocess
from pathlib import Path

from spectral_core import Settings, allocate_generation
from spectral_core.embedded import EmbeddedPostgres
from spectral_core.migrate import migration_sets, run_sets

from . import env as env_cmd
from . import supervisor
from ._db import connect, embedded_root


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        help="run the whole system locally (embedded PostgreSQL unless "
        "SPECTRAL_DATABASE_URL is set)",
    )
    p.add_argument("--version", default=None, help="version label for the new generation")
    p.add_argument(
        "--no-run", action="store_true", help="prepare (database, migrations, generation) and exit"
    )
    p.set_defaults(run=run)


def available_children() -> list[str]:
    return [
        name
        for name in ("api", "workers")
        if importlib.util.find_spec(f"spectral_{name}.main") is not None
    ]


def local_operator_key(settings: Settings) -> tuple[Path, str]:
    """The project's own operator key pair (``<SPECTRAL_HOME_DIR>/operator.key``, the file
    ``spectral modules keygen`` and ``modules approve`` use), created on first use; returns
    the file and its ``SPECTRAL_OPERATOR_KEYS`` entry.  The private key never leaves it."""
    from spectral_core.modules.approval import (  # the api extra (cryptography)
        generate_operator_key,
        key_id_for,
        load_private_key,
        public_key_b64,
        save_private_key,
    )

    path = Path(settings.home_dir) / "operator.key"
    if path.exists():
        public = public_key_b64(load_private_key(path).public_key())
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        pem, public = generate_operator_key()
        save_private_key(path, pem)
    return path, f"{key_id_for(base64.b64decode(public))}:{public}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    embedded: EmbeddedPostgres | None = None
    guardian: subprocess.Popen[bytes] | None = None
    try:
        if not settings.database_url:
            embedded = EmbeddedPostgres(embedded_root(settings))
            # the guardian first: a `spectral up` killed during the start leaves no server
            guardian = embedded.guard(drain_s=supervisor.default_grace(os.environ))
            url = embedded.start()
            print(f"embedded PostgreSQL running (data in {embedded.root})")
            settings = settings.replace(database_url=url)
        with connect(settings) as conn:
            # spectral's own set, then the apps' (SPECTRAL_MIGRATION_DIRS), as `migrate` does
            done = run_sets(conn, migration_sets(settings.migration_dir_list))
            applied = [m for _, ms in done for m in ms]
            version = args.version or settings.running_version
            generation = allocate_generation(conn, version, "spectral up")
        print(f"migrations: {len(applied)} applied, at head")
        print(f"generation: {generation} (version {version})")
        env = dict(
            os.environ,
            SPECTRAL_DATABASE_URL=settings.require_database_url(),
            SPECTRAL_GENERATION=str(generation),
        )
        key_file, operator_key = local_operator_key(settings)
        if not settings.operator_keys:  # the local key makes every /health check pass
            env["SPECTRAL_OPERATOR_KEYS"] = operator_key
        if settings.log_format == "json" and "SPECTRAL_LOG_FORMAT" not in os.environ:
            env["SPECTRAL_LOG_FORMAT"] = "console"
        children = available_children()
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        if "api" in children:
            print(f"API: {api_url}/health")
            # the operator console (ADR 0038): log in with an operator API key
            # (`spectral tenants keys create ORG --operator`)
            print(
                f"console: {api_url}/console/ (log in with an operator API key: "
                "`spectral tenants keys create ORG --operator`)"
            )
        state = {
            "database_url": settings.require_database_url(),
            "generation": generation,
            "api_url": api_url if "api" in children else None,
        }
        print(f"database: {state['database_url']}")
        print('in a second terminal, point your shell at it (or run `eval "$(spectral env)"`):')
        print("  " + env_cmd.exports(state).replace("\n", "\n  "))
        if not settings.operator_keys:
            print(
                f"operator key: {key_file} (local; its public half is the API's "
                "SPECTRAL_OPERATOR_KEYS). Approve a pinned module with it:\n"
                "  spectral modules approve --org ORG --domain D --action A "
                "--world-model-version V"
            )
        print("try it: in another shell, `spectral demo`; stop with Ctrl-C")
        if args.no_run:
            return 0
        env_cmd.write_state(settings, state)
        return supervisor.main(["--only", ",".join(children)], env=env)
    finally:
        env_cmd.clear_state(settings)
        if embedded is not None:
            embedded.stop()
            print("embedded PostgreSQL stopped")
        if guardian is not None:
            guardian.terminate()
            guardian.wait()
