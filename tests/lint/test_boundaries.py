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
