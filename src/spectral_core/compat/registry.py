"""The rule registry: every rule the lints can emit, and the statement handlers of the compat lint.

A rule is declared once, with :func:`rule`, on a class whose docstring is its documentation::

    @rule("drop-table", Gate.COMPAT, blocking=True)
    class DropTable:
        \"\"\"DROP TABLE of a table the prior generation uses.

        Bad:
            DROP TABLE core.outbox;
        Good:
            CREATE TABLE core.outbox_v2 (id bigint);
        \"\"\"

The first docstring line is the summary; the lines under ``Bad:`` and ``Good:`` are the
examples (SQL for the SQL rules; the test suite lints them).  The reference table in
``docs/reference/lint.md`` is generated from this registry (``python -m lint rules``).

Statement handlers register with :func:`on` (one top-level statement kind, named by its
pglast node class, checked to exist) and :func:`on_alter` (one ``ALTER TABLE`` subcommand,
a member of pglast's real :class:`~pglast.enums.AlterTableType`).  A kind registered twice
is an import-time error, so two modules cannot both silently claim one statement.

This module imports nothing from pglast: the manifest lint uses the registry's
non-SQL rules without the ``lint`` extra.  The SQL rules are declared in
:mod:`spectral_core.compat.rules`, imported by :func:`all_rules`.
"""

from __future__ import annotations

import enum
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "ALTERS",
    "Gate",
    "RULES",
    "Rule",
    "STATEMENTS",
    "all_rules",
    "on",
    "on_alter",
    "rule",
]


class Gate(enum.StrEnum):
    """Which marker may waive a rule."""

    COMPAT = "compat"  # waived by ``-- compat: breaking (reason: ...)``
    LOCKING = "locking"  # waived by ``-- locking: accepted (reason: ...)``; opt-in gate
    NONE = "none"  # never waived (syntax errors, marker errors, baseline errors)


@dataclass(frozen=True)
class Rule:
    """A rule: stable id, gate, whether it blocks, its family, summary and examples."""

    id: str
    gate: Gate
    blocking: bool
    summary: str
    family: str = ""
    bad: str = ""
    good: str = ""
    detail: str = ""  # the docstring's paragraphs between the summary and the examples


#: Every rule, by id, in declaration order (the order of the reference table).
RULES: dict[str, Rule] = {}
#: Top-level statement handlers by pglast node name.
STATEMENTS: dict[str, Callable[..., None]] = {}
#: ``ALTER TABLE`` subcommand handlers by ``AlterTableType`` member name.
ALTERS: dict[str, Callable[..., None]] = {}

_C = TypeVar("_C")
_F = TypeVar("_F", bound=Callable[..., None])


def _cleandoc(text: str) -> str:
    """``inspect.cleandoc`` without importing inspect (start-up time): strip the first line,
    dedent the rest, drop blank lines at both ends."""
    first, _, rest = text.partition("\n")
    lines = [first.strip(), *textwrap.dedent(rest).splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(line.rstrip() for line in lines)


def _parse_doc(doc: str) -> tuple[str, str, str, str]:
    lines = _cleandoc(doc).splitlines() or [""]
    summary = lines[0].strip().rstrip(".")
    detail: list[str] = []
    bad: list[str] = []
    good: list[str] = []
    target: list[str] | None = detail
    for line in lines[1:]:
        head = line.strip()
        if head == "Bad:":
            target = bad
        elif head == "Good:":
            target = good
        elif target is not None:
            target.append(line)
    return (
        summary,
        _cleandoc("\n".join(bad)),
        _cleandoc("\n".join(good)),
        " ".join(" ".join(detail).split()),
    )


def rule(rule_id: str, gate: Gate, *, blocking: bool) -> Callable[[type[_C]], type[_C]]:
    """Declare a rule on a class whose docstring holds its summary and Bad/Good examples.

    Raises:
        ValueError: the id is taken, or the docstring lacks a summary or an example.
    """

    def register(cls: type[_C]) -> type[_C]:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id!r} declared twice")
        summary, bad, good, detail = _parse_doc(cls.__doc__ or "")
        if not summary or not bad or not good:
            raise ValueError(f"rule {rule_id!r}: docstring needs a summary, Bad: and Good:")
        family = cls.__module__.rsplit(".", 1)[-1]
        RULES[rule_id] = Rule(rule_id, gate, blocking, summary, family, bad, good, detail)
        return cls

    return register


def on(kind: type[Any]) -> Callable[[_F], _F]:
    """Register a handler for top-level statements of the pglast node class *kind*."""
    name = kind.__name__

    def register(fn: _F) -> _F:
        if name in STATEMENTS:
            raise ValueError(f"statement kind {name} has two handlers")
        STATEMENTS[name] = fn
        return fn

    return register


def on_alter(subtype: enum.Enum) -> Callable[[_F], _F]:
    """Register a handler for one ``ALTER TABLE`` subcommand (an ``AlterTableType`` member)."""
    name = subtype.name

    def register(fn: _F) -> _F:
        if name in ALTERS:
            raise ValueError(f"ALTER TABLE subcommand {name} has two handlers")
        ALTERS[name] = fn
        return fn

    return register


def all_rules() -> dict[str, Rule]:
    """The full registry: imports the SQL rule modules (pglast) when they are installed."""
    try:
        import spectral_core.compat.rules  # noqa: F401
    except ImportError:  # the manifest lint without the lint extra
        pass
    return RULES


from spectral_core.compat import meta  # noqa: E402,F401  (the non-SQL rules)
