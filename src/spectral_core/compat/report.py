"""Output formats: text, JSON, GitHub annotations and SARIF 2.1.0."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from spectral_core.compat.finding import RULES, Finding, Severity

__all__ = ["FORMATS", "render", "summary"]

FORMATS = ("text", "json", "github", "sarif")
_GH_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.WAIVED: "notice"}
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.WAIVED: "error"}


def _counts(findings: Sequence[Finding]) -> dict[str, int]:
    counts = {s.value: 0 for s in Severity}
    for f in findings:
        counts[f.severity.value] += 1
    return counts


def summary(findings: Sequence[Finding], files: int, statements: int | None = None) -> str:
    """One line: how many errors, warnings and waived findings in how many files."""
    c = _counts(findings)
    stmts = f", {statements} statements" if statements is not None else ""
    return (
        f"{c['error']} error(s), {c['warning']} warning(s), {c['waived']} waived "
        f"in {files} file(s){stmts}"
    )


def _text(f: Finding) -> str:
    line = f"{f.path}:{f.line}:{f.column}: {f.severity.value}[{f.rule}]: {f.message}"
    return line + (f" (waived: {f.reason})" if f.reason else "")


def _gh_escape(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return s.replace(":", "%3A").replace(",", "%2C") if prop else s


def _github(f: Finding) -> str:
    msg = f.message + (f" (waived: {f.reason})" if f.reason else "")
    props = (
        f"file={_gh_escape(f.path, True)},line={f.line},col={f.column},"
        f"title={_gh_escape(f.rule, True)}"
    )
    return f"::{_GH_LEVEL[f.severity]} {props}::{_gh_escape(msg)}"


def _sarif(findings: Sequence[Finding], tool: str) -> dict[str, object]:
    used = sorted({f.rule for f in findings})
    results = []
    for f in findings:
        result: dict[str, object] = {
            "ruleId": f.rule,
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path},
                        "region": {"startLine": f.line, "startColumn": f.column},
                    }
                }
            ],
        }
        if f.severity is Severity.WAIVED:
            result["suppressions"] = [{"kind": "inSource", "justification": f.reason or ""}]
        results.append(result)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": tool,
                        "rules": [
                            {"id": r, "shortDescription": {"text": RULES[r].summary}} for r in used
                        ],
                    }
                },
                "results": results,
            }
        ],
    }


def render(
    findings: Sequence[Finding],
    fmt: str,
    *,
    tool: str = "spectral lint compat",
    files: int = 0,
    statements: int | None = None,
) -> str:
    """Render *findings* in *fmt* (one of :data:`FORMATS`); the text ends with a newline."""
    if fmt == "text":
        return "".join(_text(f) + "\n" for f in findings)
    if fmt == "github":
        return "".join(_github(f) + "\n" for f in findings)
    if fmt == "json":
        doc = {
            "tool": tool,
            "findings": list(findings),
            "summary": {**_counts(findings), "files": files, "statements": statements},
        }
        return msgspec.json.encode(doc).decode() + "\n"
    if fmt == "sarif":
        return msgspec.json.encode(_sarif(findings, tool)).decode() + "\n"
    raise ValueError(f"unknown format {fmt!r}")
