"""Indexes and locking: CREATE INDEX, the runner's transaction, lock_timeout, table rewrites.

The migration runner wraps every file in one transaction unless its first line is the
no-transaction header (``-- spectral: no-transaction``).  A statement PostgreSQL refuses
inside a transaction block (``CONCURRENTLY``, ``VACUUM``) is a certain failure there, so it is
an error whatever the options.  The other locking rules run with ``--locking``: the ones that
hold a strong lock for as long as the table is large are errors; a missing ``lock_timeout``
is a warning (a risk, not a certainty; the runner may set one itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, TransactionStmtKind, VariableSetKind

from spectral_core.compat._node import Node, const_text, is_
from spectral_core.compat.checker import Checker, member
from spectral_core.compat.registry import Gate, on, on_alter, rule
from spectral_core.compat.rules.constraints import unique_verdict
from spectral_core.compat.rules.tables import fill_from_query
from spectral_core.compat.schema import Table, display

__all__ = ["forbid_in_transaction"]

AT = AlterTableType
TSK = TransactionStmtKind
_L = Gate.LOCKING


@rule("transaction-forbidden", Gate.NONE, blocking=True)
class TransactionForbidden:
    """A statement PostgreSQL refuses in a transaction, in a file the runner wraps in one.

    ``CREATE INDEX CONCURRENTLY``, ``DROP INDEX CONCURRENTLY``, ``REINDEX ... CONCURRENTLY``,
    ``DETACH PARTITION ... CONCURRENTLY``, ``VACUUM`` and the like fail in a wrapped file
    (and inside a DO block or an explicit BEGIN): start the file with the runner's
    ``-- spectral: no-transaction`` header and keep the statement alone in it.

    Bad:
        CREATE INDEX CONCURRENTLY outbox_payload_idx ON core.outbox (payload);
    Good:
        -- spectral: no-transaction
        CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_payload_idx ON core.outbox (payload);
    """


@rule("lock-create-index", _L, blocking=True)
class LockCreateIndex:
    """CREATE INDEX without CONCURRENTLY on a deployed table.

    Bad:
        CREATE INDEX outbox_payload_idx ON core.outbox (payload);
    Good:
        -- spectral: no-transaction
        CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_payload_idx ON core.outbox (payload);
    """


@rule("lock-not-valid", _L, blocking=True)
class LockNotValid:
    """CHECK / FOREIGN KEY added without NOT VALID (a validation scan under lock).

    Bad:
        SET lock_timeout = '2s';
        ALTER TABLE core.outbox ADD CONSTRAINT few CHECK (attempts < 100);
    Good:
        SET lock_timeout = '2s';
        ALTER TABLE core.outbox ADD CONSTRAINT few CHECK (attempts < 100) NOT VALID;
    """


@rule("lock-validate-in-transaction", _L, blocking=True)
class LockValidateInTransaction:
    """VALIDATE CONSTRAINT in the same transaction as its NOT VALID add.

    Bad:
        SET lock_timeout = '2s';
        ALTER TABLE core.outbox ADD CONSTRAINT few CHECK (attempts < 100) NOT VALID;
        ALTER TABLE core.outbox VALIDATE CONSTRAINT few;
    Good:
        SET lock_timeout = '2s';
        ALTER TABLE core.outbox VALIDATE CONSTRAINT outbox_attempts_check;
    """


@rule("lock-table-rewrite", _L, blocking=True)
class LockTableRewrite:
    """A change that rewrites a deployed table under ACCESS EXCLUSIVE.

    Bad:
        SET lock_timeout = '2s';
        ALTER TABLE core.outbox ALTER COLUMN attempts TYPE bigint;
    Good:
        SET lock_timeout = '2s';
        ALTER TABLE core.outbox ALTER COLUMN topic TYPE varchar(200);
    """


@rule("lock-timeout", _L, blocking=False)
class LockTimeout:
    """A statement taking a strong lock on a deployed table with no lock_timeout set before it.

    Bad:
        ALTER TABLE core.outbox ADD COLUMN lease int;
    Good:
        SET lock_timeout = '2s';
        ALTER TABLE core.outbox ADD COLUMN lease int;
    """


def forbid_in_transaction(cx: Checker, what: str) -> None:
    """*what* cannot run inside a transaction block: an error in a wrapped file."""
    f = cx.file
    if cx.override is not None:
        where = "inside a DO block (which runs in a transaction)"
    elif f.explicit:
        where = "inside the file's explicit BEGIN"
    elif f.wrapped:
        where = (
            "in a file the migration runner wraps in one transaction (its first line is "
            "not `-- spectral: no-transaction`)"
        )
    else:
        return
    cx.emit(
        "transaction-forbidden",
        f"{what} cannot run in a transaction block and fails {where}; put it alone in a "
        "file that starts with `-- spectral: no-transaction`",
    )


@on(ast.IndexStmt)
def create_index(cx: Checker, node: Node) -> None:
    qn = cx.rv(node.relation)
    t = cx.model.table(qn)
    loc = cx.loc(node.relation)
    if node.concurrent:
        forbid_in_transaction(cx, "CREATE INDEX CONCURRENTLY")
    keys = [p.name for p in node.indexParams or () if p.name]
    if len(keys) != len(node.indexParams or ()):
        keys = []  # an expression key: the lint cannot follow it
    if node.unique or node.primary:
        why = unique_verdict(
            t, keys, primary=bool(node.primary), nulls_not_distinct=bool(node.nulls_not_distinct)
        )
        if why is not None:
            cx.emit(
                "add-unique",
                f"unique index {node.idxname or ''} on {display(qn)}: {why}; enforce "
                "uniqueness in code first and add the index in a later release",
                loc,
            )
    if t.deployed and not node.concurrent:
        cx.emit(
            "lock-create-index",
            f"CREATE INDEX on {display(qn)} without CONCURRENTLY blocks writes while it builds",
            loc,
        )
        cx.lock_stmt("CREATE INDEX")
    if node.idxname:
        iqn = (qn[0], node.idxname)
        if not (node.if_not_exists and cx.model.obj("index", iqn)):
            cx.model.drop("index", iqn)
            cx.model.put(
                "index",
                iqn,
                cx.replay_only,
                unique=bool(node.unique or node.primary),
                table=qn,
                columns=tuple(keys),
                partial=node.whereClause is not None,
            )


@on(ast.ReindexStmt)
def reindex(cx: Checker, node: Node) -> None:
    if any(p.defname == "concurrently" for p in node.params or ()):
        forbid_in_transaction(cx, "REINDEX ... CONCURRENTLY")


@on(ast.VacuumStmt)
def vacuum(cx: Checker, node: Node) -> None:
    if node.is_vacuumcmd:
        forbid_in_transaction(cx, "VACUUM")


@on(ast.CreatedbStmt)
def create_database(cx: Checker, node: Node) -> None:
    forbid_in_transaction(cx, "CREATE DATABASE")


@on(ast.AlterSystemStmt)
def alter_system(cx: Checker, node: Node) -> None:
    forbid_in_transaction(cx, "ALTER SYSTEM")


@on_alter(AT.AT_DetachPartition)
def detach_partition(cx: Checker, t: Table, cmd: Node, live: bool) -> None:
    if cmd.def_ is not None and cmd.def_.concurrent:
        forbid_in_transaction(cx, "DETACH PARTITION ... CONCURRENTLY")


@on(ast.TransactionStmt)
def transaction(cx: Checker, node: Node) -> None:
    kind = member(TransactionStmtKind, node.kind)
    if kind in (TSK.TRANS_STMT_BEGIN, TSK.TRANS_STMT_START):
        cx.file.explicit = True
    elif kind in (TSK.TRANS_STMT_COMMIT, TSK.TRANS_STMT_ROLLBACK, TSK.TRANS_STMT_COMMIT_PREPARED):
        cx.file.explicit = False


@on(ast.CreateTrigStmt)
def create_trigger(cx: Checker, node: Node) -> None:
    if cx.model.table(cx.rv(node.relation)).deployed:
        cx.lock_stmt("CREATE TRIGGER")


@on(ast.VariableSetStmt)
def set_variable(cx: Checker, node: Node) -> None:
    name = (node.name or "").lower()
    setting = member(VariableSetKind, node.kind) is VariableSetKind.VAR_SET_VALUE
    values = [v for v in (const_text(a) for a in node.args or ()) if v is not None]
    if name == "lock_timeout":
        cx.file.lock_timeout = setting and bool(values) and values[0] not in ("0", "")
    elif name == "search_path":
        cx.model.search_path = [v for v in values if v] if setting else ["public"]


@on(ast.SelectStmt)
def select(cx: Checker, node: Node) -> None:
    into = node.intoClause
    if into is not None and into.rel is not None:  # SELECT ... INTO: CREATE TABLE AS
        qn = cx.rv(into.rel)
        t = Table(qn, cx.replay_only, columns_known=False)
        cx.model.tables[qn] = t
        fill_from_query(t, None)
        return
    for target in node.targetList or ():
        fc = target.val
        if is_(fc, "FuncCall") and fc.funcname[-1].sval == "set_config":
            args: Sequence[Any] = fc.args or ()
            if len(args) >= 2 and const_text(args[0]) == "lock_timeout":
                cx.file.lock_timeout = (const_text(args[1]) or "0") not in ("0", "")
