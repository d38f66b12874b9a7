"""The lint engine: parse each file, find its markers, judge it, apply waivers."""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast.parser import ParseError

from spectral_core.compat._node import parse
from spectral_core.compat.checker import Checker, Hit
from spectral_core.compat.errors import LintError
from spectral_core.compat.finding import RULES, Finding, Gate, Severity
from spectral_core.compat.markers import MarkerScan, scan_markers, skip_trivia
from spectral_core.compat.schema import SchemaModel
from spectral_core.compat.source import MigrationFile, Positions

__all__ = ["FileResult", "Linter", "lint_files", "lint_sql"]


@dataclass
class FileResult:
    """The findings of one file and how many statements it held."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    statements: int = 0
    deployed: bool = False  # replayed as the baseline, not judged


def _finding(
    path: str,
    pos: Positions,
    offset: int,
    rule_id: str,
    message: str,
    *,
    severity: Severity | None = None,
    reason: str | None = None,
) -> Finding:
    line, col = pos.at(offset)
    rule = RULES[rule_id]
    if severity is None:
        severity = Severity.ERROR if rule.blocking else Severity.WARNING
    return Finding(
        path=path,
        line=line,
        column=col,
        rule=rule_id,
        severity=severity,
        message=message,
        reason=reason,
    )


def _syntax(path: str, text: str, pos: Positions, exc: ParseError) -> Finding:
    offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    return _finding(path, pos, min(offset, len(text)), "syntax-error", str(exc.args[0]))


class Linter:
    """Lints migrations in order against one schema model.

    Args:
        locking: enable the locking-hazard gate.
        model: a schema model to start from (default: empty).
    """

    def __init__(self, *, locking: bool = False, model: SchemaModel | None = None) -> None:
        self.locking = locking
        self.checker = Checker(model, locking=locking)

    @property
    def model(self) -> SchemaModel:
        return self.checker.model

    def _run(self, text: str, path: str, scan: MarkerScan | None) -> tuple[list[Hit], int]:
        stmts, chars = parse(text)
        checker = self.checker
        tokens = scan.tokens if scan is not None else None
        checker.begin_file(text, deployed=scan is None, chars=chars, tokens=tokens)
        for stmt, offset in stmts:
            offset = skip_trivia(text, offset)  # the statement's first token, not its comments
            try:
                checker.statement(stmt, offset)
            except Exception as exc:  # a bug must not pass silently: fail closed, exit 2
                line, col = Positions(text).at(offset)
                raise LintError(
                    f"internal error at {path}:{line}:{col}: {exc!r}", path=path
                ) from exc
        return checker.end_file(), len(stmts)

    def replay(self, text: str, path: str) -> FileResult:
        """Apply a deployed migration to the model; it is not judged."""
        self.model.has_baseline = True
        try:
            _, count = self._run(text, path, None)
        except ParseError as exc:
            pos = Positions(text)
            f = _syntax(path, text, pos, exc)
            message = (
                f"deployed migration does not parse ({f.message} at {f.line}:{f.column});"
                " its objects are unknown"
            )
            return FileResult(
                path, [_finding(path, pos, 0, "replay-failed", message)], deployed=True
            )
        return FileResult(path, [], count, deployed=True)

    def lint(self, text: str, path: str) -> FileResult:
        """Judge a migration not yet deployed, then apply it to the model."""
        pos = Positions(text)
        try:
            scan = scan_markers(text)
        except ParseError as exc:
            return FileResult(path, [_syntax(path, text, pos, exc)])
        out = [_finding(path, pos, off, "marker-invalid", msg) for off, msg in scan.near_misses]
        try:
            hits, count = self._run(text, path, scan)
        except ParseError as exc:
            return FileResult(path, [_syntax(path, text, pos, exc), *out])
        out.extend(self._waive(path, pos, scan, hits))
        out.sort(key=lambda f: (f.line, f.column))
        return FileResult(path, out, count)

    def _waive(self, path: str, pos: Positions, scan: MarkerScan, hits: list[Hit]) -> list[Finding]:
        reasons = {Gate.COMPAT: scan.reason("compat"), Gate.LOCKING: scan.reason("locking")}
        used = {Gate.COMPAT: False, Gate.LOCKING: False}
        out = []
        for hit in hits:
            rule = RULES[hit.rule]
            reason = reasons.get(rule.gate) if rule.blocking else None
            if reason is not None:
                used[rule.gate] = True
                out.append(
                    _finding(
                        path,
                        pos,
                        hit.offset,
                        hit.rule,
                        hit.message,
                        severity=Severity.WAIVED,
                        reason=reason,
                    )
                )
            else:
                out.append(_finding(path, pos, hit.offset, hit.rule, hit.message))
        for marker in scan.markers:
            gate = Gate(marker.gate)
            if gate == Gate.LOCKING and not self.locking:
                continue
            if not used[gate] and marker.reason == reasons[gate]:
                used[gate] = True  # report one unused marker per gate
                out.append(
                    _finding(
                        path,
                        pos,
                        marker.offset,
                        "marker-unused",
                        f"{gate.value} marker waives nothing in this file; remove it",
                    )
                )
        return out


def lint_sql(
    sql: str, path: str = "<sql>", *, locking: bool = False, deployed_sql: str | None = None
) -> list[Finding]:
    """Lint one migration text, optionally after replaying *deployed_sql* as the baseline."""
    linter = Linter(locking=locking)
    if deployed_sql is not None:
        linter.replay(deployed_sql, "<deployed>")
    return linter.lint(sql, path).findings


def lint_files(files: list[MigrationFile], *, locking: bool = False) -> list[FileResult]:
    """Replay the deployed files and lint the others, all in migration order.

    Raises:
        LintError: a file cannot be read, or the engine failed.
    """
    linter = Linter(locking=locking)
    results = []
    top_deployed = max(
        (f.number for f in files if f.deployed and f.number is not None), default=None
    )
    for f in sorted(files, key=lambda m: m.sort_key):
        text = f.read()
        if f.deployed:
            results.append(linter.replay(text, f.display))
            continue
        res = linter.lint(text, f.display)
        if top_deployed is not None and f.number is not None and f.number < top_deployed:
            res.findings.insert(
                0,
                _finding(
                    f.display,
                    Positions(text),
                    0,
                    "out-of-order",
                    f"new migration numbered {f.number:04d} sorts before deployed migration "
                    f"{top_deployed:04d}; renumber it after the deployed ones",
                ),
            )
        results.append(res)
    return results
