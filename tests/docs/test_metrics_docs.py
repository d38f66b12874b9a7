"""The shipped dashboard and alert rules name only documented metrics (issue 17.1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"\bspectral_[a-z_]+[a-z]\b")
_SUFFIXES = ("_bucket", "_sum", "_count")


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def documented() -> set[str]:
    text = (ROOT / "docs/reference/metrics.md").read_text()
    return {m.group(1) for m in re.finditer(r"^\| `(spectral_[a-z_]+)` \|", text, re.M)}


def test_dashboard_and_alerts_use_documented_metrics_only() -> None:
    """Every metric name in deploy/grafana/spectral.json and deploy/prometheus/alerts.yml
    (histogram series by their base name) has a row in docs/reference/metrics.md, so a
    renamed metric cannot leave a dashboard panel or an alert silently empty."""
    names = documented()
    assert len(names) >= 20
    dashboard = json.loads((ROOT / "deploy/grafana/spectral.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {_base(m) for e in exprs for m in _NAME.findall(e)}
    assert used and used <= names, sorted(used - names)
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "SpectralGenerationStranded",
        "SpectralOldestPendingTooOld",
        "SpectralDeadRowsRising",
        "SpectralWorkerLost",
    } <= alerts
