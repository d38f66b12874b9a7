"""Findings, severities, and the rule registry's public names (see :mod:`.registry`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from spectral_core.compat.registry import RULES, Gate, Rule, all_rules

__all__ = ["Finding", "Gate", "Rule", "RULES", "Severity", "rule"]


class Severity(enum.StrEnum):
    """How a finding affects the exit code."""

    ERROR = "error"  # blocking: exit 1
    WARNING = "warning"  # reported, never blocking
    WAIVED = "waived"  # a blocking finding waived by a marker; printed with its reason


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One reported problem at ``path:line:column`` (1-based)."""

    path: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    reason: str | None = None  # the waiver reason, for waived findings


def rule(rule_id: str) -> Rule:
    """Return the registered rule *rule_id* (KeyError for a typo: rules are a closed set)."""
    return all_rules()[rule_id]
