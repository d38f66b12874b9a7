"""The CLI's surface: every verb answers --help, --version, results on stdout and logs on
stderr, so `spectral ... --json | jq` works."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from spectral_cli.main import build_parser, main

MODULES = Path(__file__).resolve().parents[1] / "modules"


def _verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every verb path of the parser tree (``("deploy", "drain")``, ...)."""
    out: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((*prefix, name))
                out.extend(_verbs(sub, (*prefix, name)))
    return out


VERBS = _verbs(build_parser())


def test_the_verb_tree_is_complete() -> None:
    """The walk below sees the verbs users rely on (SPEC §11), sub-verbs included."""
    for path in [
        ("up",),
        ("demo",),
        ("migrate",),
        ("deploy", "allocate"),
        ("deploy", "status"),
        ("deploy", "drain"),
        ("lint", "compat"),
        ("lint", "manifest"),
    ]:
        assert path in VERBS


@pytest.mark.parametrize("path", VERBS, ids=[" ".join(p) for p in VERBS])
def test_every_verb_answers_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """`spectral <verb...> --help` prints a usage naming the verb and exits 0, for every verb
    and sub-verb (`spectral lint --help` used to fail with "unrecognized arguments")."""
    try:
        code = main([*path, "--help"])  # the lints parse their own options and return
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    out = capsys.readouterr().out
    assert "usage:" in out and path[-1] in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`spectral --version` prints the installed package version and exits 0."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.strip() == f"spectral {version('spectral')}"


