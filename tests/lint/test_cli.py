"""The command lines: exit codes, formats, help, and the repository entrypoints."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spectral_core.compat.cli import compat_main

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = compat_main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    (tmp_path / "0001_init.sql").write_text("CREATE TABLE core.t (id int, name varchar(10));\n")
    (tmp_path / "0002_bad.sql").write_text("SELECT 1;\nALTER TABLE core.t DROP COLUMN name;\n")
    return tmp_path


def test_clean_exits_0(tmp_path: Path) -> None:
    """Only safe migrations: exit 0 and no findings printed."""
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE core.a (id int);\n")
    code, out, err = _run([str(tmp_path)])
    assert (code, out) == (0, "")
    assert "0 error(s)" in err


def test_blocking_exits_1_with_text_location(migrations: Path) -> None:
    """A blocking finding exits 1 and prints `file:line:col: severity[rule]: message`."""
    code, out, _ = _run([str(migrations), "--deployed-through", "0001"])
    assert code == 1
    assert out.startswith(f"{migrations / '0002_bad.sql'}:2:32: error[drop-column]: ")


def test_deployed_through_covers_everything_exits_0(migrations: Path) -> None:
    """--deployed-through past the last file lints nothing and exits 0."""
    assert _run([str(migrations), "--deployed-through", "9999"])[0] == 0


def test_explicit_file_paths_are_new(migrations: Path) -> None:
    """A file given by path is new; a table it does not create counts as existing."""
    code, out, _ = _run([str(migrations / "0002_bad.sql")])
    assert code == 1 and "drop-column" in out


def test_warnings_and_waivers_exit_0(tmp_path: Path) -> None:
    """Warnings and waived findings are printed (with the reason) but do not fail."""
    (tmp_path / "0001_a.sql").write_text(
        "-- compat: breaking (reason: nothing reads core.old since v3)\n"
        "DROP TABLE core.old;\nALTER TABLE core.x ALTER COLUMN y DROP NOT NULL;\n"
    )
    code, out, _ = _run([str(tmp_path)])
    assert code == 0
    assert "waived[drop-table]" in out and "(waived: nothing reads core.old since v3)" in out
    assert "warning[drop-not-null]" in out


def test_syntax_error_is_a_finding(tmp_path: Path) -> None:
    """A syntax error is reported as a finding (exit 1), not a crash (exit 2)."""
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\nCREATE TABLEE x ();\n")
    code, out, _ = _run([str(tmp_path)])
    assert code == 1 and ":2:8: error[syntax-error]" in out


def test_json_format(migrations: Path) -> None:
    """--format json is one JSON document with findings and a summary."""
    code, out, _ = _run([str(migrations), "--deployed-through", "1", "--format", "json"])
    doc = json.loads(out)
    assert code == 1
    assert doc["summary"]["error"] == 1 and doc["summary"]["files"] == 1
    assert doc["findings"][0]["rule"] == "drop-column"
    assert doc["findings"][0]["line"] == 2


def test_github_format(migrations: Path) -> None:
    """--format github prints workflow-command annotations."""
    code, out, _ = _run([str(migrations), "--deployed-through", "1", "--format", "github"])
    assert code == 1
    assert out.startswith("::error file=") and ",line=2,col=32,title=drop-column::" in out


def test_sarif_format_marks_waivers_as_suppressed(tmp_path: Path) -> None:
    """--format sarif is SARIF 2.1.0; waived findings carry an in-source suppression."""
    (tmp_path / "0001_a.sql").write_text("-- compat: breaking (reason: retired)\nDROP TABLE t;\n")
    code, out, _ = _run([str(tmp_path), "--format", "sarif"])
    doc = json.loads(out)
    result = doc["runs"][0]["results"][0]
    assert code == 0 and doc["version"] == "2.1.0"
    assert result["ruleId"] == "drop-table"
    assert result["suppressions"][0]["justification"] == "retired"


@pytest.mark.parametrize(
    "argv",
    [
        ["--format", "xml"],
        ["--deployed-through", "abc"],
        ["--deployed-through", "1", "--git-base", "HEAD"],
        ["/definitely/not/here"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    """Bad options, conflicting baselines and missing paths exit 2."""
    assert _run(argv)[0] == 2


def test_help_exits_0() -> None:
    """--help prints usage with the prog name and exits 0."""
    out = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, out
    try:
        code = compat_main(["--help"])
    finally:
        sys.stdout = sys_stdout
    assert code == 0 and "spectral lint compat" in out.getvalue()


def test_locking_flag_enables_gate(tmp_path: Path) -> None:
    """The locking gate runs only with --locking."""
    (tmp_path / "0001_a.sql").write_text("CREATE INDEX i ON core.big (x);\n")
    assert _run([str(tmp_path)])[0] == 0
    code, out, _ = _run([str(tmp_path), "--locking"])
    assert code == 1 and "lock-create-index" in out


def _python_m(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_python_m_lint_compat(migrations: Path) -> None:
    """`python -m lint compat PATH` runs the compat lint with its exit code."""
    proc = _python_m("lint", "compat", str(migrations), "--deployed-through", "1")
    assert proc.returncode == 1 and "drop-column" in proc.stdout


def test_python_m_lint_usage() -> None:
    """`python -m lint` without a command, or with an unknown one, exits 2."""
    assert _python_m("lint").returncode == 2
    assert _python_m("lint", "bogus").returncode == 2
    assert _python_m("lint", "ci", "--help").returncode == 0
