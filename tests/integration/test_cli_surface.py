"""The CLI's surface: every verb answers --help, --version, results on stdout and logs on
stderr, so `spectral ... --json | jq` works."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from spectral_cli.main import build_parser, main


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
