"""The API serves the operator console's static files at /console/ (issue 18, ADR 0038)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spectral_api.console import DEFAULT_HEADERS, pages_headers

pytestmark = pytest.mark.anyio


def _site(folder: Path, headers: str | None) -> Path:
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>spectral console</title>")
    (folder / "app.js").write_text("export const x = 1;\n")
    if headers is not None:
        (folder / "_headers").write_text(headers)
    return folder


async def test_console_is_served_with_its_pages_headers(api_factory: Any, tmp_path: Path) -> None:
    """/console redirects to /console/, which serves index.html; every file carries the
    headers of the app's `_headers` `/*` block (what ships to Pages) and no-cache; a
    missing file is 404; no credential is needed (the API calls need one)."""
    folder = _site(
        tmp_path / "console",
        "# Pages headers\n/*\n  Content-Security-Policy: default-src 'self'\n"
        "  X-Frame-Options: DENY\n/index.html\n  X-Extra: yes\n",
    )
    api = api_factory(console_dir=str(folder))
    async with api.client() as c:
        r = await c.get("/console")
        assert r.status_code in (307, 308) and r.headers["location"].endswith("/console/")
        r = await c.get("/console/")
        assert r.status_code == 200 and "spectral console" in r.text
        assert r.headers["content-security-policy"] == "default-src 'self'"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-cache"
        js = await c.get("/console/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert js.headers["x-frame-options"] == "DENY" and "x-extra" not in js.headers
        assert (await c.get("/console/index.html")).headers["x-extra"] == "yes"
        assert (await c.get("/console/nope.js")).status_code == 404
        assert (await c.get("/console/../pyproject.toml")).status_code == 404


async def test_default_headers_without_a_headers_file(api_factory: Any, tmp_path: Path) -> None:
    """Without `_headers`, the files get a strict default Content-Security-Policy."""
    folder = _site(tmp_path / "console", None)
    api = api_factory(console_dir=str(folder))
    async with api.client() as c:
        r = await c.get("/console/")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == DEFAULT_HEADERS["Content-Security-Policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_missing_console_folder_is_a_clear_404(api_factory: Any, tmp_path: Path) -> None:
    """A console folder that does not exist: the API still starts, and /console/ answers
    404 naming the folder and the setting, while the rest of the API works."""
    api = api_factory(console_dir=str(tmp_path / "absent"))
    async with api.client() as c:
        r = await c.get("/console/")
        assert r.status_code == 404
        assert "SPECTRAL_CONSOLE_DIR" in r.json()["detail"]
        assert str(tmp_path / "absent") in r.json()["detail"]
        assert (await c.get("/health")).status_code == 200


def test_pages_headers_parser(tmp_path: Path) -> None:
    """The `_headers` reader keeps path blocks and their `Name: value` lines, skipping
    comments and blank lines; a missing file gives no blocks."""
    (tmp_path / "_headers").write_text(
        "/*\n  A: 1\n\n  # note\n  B: x: y\n/app.js\n  C: 3\nbad line without block\n"
    )
    assert pages_headers(tmp_path) == {
        "/*": {"A": "1", "B": "x: y"},
        "/app.js": {"C": "3"},
        "bad line without block": {},
    }
    assert pages_headers(tmp_path / "none") == {}