def _spectral(db_url: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    return subprocess.run(
        [sys.executable, "-m", "spectral_cli", *argv],
        env={**base, "SPECTRAL_DATABASE_URL": db_url, "SPECTRAL_LOG_LEVEL": "debug", **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_json_results_alone_on_stdout(db_url: str, fmt: str) -> None:
    """`tenants keys create ORG --json` writes only its JSON document to stdout (it used to
    print a log line before it, so `| jq` failed); the log lines go to stderr in the format
    SPECTRAL_LOG_FORMAT asks for."""
    assert _spectral(db_url, "tenants", "create", "acme").returncode == 0
    done = _spectral(db_url, "tenants", "keys", "create", "acme", "--json", SPECTRAL_LOG_FORMAT=fmt)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["org"] == "acme" and doc["token"]
    assert doc["token"] not in done.stderr  # the secret is a result, never a log line
    listed = _spectral(db_url, "deploy", "status", "--json", SPECTRAL_LOG_FORMAT=fmt)
    assert listed.returncode == 0, listed.stderr
    json.loads(listed.stdout)


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., str]:
    for name in [n for n in os.environ if n.startswith("SPECTRAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPECTRAL_DATABASE_URL", db_url)
    monkeypatch.setenv("SPECTRAL_HOME_DIR", str(tmp_path / ".spectral"))

    def run(*argv: str) -> str:
        capsys.readouterr()
        code = main(list(argv))
        out = capsys.readouterr().out
        assert code == 0, out
        return out

    return run


def test_json_on_every_verb_that_prints_a_result(cli: Callable[..., str]) -> None:
    """Each verb that prints a result accepts --json and then prints one JSON document with
    the result's fields (modules keygen/put/pin/approve/revoke, tenants create/limits/keys
    revoke; `tenants limits` without --json prints a table, not a Python repr)."""
    key = ["--org", "acme", "--domain", "credit", "--action", "approve"]
    key += ["--world-model-version", "v1"]
    keygen = json.loads(cli("modules", "keygen", "--json"))
    assert keygen["setting"] == f"{keygen['key_id']}:{keygen['public_key']}"
    put = json.loads(cli("modules", "put", str(MODULES / "decision.wat"), "--json"))
    assert len(put["content_hash"]) == 64 and put["size"] > 0
    pin = json.loads(cli("modules", "pin", *key, put["content_hash"], "--json"))
    assert pin["created"] is True and pin["key"]["org"] == "acme"
    approval = json.loads(cli("modules", "approve", *key, "--json"))
    assert approval["content_hash"] == put["content_hash"]
    assert approval["key_id"] == keygen["key_id"]
    revoked = json.loads(cli("modules", "revoke", str(approval["approval_id"]), "--json"))
    assert revoked == {"approval_id": approval["approval_id"], "revoked": True}

    assert json.loads(cli("tenants", "create", "acme", "--json")) == {
        "org": "acme",
        "created": True,
    }
    limits = json.loads(cli("tenants", "limits", "acme", "--rate", "5", "--burst", "7", "--json"))
    assert (
        limits["org"] == "acme" and limits["limits"]["rate"] == 5 and limits["limits"]["burst"] == 7
    )
    text = cli("tenants", "limits", "acme", "--rate", "5", "--burst", "7")
    assert "TenantLimits(" not in text and "rate/s" in text and "5" in text
    assert json.loads(cli("tenants", "limits", "acme", "--json"))["limits"] is None
    made = json.loads(cli("tenants", "keys", "create", "acme", "--json"))
    assert json.loads(cli("tenants", "keys", "revoke", made["id"], "--json")) == {
        "key_id": made["id"],
        "revoked": True,
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [("spectral dep", {"deploy"}), ("spectral deploy dr", {"drain"}), ("spectral li", {"lint"})],
)
def test_shell_completion_completes_verbs(tmp_path: Path, line: str, expected: set[str]) -> None:
    """The shell-completion protocol (argcomplete, as `eval "$(register-python-argcomplete
    spectral)"` drives it) answers the verbs that start with the typed word."""
    out = tmp_path / "completions"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")},
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }
    done = subprocess.run(
        [sys.executable, "-m", "spectral_cli"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert set(out.read_text().split()) == expected


def test_approve_out_writes_a_signed_approval_without_storing_it(
    cli: Callable[..., str], tmp_path: Path, db_url: str
) -> None:
    """`modules approve --out FILE` signs locally and writes the approval document that
    `POST /api/modules/approvals` takes (the how-to used to say "sign it by hand"); it
    verifies under the operator's public key and nothing is stored."""
    import msgspec
    import psycopg

    from spectral_core.modules import ModuleKey
    from spectral_core.modules.approval import Approval, Keyring

    key = ["--org", "acme", "--domain", "credit", "--action", "approve"]
    key += ["--world-model-version", "v1"]
    keygen = json.loads(cli("modules", "keygen", "--json"))
    content_hash = cli("modules", "put", str(MODULES / "decision.wat")).strip()
    cli("modules", "pin", *key, content_hash)
    out = tmp_path / "approval.json"
    cli("modules", "approve", *key, "--out", str(out))
    approval = msgspec.json.decode(out.read_bytes(), type=Approval)
    module_key = ModuleKey(org="acme", domain="credit", action="approve", world_model_version="v1")
    Keyring.from_config(keygen["setting"]).verify(approval, content_hash, module_key)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM core.module_approvals").fetchone() == (0,)


@pytest.mark.parametrize("url", ["not a url", "postgresql://u:s3cr3t@h:5432/db?s3cr3t=1"])
def test_a_malformed_database_url_is_one_line_naming_the_setting(url: str) -> None:
    """A SPECTRAL_DATABASE_URL libpq cannot parse gives one line on stderr naming the
    setting and the expected form, exit 3, no traceback, no piece of the secret (it used
    to print a psycopg traceback)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    done = subprocess.run(
        [sys.executable, "-m", "spectral_cli", "deploy", "status"],
        env={**env, "SPECTRAL_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "SPECTRAL_DATABASE_URL is not a valid PostgreSQL connection URL" in lines[0]
    assert "s3cr3t" not in done.stderr and done.stdout == ""


def test_wait_healthy_names_why_the_api_is_unreachable() -> None:
    """`deploy wait-healthy` against a dead URL says what failed (the URL is unreachable,
    connection refused, is the API running) on one line, instead of "URLError"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRAL_")}
    done = subprocess.run(
        [sys.executable, "-m", "spectral_cli", "deploy", "wait-healthy"]
        + ["--url", f"http://127.0.0.1:{port}", "--timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "URLError" not in done.stderr
    assert f"http://127.0.0.1:{port} unreachable: Connection refused" in done.stderr


def test_json_on_the_deploy_migrate_and_outbox_verbs(cli: Callable[..., str]) -> None:
    """`migrate [--check]`, `deploy drain`, `outbox redrive` and `outbox purge` print one
    JSON document with --json (the lint gate's report, if any, goes to stderr then)."""
    check = json.loads(cli("migrate", "--check", "--json"))
    assert check["at_head"] is True and check["unchecked"] == []
    assert [s["set"] for s in check["sets"]] == ["spectral"] and check["sets"][0]["applied"]
    assert json.loads(cli("migrate", "--json")) == {"applied": [], "at_head": True}
    generation = int(cli("deploy", "allocate", "--version", "v-json").strip())
    drained = json.loads(cli("deploy", "drain", "--generation", str(generation), "--json"))
    assert drained == {"generation": generation, "drained": True, "pending": 0, "in_flight": 0}
    redriven = json.loads(cli("outbox", "redrive", "--generation", str(generation), "--json"))
    assert redriven == {"generation": generation, "redriven": []}
    purged = json.loads(cli("outbox", "purge", "--generation", str(generation), "--json"))
    assert purged == {"generation": generation, "deleted": 0}
