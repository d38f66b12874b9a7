"""The audit trail of operator actions (``core.operator_audit``, ADR 0038).

:func:`record` writes one row on the caller's connection, inside the action's transaction:
the action and its row commit together or not at all.  :func:`list_entries` reads them back,
newest first.  A row names the operator key (id and label, never a token), the action, its
target and a JSON detail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from ..db import Database, wrap_errors
from ..errors import OperatorError
from ..sql import query

__all__ = ["AUDIT_LIMIT_MAX", "AuditEntry", "list_entries", "record"]

#: most entries one listing returns
AUDIT_LIMIT_MAX: Final = 1000


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    at: datetime
    #: the operator key's id
    operator: str
    operator_label: str | None
    action: str
    target: str
    detail: dict[str, Any]


async def record(
    conn: psycopg.AsyncConnection[Any],
    *,
    key_id: str,
    action: str,
    target: str,
    detail: dict[str, Any],
) -> int:
    """Write the audit row of an action on ``conn`` (the action's transaction); its id.

    Raises:
        DatabaseError: The insert failed (the caller's transaction rolls back with it).
    """
    with wrap_errors():
        cur = await conn.execute(
            query("insert_operator_audit"),
            {"key_id": key_id, "action": action, "target": target, "detail": Jsonb(detail)},
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def list_entries(db: Database, *, limit: int = 100) -> list[AuditEntry]:
    """The newest ``limit`` audit rows, newest first.

    Raises:
        OperatorError: ``limit`` outside 1..AUDIT_LIMIT_MAX.
        DatabaseError: The read failed.
    """
    if not 1 <= limit <= AUDIT_LIMIT_MAX:
        raise OperatorError(f"limit must be 1..{AUDIT_LIMIT_MAX}", field="limit")
    with wrap_errors():
        async with db.pool.connection() as conn:
            cur = await conn.execute(query("list_operator_audit"), {"limit": limit})
            rows = await cur.fetchall()
    return [
        AuditEntry(
            id=int(r[0]),
            at=r[1],
            operator=r[2],
            operator_label=r[3],
            action=r[4],
            target=r[5],
            detail=r[6] if isinstance(r[6], dict) else {},
        )
        for r in rows
    ]
