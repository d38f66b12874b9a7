"""The app container file (infra/docker/app.Dockerfile) and its build context.

No Docker engine runs here, so the Dockerfile is parsed and its properties asserted; the
HEALTHCHECK command itself is run against a local HTTP server.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from spectral_core import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "docker" / "app.Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

Instruction = tuple[str, str]  # (INSTRUCTION, arguments with continuations joined)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments and blank lines dropped, ``\\`` continuations joined
    (comment lines inside a continuation are dropped, as the Docker parser does)."""
    out: list[Instruction] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not buf, "dangling line continuation at end of file"
    return out


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def all_of(name: str) -> list[str]:
    return [args for word, args in INSTRUCTIONS if word == name]


def index_of(name: str) -> int:
    idx = [i for i, (word, _) in enumerate(INSTRUCTIONS) if word == name]
    assert idx, f"no {name} instruction"
    return idx[-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_vars() -> dict[str, str]:
    """Every ENV assignment (``K=V ...`` and the legacy ``K V`` form), last one wins."""
    env: dict[str, str] = {}
    for args in all_of("ENV"):
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0]:
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for tok in tokens:
            key, _, value = tok.partition("=")
            env[key] = value
    return env


def healthcheck_argv() -> list[str]:
    (args,) = all_of("HEALTHCHECK")
    options, sep, cmd = args.partition("CMD ")
    assert sep, "HEALTHCHECK must be HEALTHCHECK [OPTIONS] CMD ..."
    assert "NONE" not in options.upper()
    return exec_form(cmd.strip())


def test_base_image_is_python_311_slim() -> None:
    """The image is built on the slim Python 3.11 base (the project's minimum Python, no
    compilers or curl baked in); a single FROM, so no stage can leak a different base."""
    froms = all_of("FROM")
    assert len(froms) == 1
    image = froms[0].split()[0]
    assert image.startswith("python:3.11") and image.endswith("-slim"), image
    assert INSTRUCTIONS[0][0] == "FROM"


def test_project_installed_with_api_and_workers_extras_without_pip_cache() -> None:
    """The project is installed from the build context with the api and workers extras (so
    both children of the supervisor can start) and pip's cache is not kept in the layer."""
    runs = [r for r in all_of("RUN") if "pip install" in r]
    assert runs, "no pip install"
    assert any("--no-cache-dir" in r and "'.[api,workers]'" in r for r in runs), runs


