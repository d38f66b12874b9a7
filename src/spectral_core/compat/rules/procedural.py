"""Procedural code: DO blocks, CALL, EXECUTE, and replacing views and functions.

A PL/pgSQL ``DO`` block is parsed; its static statements are linted as if they ran (inside
the block's transaction), a constant ``EXECUTE`` string is parsed and linted, anything else
the lint cannot see is ``opaque-sql``.
"""

from __future__ import annotations

from pglast import ast
from pglast.parser import ParseError

from spectral_core.compat._node import Node, parse
from spectral_core.compat.checker import Checker, names
from spectral_core.compat.plpgsql import do_block_items
from spectral_core.compat.registry import Gate, on, rule
from spectral_core.compat.rules.renames import view_shim
from spectral_core.compat.schema import QualName, display

__all__: list[str] = []

_C = Gate.COMPAT


@rule("opaque-sql", _C, blocking=True)
class OpaqueSql:
    """SQL the lint cannot see through (dynamic EXECUTE, CALL, other languages).

    Bad:
        DO $$ BEGIN EXECUTE format('DROP TABLE %I', 'x'); END $$;
    Good:
        DO $$ BEGIN EXECUTE 'ALTER TABLE core.outbox ADD COLUMN lease int'; END $$;
    """


@rule("replace-deployed", _C, blocking=False)
class ReplaceDeployed:
    """CREATE OR REPLACE of a deployed view or function.

    Bad:
        CREATE OR REPLACE FUNCTION core.f() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;
    Good:
        CREATE FUNCTION core.f_v2() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;
    """


def _replace(cx: Checker, kind: str, qn: QualName, replace: bool, loc: int | None) -> None:
    existing = cx.model.obj(kind, qn)
    unknown_counts = existing is None and not cx.model.has_baseline
    if replace and (unknown_counts or (existing is not None and existing.deployed)):
        known = "of the prior generation" if existing else "that may exist in production"
        cx.emit(
            "replace-deployed",
            f"CREATE OR REPLACE {kind} {display(qn)} replaces one "
            f"{known}; old code calls the new definition, so keep its behaviour "
            "compatible (or create a versioned name)",
            loc,
        )
    cx.model.put(kind, qn, cx.replay_only)


@on(ast.ViewStmt)
def create_view(cx: Checker, node: Node) -> None:
    qn = cx.rv(node.view, "view")
    if not cx.replay_only and view_shim(cx, qn, node):
        cx.model.put("view", qn, False)
        return
    _replace(cx, "view", qn, bool(node.replace), cx.loc(node.view))


@on(ast.CreateFunctionStmt)
def create_function(cx: Checker, node: Node) -> None:
    qn = cx.qn(names(node.funcname), "function")
    _replace(cx, "function", qn, bool(node.replace), None)


@on(ast.CallStmt)
def call(cx: Checker, node: Node) -> None:
    name = ".".join(names(node.funccall.funcname))
    cx.emit(
        "opaque-sql",
        f"CALL {name}: a procedure body is opaque to the lint; inline "
        "its statements or waive with a reason",
    )


@on(ast.ExecuteStmt)
def execute(cx: Checker, node: Node) -> None:
    cx.emit("opaque-sql", f"EXECUTE {node.name}: a prepared statement is opaque to the lint")


@on(ast.DoStmt)
def do_block(cx: Checker, node: Node) -> None:
    body, language, body_loc = "", "plpgsql", None
    for de in node.args or ():
        if de.defname == "as":
            body = de.arg.sval
            raw = de.arg_location if de.arg_location is not None else de.location
            body_loc = cx.char(raw) if isinstance(raw, int) and raw >= 0 else None
        elif de.defname == "language":
            language = de.arg.sval.lower()
    if language != "plpgsql":
        cx.emit("opaque-sql", f"DO block in language {language} is opaque to the lint")
        return
    start = _body_start(cx.text, body_loc)
    saved = cx.override
    try:
        for item in do_block_items(body):
            cx.override = _line_offset(cx, start, item.lineno) if saved is None else saved
            if item.sql is None:
                cx.emit(
                    "opaque-sql",
                    f"{item.why}: the lint cannot see what it runs; "
                    "use static statements or waive with a reason",
                )
                continue
            try:
                inner, _ = parse(item.sql)
            except ParseError as exc:
                cx.emit(
                    "opaque-sql",
                    f"statement in DO block does not parse "
                    f"({exc.args[0]}); the lint cannot see what it does",
                )
                continue
            for stmt, _ in inner:
                cx.statement(stmt, cx.offset)
    finally:
        cx.override = saved


def _body_start(text: str, loc: int | None) -> int | None:
    if loc is None or not (0 <= loc < len(text)):
        return None
    if text[loc] == "$":
        end = text.find("$", loc + 1)
        return end + 1 if end != -1 else None
    return loc + (2 if text[loc] in "eE" else 1)


def _line_offset(cx: Checker, start: int | None, lineno: int) -> int:
    if start is None:
        return cx.offset
    text = cx.text
    pos = start
    for _ in range(max(lineno - 1, 0)):
        nxt = text.find("\n", pos)
        if nxt == -1:
            break
        pos = nxt + 1
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
