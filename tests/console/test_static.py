"""The console's shipped files (apps/console/): self-contained and under a strict policy.

These read the files as deployed (the folder is the Pages build output, no build step); the
browser tests (test_browser.py) check the same rules hold in a running page.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "apps" / "console"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0
        self.inline_handlers: list[str] = []
        self.style_attrs = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href"):
            if a.get(name) and not (a[name] or "").startswith("#"):
                self.refs.append(a[name] or "")
        self.inline_handlers += [k for k in a if k.startswith("on")]
        self.style_attrs += "style" in a
        self._in_script = tag == "script" and not a.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_index_loads_only_its_own_files() -> None:
    """index.html references only relative files that exist in the folder (no CDN, works
    under /console/ and at a Pages root alike) and has no inline script, handler or style."""
    parser = _Refs()
    parser.feed((APP / "index.html").read_text())
    assert parser.refs, "index.html references nothing?"
    for ref in parser.refs:
        assert not re.match(r"^([a-z]+:)?//|^/", ref), f"{ref} is not a relative reference"
        assert (APP / ref).is_file(), f"{ref} is referenced but not shipped"
    assert parser.inline_scripts == 0
    assert parser.inline_handlers == []
    assert parser.style_attrs == 0


def test_modules_import_only_relative_modules() -> None:
    """Every ES module imports only relative paths that exist (no bare or remote specifiers,
    which would need a bundler or a CDN), and nothing writes to localStorage/sessionStorage."""
    js = sorted((APP / "js").rglob("*.js"))
    assert len(js) >= 10
    spec = re.compile(
        r"""(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]"""
    )
    for path in js:
        text = path.read_text()
        for m in spec.finditer(text):
            target = m.group(1) or m.group(2)
            assert target.startswith(("./", "../")), f"{path.name}: import {target!r}"
            assert (path.parent / target).resolve().is_file(), f"{path.name}: {target} missing"
        assert "localStorage" not in text and "sessionStorage" not in text, path.name
        assert "innerHTML" not in text, f"{path.name}: data must go in with textContent"


def test_pages_headers_set_a_strict_policy() -> None:
    """_headers gives every path a CSP that allows only the console's own origin, no inline
    script, no framing, and that works over plain http; the page's meta policy says the
    same."""
    text = (APP / "_headers").read_text()
    csp = re.search(r"^\s+Content-Security-Policy:\s*(.+)$", text, re.M)
    assert csp and re.search(r"^/\*$", text, re.M)
    policy = {
        d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.group(1).split(";")) if d
    }
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert "unsafe-inline" not in csp.group(1) and "unsafe-eval" not in csp.group(1)
    # spectral-api serves these headers at /console/ over plain http too (spectral up, a
    # LAN address): upgrading the page's requests to https would break it there
    assert "upgrade-insecure-requests" not in policy
    assert re.search(r"^\s+X-Content-Type-Options: nosniff$", text, re.M)
    meta = re.search(
        r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"',
        (APP / "index.html").read_text(),
    )
    assert meta and "script-src 'self'" in meta.group(1) and "unsafe" not in meta.group(1)
