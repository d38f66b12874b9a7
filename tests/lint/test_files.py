"""Multi-file linting: deployed baselines (number, ledger, git), ordering and replay."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from spectral_core.compat import (
    LintError,
    collect_files,
    lint_files,
    mark_deployed_through,
    mark_from_git,
    mark_from_ledger,
)


def _write(d: Path, files: dict[str, str]) -> None:
    for name, sql in files.items():
        (d / name).write_text(sql, encoding="utf-8")


def _rules(results: list) -> list[tuple[str, str, str]]:
    return sorted(
        (Path(f.path).name, f.severity.value, f.rule) for r in results for f in r.findings
    )


MIGRATIONS = {
    "0001_init.sql": "CREATE TABLE core.t (id int, name varchar(10));",
    "0002_more.sql": "ALTER TABLE core.t ALTER COLUMN name TYPE varchar(20);",
    "0003_new.sql": "CREATE TABLE core.n (a int);\nALTER TABLE core.t ALTER COLUMN name TYPE "
    "int USING 0;",
    "0004_newer.sql": "CREATE UNIQUE INDEX ON core.n (a);\nCREATE UNIQUE INDEX ON core.t (id);",
}


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    _write(tmp_path, MIGRATIONS)
    return tmp_path


def test_all_new_when_no_baseline(mdir: Path) -> None:
    """Without a baseline every file is new: objects they create are exempt everywhere."""
    files, _ = collect_files([str(mdir)])
    assert [f.path.name for f in files] == sorted(MIGRATIONS)
    assert _rules(lint_files(files)) == []


def test_deployed_through_replays_and_lints_later(mdir: Path) -> None:
    """--deployed-through replays files <= N (known, populated) and lints only later ones."""
    files, _ = collect_files([str(mdir)])
    mark_deployed_through(files, 2)
    results = lint_files(files)
    assert [r.deployed for r in results] == [True, True, False, False]
    assert _rules(results) == [
        ("0003_new.sql", "error", "alter-column-type"),
        ("0004_newer.sql", "error", "add-unique"),
    ]


def test_table_created_by_earlier_new_file_is_exempt(mdir: Path) -> None:
    """A unique index on a table created by a migration not yet deployed is not flagged."""
    files, _ = collect_files([str(mdir)])
    mark_deployed_through(files, 2)
    messages = [f.message for r in lint_files(files) for f in r.findings if f.rule == "add-unique"]
    assert len(messages) == 1 and "core.t" in messages[0]


def test_out_of_order_new_file(tmp_path: Path) -> None:
    """A new migration numbered below a deployed one is an error."""
    _write(
        tmp_path, {"0001_a.sql": "SELECT 1;", "0002_b.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;"}
    )
    files, _ = collect_files([str(tmp_path)])
    for f in files:
        f.deployed = f.number != 2
    assert _rules(lint_files(files)) == [("0002_b.sql", "error", "out-of-order")]


def test_replay_failure_is_a_warning(tmp_path: Path) -> None:
    """A deployed file that does not parse is reported as a warning, not a crash."""
    _write(tmp_path, {"0001_a.sql": "CREATE TABLE x (", "0002_b.sql": "SELECT 1;"})
    files, _ = collect_files([str(tmp_path)])
    mark_deployed_through(files, 1)
    assert _rules(lint_files(files)) == [("0001_a.sql", "warning", "replay-failed")]


def test_ledger_marks_deployed_and_reports_missing(mdir: Path, tmp_path: Path) -> None:
    """A ledger file marks listed migrations deployed; an entry with no file is an error."""
    ledger = tmp_path / "ledger.txt"
    ledger.write_text("# applied\n0001_init.sql abc123\n0002_more\n0009_gone.sql\n")
    files, _ = collect_files([str(mdir)])
    extra = mark_from_ledger(files, str(ledger))
    assert [f.deployed for f in files] == [True, True, False, False]
    assert [(f.rule, f.line) for f in extra] == [("deleted-migration", 4)]


def test_missing_path_is_a_lint_error(tmp_path: Path) -> None:
    """A path that does not exist raises LintError (a usage error, exit 2 at the CLI)."""
    with pytest.raises(LintError):
        collect_files([str(tmp_path / "nope")])


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_git_base_deployed_edited_and_deleted(tmp_path: Path) -> None:
    """--git-base: files at REF are deployed; edits and deletions of them are errors."""
    repo = tmp_path / "repo"
    mig = repo / "migrations"
    mig.mkdir(parents=True)
    _write(mig, {"0001_init.sql": MIGRATIONS["0001_init.sql"], "0002_x.sql": "SELECT 1;"})
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    (mig / "0002_x.sql").unlink()
    (mig / "0001_init.sql").write_text(MIGRATIONS["0001_init.sql"] + "\n-- edited\n")
    _write(
        mig,
        {
            "0003_new.sql": "ALTER TABLE core.t ALTER COLUMN name TYPE text;\n"
            "ALTER TABLE core.t DROP COLUMN id;"
        },
    )
    files, dirs = collect_files([str(mig)])
    extra = mark_from_git(files, dirs, "HEAD")
    assert sorted((Path(f.path).name, f.rule) for f in extra) == [
        ("0001_init.sql", "edited-migration"),
        ("0002_x.sql", "deleted-migration"),
    ]
    assert _rules(lint_files(files)) == [("0003_new.sql", "error", "drop-column")]


def test_git_base_unknown_ref(tmp_path: Path) -> None:
    """An unknown --git-base ref is a LintError, not a silent 'everything is new'."""
    _git(tmp_path, "init", "-q")
    _write(tmp_path, {"0001_a.sql": "SELECT 1;"})
    files, dirs = collect_files([str(tmp_path)])
    with pytest.raises(LintError):
        mark_from_git(files, dirs, "no-such-ref")
