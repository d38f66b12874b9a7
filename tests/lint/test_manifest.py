"""The deploy-manifest coverage lint over temporary repositories."""

from __future__ import annotations

import io
import json
import tomllib
from pathlib import Path

import pytest

from spectral_core.compat import lint_manifest, manifest_main

GOOD = """\
roots = ["src", "apps"]
non_deployed = ["src/tools"]

[targets.app]
kind = "container"

[targets.site]
kind = "pages"

[paths]
"src/core" = "app"
"apps/web" = ["site"]
"""


def _repo(
    tmp_path: Path,
    manifest: str = GOOD,
    dirs: tuple[str, ...] = ("src/core", "src/tools", "apps/web"),
) -> Path:
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "manifest.toml").write_text(manifest)
    return tmp_path


def _rules(root: Path) -> list[str]:
    return sorted(f.rule for f in lint_manifest(root))


def test_covered_repository_is_clean(tmp_path: Path) -> None:
    """Every directory mapped or non_deployed, every target declared: no findings."""
    assert _rules(_repo(tmp_path)) == []


def test_unmapped_directory_says_what_to_add(tmp_path: Path) -> None:
    """A new directory under src/ is an error whose message shows the line to add."""
    root = _repo(tmp_path, dirs=("src/core", "src/tools", "apps/web", "src/newsvc"))
    (finding,) = lint_manifest(root)
    assert finding.rule == "manifest-unmapped"
    assert '"src/newsvc" = "app"' in finding.message


def test_apps_directory_when_present(tmp_path: Path) -> None:
    """Directories under apps/ are covered too."""
    root = _repo(tmp_path, dirs=("src/core", "src/tools", "apps/web", "apps/admin"))
    assert _rules(root) == ["manifest-unmapped"]


def test_missing_apps_root_is_fine(tmp_path: Path) -> None:
    """A root that does not exist (no apps/ yet) is skipped; its stale entries still count."""
    manifest = GOOD.replace('"apps/web" = ["site"]\n', "")
    assert _rules(_repo(tmp_path, manifest, dirs=("src/core", "src/tools"))) == []


def test_stale_mapping_and_stale_non_deployed(tmp_path: Path) -> None:
    """Entries naming directories that no longer exist are errors."""
    root = _repo(tmp_path, dirs=("src/core",))
    assert _rules(root) == ["manifest-stale", "manifest-stale"]


def test_unknown_target(tmp_path: Path) -> None:
    """A mapping to a target not declared under [targets] is an error naming the targets."""
    (finding,) = lint_manifest(
        _repo(tmp_path, GOOD.replace('"src/core" = "app"', '"src/core" = "ap"'))
    )
    assert finding.rule == "manifest-unknown-target" and "app, site" in finding.message
    assert finding.line == 11


def test_conflict_mapped_and_non_deployed(tmp_path: Path) -> None:
    """A directory both mapped and non_deployed is an error."""
    manifest = GOOD.replace(
        'non_deployed = ["src/tools"]', 'non_deployed = ["src/tools", "src/core"]'
    )
    assert _rules(_repo(tmp_path, manifest)) == ["manifest-conflict"]


def test_hidden_and_cache_directories_ignored(tmp_path: Path) -> None:
    """__pycache__, dot-directories and *.egg-info are not deployable directories."""
    root = _repo(
        tmp_path,
        dirs=(
            "src/core",
            "src/tools",
            "apps/web",
            "src/__pycache__",
            "src/.mypy_cache",
            "src/spectral.egg-info",
        ),
    )
    assert _rules(root) == []


@pytest.mark.parametrize(
    "manifest",
    [
        "[paths\n",
        '[targets.app]\ndescription = "no kind"\n',
        "non_deployed = 3\n",
        '[targets.app]\nkind = "container"\n[paths]\n"src/core" = 7\n',
    ],
)
def test_malformed_manifest(tmp_path: Path, manifest: str) -> None:
    """Invalid TOML or a wrong shape is a manifest-invalid finding."""
    assert "manifest-invalid" in _rules(_repo(tmp_path, manifest, dirs=()))


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    """manifest_main exits 0 clean, 1 on findings (JSON lists them), 2 without a manifest."""
    root = _repo(tmp_path)
    assert manifest_main(["--root", str(root)], out=io.StringIO(), err=io.StringIO()) == 0
    (root / "src" / "extra").mkdir()
    out = io.StringIO()
    assert manifest_main(["--root", str(root), "--format", "json"], out=out, err=io.StringIO()) == 1
    assert json.loads(out.getvalue())["findings"][0]["rule"] == "manifest-unmapped"
    err = io.StringIO()
    assert manifest_main(["--root", str(tmp_path / "nowhere")], out=io.StringIO(), err=err) == 2
    assert "cannot read manifest" in err.getvalue()


def test_repository_manifest_covers_src() -> None:
    """This repository's deploy/manifest.toml covers every directory under src/ and apps/."""
    root = Path(__file__).resolve().parents[2]
    assert lint_manifest(root) == []


def test_repository_console_ships_to_pages(tmp_path: Path) -> None:
    """apps/console is mapped to a Cloudflare Pages target, and a copy of this repository's
    manifest without that line fails the lint with manifest-unmapped for apps/console."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "deploy" / "manifest.toml").read_text()
    data = tomllib.loads(text)
    target = data["paths"]["apps/console"]
    assert data["targets"][target]["kind"] == "pages"
    for d in [*data["paths"], *data.get("non_deployed", [])]:
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "deploy").mkdir()
    without = "\n".join(ln for ln in text.splitlines() if not ln.startswith('"apps/console"'))
    (tmp_path / "deploy" / "manifest.toml").write_text(without)
    findings = lint_manifest(tmp_path)
    assert [(f.rule, "apps/console" in f.message) for f in findings] == [
        ("manifest-unmapped", True)
    ]
