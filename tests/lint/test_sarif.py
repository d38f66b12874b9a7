"""SARIF output: valid against the SARIF 2.1.0 schema (vendored in tests/lint/data, from the
OASIS sarif-spec repository, sarif-2.1/schema/sarif-schema-2.1.0.json), with relative,
percent-encoded artifact URIs, the tool version and the invocation's exit status."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from urllib.parse import unquote, urljoin

import jsonschema
import pytest

from spectral_core.compat.cli import compat_main

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8")
)


def _validate(doc: dict) -> None:
    validator = jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def _run(argv: list[str], cwd: Path) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code = compat_main([*argv, "--format", "sarif"], out=out, err=err)
    finally:
        os.chdir(old)
    return code, json.loads(out.getvalue())


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    mig = tmp_path / "db migrations"  # a space: the URI must be percent-encoded
    mig.mkdir()
    (mig / "0001_init.sql").write_text("CREATE TABLE core.t (id int, name text);\n")
    (mig / "0002_drop.sql").write_text(
        "ALTER TABLE core.t DROP COLUMN name;\n"
        "-- compat: breaking (reason: nothing reads it)\n"
        "ALTER TABLE core.t ALTER COLUMN id SET NOT NULL;\n"
    )
    (mig / "0003_ünï.sql").write_text("CREATE INDEX CONCURRENTLY i ON core.t (id);\n")
    return tmp_path


def test_sarif_validates_against_the_schema(tree: Path) -> None:
    """The log of a run with errors, warnings and waived findings is valid SARIF 2.1.0
    (including the uri-reference format of every artifact location)."""
    code, doc = _run(["--deployed-through", "1", "db migrations"], tree)
    assert code == 1 and doc["runs"][0]["results"]
    _validate(doc)


def test_artifact_uris_are_relative_and_percent_encoded(tree: Path) -> None:
    """artifactLocation.uri is relative to the SRCROOT base in originalUriBaseIds, percent-
    encoded, and resolves to the real file."""
    _, doc = _run(["--deployed-through", "1", str(tree / "db migrations")], tree)
    run = doc["runs"][0]
    base = run["originalUriBaseIds"]["SRCROOT"]["uri"]
    assert base == tree.resolve().as_uri() + "/"
    uris = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]
    }
    assert "db%20migrations/0002_drop.sql" in uris
    assert "db%20migrations/0003_%C3%BCn%C3%AF.sql" in uris
    for r in run["results"]:
        loc = r["locations"][0]["physicalLocation"]["artifactLocation"]
        assert loc["uriBaseId"] == "SRCROOT" and not loc["uri"].startswith(("/", "file:"))
        resolved = unquote(urljoin(base, loc["uri"]).removeprefix("file://"))
        assert Path(resolved).is_file()


def test_tool_version_and_invocation_exit_status(tree: Path) -> None:
    """The log names the tool version and an invocation with the exit status: 1 with
    blocking findings (a successful run), 0 when clean."""
    from importlib.metadata import version

    code, doc = _run(["--deployed-through", "1", "db migrations"], tree)
    run = doc["runs"][0]
    assert run["tool"]["driver"]["version"] == version("spectral")
    assert run["invocations"] == [
        {
            "executionSuccessful": True,
            "exitCode": 1,
            "workingDirectory": {"uri": tree.resolve().as_uri() + "/"},
        }
    ]
    code, doc = _run(["--deployed-through", "9999", "db migrations"], tree)
    assert code == 0 and doc["runs"][0]["invocations"][0]["exitCode"] == 0
    _validate(doc)


def test_failed_run_is_a_valid_sarif_log(tree: Path) -> None:
    """A run that cannot lint (exit 2) still writes a valid log saying so."""
    code, doc = _run(["--ledger", "no-such-ledger.txt", "db migrations"], tree)
    inv = doc["runs"][0]["invocations"][0]
    assert code == 2 and inv["exitCode"] == 2 and inv["executionSuccessful"] is False
    assert "no-such-ledger.txt" in inv["toolExecutionNotifications"][0]["message"]["text"]
    _validate(doc)


def test_file_outside_the_base_is_an_absolute_file_uri(tmp_path: Path) -> None:
    """A file outside the working directory gets an absolute file: URI (still valid)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "0001_x.sql").write_text("DROP TABLE core.t;\n")
    _, doc = _run([str(tmp_path / "b")], tmp_path / "a")
    loc = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert loc["uri"] == (tmp_path / "b" / "0001_x.sql").resolve().as_uri()
    _validate(doc)
