"""Output formats: text, JSON, GitHub annotations and SARIF 2.1.0."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from spectral_core.compat.finding import Finding, Severity
from spectral_core.compat.registry import all_rules

__all__ = ["FORMATS", "artifact_location", "render", "sarif_failure", "summary"]

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


def _json(doc: object) -> str:
    import msgspec  # only the json and sarif formats need it

    return msgspec.json.encode(doc).decode()


_SRCROOT = "SRCROOT"
_SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spectral")
    except PackageNotFoundError:  # a source tree without an install
        return "0+unknown"


def _dir_uri(path: Path) -> str:
    uri = path.as_uri()
    return uri if uri.endswith("/") else uri + "/"


def artifact_location(path: str, root: Path) -> dict[str, str]:
    """A SARIF artifactLocation: a percent-encoded URI reference relative to ``SRCROOT``
    (*root*) when the file is under it, else an absolute ``file:`` URI."""
    p = Path(path)
    absolute = Path(os.path.abspath(p if p.is_absolute() else root / p))
    try:
        rel = absolute.relative_to(root)
    except ValueError:
        return {"uri": absolute.as_uri()}
    return {"uri": quote(PurePosixPath(*rel.parts).as_posix(), safe="/"), "uriBaseId": _SRCROOT}


def _sarif(
    findings: Sequence[Finding], tool: str, exit_code: int, root: Path, failure: str | None = None
) -> dict[str, object]:
    rules = all_rules()
    used = sorted({f.rule for f in findings})
    results = []
    for f in findings:
        result: dict[str, object] = {
            "ruleId": f.rule,
            "ruleIndex": used.index(f.rule),
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": artifact_location(f.path, root),
                        "region": {"startLine": f.line, "startColumn": f.column},
                    }
                }
            ],
        }
        if f.severity is Severity.WAIVED:
            result["suppressions"] = [{"kind": "inSource", "justification": f.reason or ""}]
        results.append(result)
    descriptors = []
    for r in used:
        spec = rules[r]
        descriptor: dict[str, object] = {
            "id": r,
            "shortDescription": {"text": spec.summary},
            "defaultConfiguration": {"level": "error" if spec.blocking else "warning"},
            "properties": {"gate": spec.gate.value, "family": spec.family},
        }
        if spec.detail:
            descriptor["fullDescription"] = {"text": spec.detail}
        descriptor["help"] = {"text": f"Bad:\n{spec.bad}\n\nGood:\n{spec.good}"}
        descriptors.append(descriptor)
    return {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": tool, "version": _version(), "rules": descriptors}},
                "invocations": [
                    {
                        # exit 1 (blocking findings) is a successful run that found problems
                        "executionSuccessful": exit_code in (0, 1),
                        "exitCode": exit_code,
                        "workingDirectory": {"uri": _dir_uri(root)},
                        **(
                            {
                                "toolExecutionNotifications": [
                                    {"level": "error", "message": {"text": failure}}
                                ]
                            }
                            if failure
                            else {}
                        ),
                    }
                ],
                "originalUriBaseIds": {_SRCROOT: {"uri": _dir_uri(root)}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def sarif_failure(message: str, *, tool: str, exit_code: int = 2) -> str:
    """A SARIF log for a run that could not lint (usage or internal error): no results,
    the invocation unsuccessful with *exit_code* and *message* as its notification."""
    doc = _sarif([], tool, exit_code, Path(os.path.abspath(Path.cwd())), failure=message)
    return _json(doc) + "\n"


def render(
    findings: Sequence[Finding],
    fmt: str,
    *,
    tool: str = "spectral lint compat",
    files: int = 0,
    statements: int | None = None,
    exit_code: int | None = None,
    root: Path | None = None,
) -> str:
    """Render *findings* in *fmt* (one of :data:`FORMATS`); the text ends with a newline.

    *exit_code* (default: 1 with a blocking finding, else 0) and *root* (the ``SRCROOT``
    base of SARIF artifact URIs, default: the working directory) are used by SARIF only.
    """
    if fmt == "text":
        return "".join(_text(f) + "\n" for f in findings)
    if fmt == "github":
        return "".join(_github(f) + "\n" for f in findings)
    doc: dict[str, object]
    if fmt == "json":
        doc = {
            "tool": tool,
            "findings": list(findings),
            "summary": {**_counts(findings), "files": files, "statements": statements},
        }
        return _json(doc) + "\n"
    if fmt == "sarif":
        if exit_code is None:
            exit_code = 1 if any(f.severity is Severity.ERROR for f in findings) else 0
        doc = _sarif(findings, tool, exit_code, Path(os.path.abspath(root or Path.cwd())))
        return _json(doc) + "\n"
    raise ValueError(f"unknown format {fmt!r}")
