"""Import boundaries and robustness of the engine."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from spectral_core.compat import lint_sql


def _modules_after(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(proc.stdout.split())


def test_import_spectral_core_does_not_import_pglast() -> None:
    """`import spectral_core` (and the compat package and its CLI) never imports pglast."""
    mods = _modules_after("import spectral_core, spectral_core.compat, spectral_core.compat.cli")
    assert "pglast" not in mods


def test_manifest_lint_runs_without_pglast(tmp_path: object) -> None:
    """The manifest lint works when pglast is not installed."""
    code = (
        "import sys; sys.modules['pglast'] = None\n"
        "from spectral_core.compat.cli import manifest_main\n"
        "import pathlib, tempfile\n"
        "d = pathlib.Path(tempfile.mkdtemp()); (d / 'deploy').mkdir()\n"
        "(d / 'deploy' / 'manifest.toml').write_text('[targets.app]\\nkind = \"x\"\\n')\n"
        "raise SystemExit(manifest_main(['--root', str(d)]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


_SQL_BITS = st.sampled_from(
    [
        "ALTER TABLE",
        "DROP",
        "CREATE",
        "TABLE",
        "core.t",
        "COLUMN",
        "x",
        "int",
        "NOT NULL",
        "DEFAULT",
        "NULL",
        "UNIQUE",
        ";",
        "(",
        ")",
        ",",
        "$$",
        "'",
        "--",
        "compat:",
        "breaking",
        "(reason:",
        "\n",
        "DO",
        "BEGIN",
        "END",
        "EXECUTE",
        "RENAME",
        "TO",
        "INDEX",
        "ON",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_SQL_BITS, max_size=25).map(" ".join))
def test_arbitrary_input_never_crashes(sql: str) -> None:
    """Any token soup yields findings (maybe a syntax error), never an exception."""
    for f in lint_sql(sql):
        assert f.line >= 1 and f.column >= 1


_HEAVY = {"psycopg", "psycopg_pool", "spectral_core.db", "spectral_cli.main", "starlette"}


def test_lint_runs_do_not_import_the_database_layer(tmp_path: object) -> None:
    """`python -m lint compat`, `spectral lint compat` (the console script's entry) and
    `import spectral_core` load neither psycopg nor the CLI's other verbs: a lint run is
    start-up bound (bench/bench_lint.py measures it)."""
    import pathlib

    sql = pathlib.Path(str(tmp_path)) / "0001_a.sql"
    sql.write_text("ALTER TABLE core.t ADD COLUMN x int;\n")
    runs = {
        "python -m lint": f"from lint.__main__ import main\nmain(['compat', {str(sql)!r}])",
        "spectral lint": (
            "import sys\nfrom spectral_cli.entry import main\n"
            f"sys.argv = ['spectral', 'lint', 'compat', {str(sql)!r}]\nmain()"
        ),
        "import spectral_core": "import spectral_core, spectral_core.compat.cli",
    }
    for name, code in runs.items():
        mods = _modules_after(code)
        assert "spectral_core.compat.engine" in mods or name == "import spectral_core"
        assert mods & _HEAVY == set(), name


def test_spectral_console_script_is_the_light_entry() -> None:
    """The `spectral` console script goes through spectral_cli.entry (lint fast path)."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts["spectral"] == "spectral_cli.entry:main"


def test_spectral_core_names_still_import() -> None:
    """The lazily loaded top-level names of spectral_core resolve as before."""
    mods = _modules_after(
        "from spectral_core import Settings, Consumer, open_pools, __version__\n"
        "import spectral_core\nassert 'publish' in dir(spectral_core)\n"
        "assert spectral_core.run_migrations.__module__ == 'spectral_core.migrate'"
    )
    assert "psycopg" in mods
