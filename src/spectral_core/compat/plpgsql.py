"""Seeing through DO blocks: their static statements are linted, dynamic SQL fails closed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pglast.parser import ParseError, parse_plpgsql_json

from spectral_core.compat._node import decode, is_, parse

__all__ = ["BlockItem", "constant_string", "do_block_items"]


@dataclass(frozen=True)
class BlockItem:
    """One statement of a DO block: SQL text to lint, or an opaque statement (sql is None)."""

    lineno: int  # 1-based line within the block body
    sql: str | None
    why: str = ""


def constant_string(expr: str) -> str | None:
    """Fold a PL/pgSQL expression to its constant string value (``'a' || $$b$$``), else None."""
    try:
        stmts, _ = parse("SELECT " + expr)
    except ParseError:
        return None
    if len(stmts) != 1 or not is_(stmts[0][0], "SelectStmt"):
        return None
    targets: Sequence[Any] = stmts[0][0].targetList or ()
    return _fold(targets[0].val) if len(targets) == 1 else None


def _fold(node: Any) -> str | None:
    if is_(node, "A_Const"):
        return node.d["sval"].get("sval", "") if "sval" in node.d else None
    if is_(node, "TypeCast"):
        return _fold(node.arg)
    if is_(node, "A_Expr") and node.name and len(node.name) == 1:
        if node.name[0].sval == "||":
            left, right = _fold(node.lexpr), _fold(node.rexpr)
            if left is not None and right is not None:
                return left + right
    return None


def _query(expr: Any) -> str:
    query: str = (expr or {}).get("PLpgSQL_expr", {}).get("query", "")
    return query


def _walk(node: Any, lineno: int, out: list[BlockItem]) -> None:
    """Append the statements under *node* to *out*, in order (every key is walked: a
    statement in a container the lint does not know is still found)."""
    kind = type(node)
    if kind is list:
        for item in node:
            if type(item) is dict or type(item) is list:
                _walk(item, lineno, out)
        return
    if kind is not dict:
        return
    for key, val in node.items():
        vkind = type(val)
        if vkind is dict and key.startswith("PLpgSQL_stmt_"):
            line = val.get("lineno", lineno)
            if key == "PLpgSQL_stmt_execsql":
                out.append(BlockItem(line, _query(val.get("sqlstmt"))))
            elif key == "PLpgSQL_stmt_call":
                out.append(BlockItem(line, _query(val.get("expr"))))
            elif key in ("PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors") or "dynquery" in val:
                expr = _query(val.get("query") or val.get("dynquery"))
                text = constant_string(expr)
                if text is None:
                    why = f"dynamic EXECUTE of a non-constant string ({expr})"
                    out.append(BlockItem(line, None, why))
                else:
                    out.append(BlockItem(line, text))
            _walk(val, line, out)
        elif vkind is dict or vkind is list:
            _walk(val, lineno, out)


def do_block_items(body: str) -> Iterator[BlockItem]:
    """Yield the statements of a PL/pgSQL DO body, in order; an unparsable body is opaque."""
    tag = "$spectral_do$"
    n = 0
    while tag in body:
        n += 1
        tag = f"$spectral_do{n}$"
    wrapper = f"CREATE FUNCTION spectral_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}"
    try:
        tree = decode(parse_plpgsql_json(wrapper))
    except ParseError as exc:
        yield BlockItem(1, None, f"DO block does not parse as PL/pgSQL: {exc.args[0]}")
        return
    items: list[BlockItem] = []
    _walk(tree, 1, items)
    yield from items
