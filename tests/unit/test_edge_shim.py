"""The edge shim (``shims/edge``, a Cloudflare Worker) passes its own ``node --test`` suite."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.tools import missing_tool, require_tool

EDGE = Path(__file__).resolve().parents[2] / "shims" / "edge"
NODE_MAJOR = 20  # package.json "engines"


def test_edge_shim_suite_passes() -> None:
    """worker.js's forwarding, request-id, hop-by-hop and error behaviour (worker.test.js)
    holds on the Node version package.json names; without node: skipped locally, failed
    under CI=true."""
    node = require_tool("node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    match = re.match(r"v(\d+)\.", version.stdout.strip())
    if match is None or int(match.group(1)) < NODE_MAJOR:
        missing_tool(f"node >= {NODE_MAJOR} is needed, found {version.stdout.strip()!r}")
    proc = subprocess.run(
        [node, "--test", str(EDGE)], capture_output=True, text=True, timeout=300, cwd=EDGE
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", proc.stdout, re.M), proc.stdout[-2000:]
