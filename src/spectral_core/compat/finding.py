"""Findings and the rule registry: every rule id the lints can emit, with its gate."""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Finding", "Gate", "Rule", "RULES", "Severity", "rule"]


class Severity(enum.StrEnum):
    """How a finding affects the exit code."""

    ERROR = "error"  # blocking: exit 1
    WARNING = "warning"  # reported, never blocking
    WAIVED = "waived"  # a blocking finding waived by a marker; printed with its reason


class Gate(enum.StrEnum):
    """Which marker may waive a rule."""

    COMPAT = "compat"  # waived by ``-- compat: breaking (reason: ...)``
    LOCKING = "locking"  # waived by ``-- locking: accepted (reason: ...)``; opt-in gate
    NONE = "none"  # never waived (syntax errors, marker errors, baseline errors)


class Rule(msgspec.Struct, frozen=True):
    """A rule: stable id, gate, whether it blocks, and a one-line summary."""

    id: str
    gate: Gate
    blocking: bool
    summary: str


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One reported problem at ``path:line:column`` (1-based)."""

    path: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    reason: str | None = None  # the waiver reason, for waived findings


def _r(id_: str, gate: Gate, blocking: bool, summary: str) -> tuple[str, Rule]:
    return id_, Rule(id_, gate, blocking, summary)


_C, _L, _N = Gate.COMPAT, Gate.LOCKING, Gate.NONE

#: Every rule, by id.  The order is the order of the reference table in docs/reference/lint.md.
RULES: dict[str, Rule] = dict(
    [
        _r("drop-table", _C, True, "DROP TABLE of a table the prior generation uses"),
        _r("drop-column", _C, True, "DROP COLUMN (or composite attribute) still in use"),
        _r("alter-column-type", _C, True, "ALTER COLUMN TYPE outside the compatible allowlist"),
        _r("add-column-not-null", _C, True, "new NOT NULL column without a non-null DEFAULT"),
        _r("add-unique", _C, True, "UNIQUE / PRIMARY KEY / EXCLUDE / unique index, deployed table"),
        _r("rename-table", _C, True, "RENAME of a table, view or sequence"),
        _r("rename-column", _C, True, "RENAME COLUMN"),
        _r("set-schema", _C, True, "ALTER ... SET SCHEMA"),
        _r("rename-object", _C, True, "RENAME of a function, type, schema or attribute"),
        _r("set-not-null", _C, True, "SET NOT NULL on an existing column"),
        _r("drop-default", _C, True, "DROP DEFAULT (or DROP IDENTITY) on an existing column"),
        _r("drop-object", _C, True, "DROP of a view, function, type, sequence, schema, ..."),
        _r("enum-rename-value", _C, True, "ALTER TYPE ... RENAME VALUE"),
        _r("enable-rls", _C, True, "ENABLE / FORCE ROW LEVEL SECURITY on an existing table"),
        _r("revoke", _C, True, "REVOKE of privileges or role membership"),
        _r("truncate", _C, True, "TRUNCATE of a deployed table"),
        _r("opaque-sql", _C, True, "SQL the lint cannot see through (dynamic EXECUTE, CALL, ...)"),
        _r("drop-not-null", _C, False, "DROP NOT NULL: the prior generation may read NULLs"),
        _r("add-check", _C, False, "new CHECK constraint on a deployed table"),
        _r("add-foreign-key", _C, False, "new FOREIGN KEY on a deployed table"),
        _r("enum-add-value", _C, False, "ALTER TYPE ... ADD VALUE"),
        _r("replace-deployed", _C, False, "CREATE OR REPLACE of a deployed view or function"),
        _r("drop-unique", _C, False, "dropping a unique index or constraint"),
        _r("rename-constraint", _C, False, "RENAME of an index, constraint, trigger or policy"),
        _r("marker-unused", _C, False, "a compat marker in a file with nothing to waive"),
        _r("lock-create-index", _L, True, "CREATE INDEX without CONCURRENTLY on a deployed table"),
        _r("lock-not-valid", _L, True, "CHECK / FOREIGN KEY added without NOT VALID"),
        _r("lock-table-rewrite", _L, True, "a change that rewrites a deployed table"),
        _r("lock-timeout", _L, True, "a locking statement with no lock_timeout set before it"),
        _r("syntax-error", _N, True, "the file does not parse"),
        _r("marker-invalid", _N, True, "a near-miss marker: it waives nothing"),
        _r("edited-migration", _N, True, "a deployed migration file was edited"),
        _r("deleted-migration", _N, True, "a deployed migration file was deleted or renamed"),
        _r("out-of-order", _N, True, "a new migration numbered below a deployed one"),
        _r("replay-failed", _N, False, "a deployed migration could not be replayed"),
        _r("manifest-unmapped", _N, True, "a directory has no deploy target"),
        _r("manifest-stale", _N, True, "a manifest entry names a directory that does not exist"),
        _r("manifest-unknown-target", _N, True, "a mapping names a target not declared"),
        _r("manifest-conflict", _N, True, "a directory is both mapped and non_deployed"),
        _r("manifest-invalid", _N, True, "the manifest is malformed"),
    ]
)


def rule(rule_id: str) -> Rule:
    """Return the registered rule *rule_id* (KeyError for a typo: rules are a closed set)."""
    return RULES[rule_id]