def test_copied_sources_exist_and_are_not_dockerignored() -> None:
    """Every COPY source exists in the repository and is not excluded by .dockerignore, so
    the build context really contains what the install needs (pyproject, README, src)."""
    ignore = [
        p.strip().rstrip("/")
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    assert not any(p.startswith("!") for p in ignore), "negations are not modelled here"
    sources: list[str] = []
    for args in all_of("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        assert not any(p.startswith("--from") for p in args.split()), args
        sources += parts[:-1]
    assert {"pyproject.toml", "README.md", "src/"} <= set(sources)
    for src in sources:
        rel = src.rstrip("/")
        assert (ROOT / rel).exists(), f"COPY source {src} missing"
        prefixes = [rel] + [str(p) for p in Path(rel).parents if str(p) != "."]
        for pattern in ignore:
            pat = pattern.removeprefix("**/")
            hit = [p for p in prefixes if fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pat)]
            assert not hit, f"{src} is excluded by .dockerignore pattern {pattern!r}"


def test_dockerignore_keeps_vcs_local_state_and_caches_out_of_the_context() -> None:
    """.git, the local embedded database (.spectral), bytecode caches, tests and bench
    results never enter the build context (size, secrets, reproducibility)."""
    patterns = {p.strip().rstrip("/") for p in DOCKERIGNORE.read_text().splitlines()}
    for required in (".git", ".spectral", "**/__pycache__", "tests", "bench"):
        assert required in patterns, required


def test_runs_as_non_root_user_from_before_the_entrypoint() -> None:
    """The supervisor and its children never run as root: the last USER before ENTRYPOINT
    names a non-root user (numeric, so runAsNonRoot can be verified) and no later
    instruction switches back."""
    users = [(i, args) for i, (word, args) in enumerate(INSTRUCTIONS) if word == "USER"]
    entry = index_of("ENTRYPOINT")
    before = [u for i, u in users if i < entry]
    assert before, "no USER before ENTRYPOINT"
    user = before[-1].split(":")[0]
    assert user not in {"root", "0"}, before[-1]
    assert user.isdigit() and int(user) >= 1000, f"use a numeric non-system uid: {user}"
    assert all(i < entry for i, _ in users), "USER changed after ENTRYPOINT"


def test_entrypoint_is_exec_form_running_the_supervisor() -> None:
    """ENTRYPOINT is the JSON exec form (no /bin/sh in between, so `docker stop`'s SIGTERM
    reaches the supervisor as PID 1) and runs `spectral-app`, the console script that is
    spectral_cli.supervisor:main, or its shim `python shims/app_supervisor.py`."""
    argv = exec_form(all_of("ENTRYPOINT")[-1])
    assert argv[0] not in {"sh", "/bin/sh", "bash", "/bin/bash"}
    assert argv == ["spectral-app"] or argv[-1].endswith("shims/app_supervisor.py"), argv
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["spectral-app"] == "spectral_cli.supervisor:main"
    for args in all_of("CMD"):
        assert args.startswith("["), "CMD (supervisor arguments) must be exec form too"


def test_stop_signal_is_sigterm() -> None:
    """`docker stop` sends SIGTERM, which the supervisor forwards to both children (TERM,
    grace, then KILL)."""
    assert all_of("STOPSIGNAL") == ["SIGTERM"]


def test_generation_is_a_run_time_variable_not_baked_into_the_image() -> None:
    """SPECTRAL_GENERATION has no ENV or ARG default: one image serves any allocated
    generation, and a container started without one refuses to start (exit 3) instead of
    silently running a stale generation."""
    assert "SPECTRAL_GENERATION" not in env_vars()
    for args in all_of("ARG"):
        assert not args.startswith("SPECTRAL_GENERATION"), args
    assert "SPECTRAL_GENERATION" not in " ".join(all_of("RUN"))


def test_api_listens_on_all_interfaces_and_exposes_the_default_port() -> None:
    """Inside the container the API binds 0.0.0.0 (the 127.0.0.1 default is unreachable
    through a published port) and EXPOSE names the port it really listens on."""
    env = env_vars()
    assert env.get("SPECTRAL_API_HOST") == "0.0.0.0"
    port = int(env.get("SPECTRAL_API_PORT", Settings().api_port))
    assert port == Settings().api_port == 8000
    exposed = {p.split("/")[0] for args in all_of("EXPOSE") for p in args.split()}
    assert exposed == {str(port)}


def test_healthcheck_probes_health_with_python_urllib() -> None:
    """HEALTHCHECK runs Python's urllib (slim has no curl) in exec form against /health on
    the API port, with a timeout."""
    (args,) = all_of("HEALTHCHECK")
    assert "--timeout=" in args and "--interval=" in args
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"], argv
    code = argv[2]
    assert "urllib.request" in code and "/health" in code and "timeout=" in code
    assert "curl" not in args and "wget" not in args
    compile(code, "<healthcheck>", "exec")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        type(self).paths.append(self.path)
        body = b'{"status":"pass"}' if self.status == 200 else b'{"status":"fail"}'
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/health+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def health_server(status: int) -> Iterator[tuple[int, list[str]]]:
    handler = type("H", (_Health,), {"status": status, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler.paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_healthcheck(port: int) -> int:
    argv = healthcheck_argv()
    argv[0] = sys.executable
    env = {"SPECTRAL_API_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_passes_on_200_and_fails_on_503(status: int, healthy: bool) -> None:
    """Run the HEALTHCHECK command for real: /health answering 200 (pass/warn) is healthy;
    503 (fail) marks the container unhealthy."""
    with health_server(status) as (port, paths):
        code = run_healthcheck(port)
    assert paths == ["/health"]
    assert (code == 0) is healthy, code


def test_healthcheck_command_fails_when_nothing_listens() -> None:
    """An API that is not listening (crashed, still booting) makes the check fail rather
    than hang or pass."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run_healthcheck(port) != 0
