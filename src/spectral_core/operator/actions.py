"""Operator actions of the console: re-drive dead rows, revoke an approval, re-drive dead
World Agent turns (ADR 0038).

Each action runs in one transaction together with its audit row (:mod:`.audit`): both
commit or neither does.  Input is checked before anything is written; a bad request raises
:class:`~spectral_core.errors.OperatorError` and changes nothing.  A re-drive never leaves
its generation: named ids of another generation (or not dead) are left alone and not
counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg
import structlog

from ..db import Database, wrap_errors
from ..errors import ModuleNotFound, OperatorError
from ..outbox.records import channel_for
from ..sql import query
from . import audit

__all__ = [
    "MAX_IDS",
    "redrive_dead_rows",
    "redrive_dead_turns",
    "revoke_approval",
]

log = structlog.get_logger(__name__)

#: most ids one re-drive may name (``all`` has no bound: it is one statement)
MAX_IDS: Final = 1000
_BIGINT_MAX: Final = 2**63 - 1


def _check_selection(ids: list[Any] | None, all_rows: bool) -> None:
    if all_rows and ids is not None:
        raise OperatorError("give either ids or all, not both", field="ids")
    if not all_rows and ids is None:
        raise OperatorError("give ids (a list) or all: true", field="ids")
    if ids is not None and not 1 <= len(ids) <= MAX_IDS:
        raise OperatorError(f"ids must name 1..{MAX_IDS} entries", field="ids")


async def _require_generation(conn: psycopg.AsyncConnection[Any], generation: int) -> None:
    if not 1 <= generation <= _BIGINT_MAX:
        raise OperatorError("generation must be a positive integer", field="generation")
    cur = await conn.execute(query("generation_exists"), {"generation": generation})
    row = await cur.fetchone()
    if not (row and row[0]):
        raise OperatorError(f"generation {generation} was never allocated", field="generation")


async def _audit_redrive(
    conn: psycopg.AsyncConnection[Any],
    key_id: str,
    action: str,
    generation: int,
    ids: Sequence[object] | None,
    all_rows: bool,
    done: Sequence[object],
) -> None:
    """The audit row of a re-drive (rows or turns), in the re-drive's transaction."""
    await audit.record(
        conn,
        key_id=key_id,
        action=action,
        target=f"generation {generation}",
        detail={
            "generation": generation,
            "selection": "all" if all_rows else "ids",
            "requested": len(ids) if ids is not None else None,
            "redriven": len(done),
            "ids": list(done[:100]),
        },
    )


async def redrive_dead_rows(
    db: Database, *, key_id: str, generation: int, ids: list[int] | None, all_rows: bool = False
) -> list[int]:
    """Dead outbox rows of ``generation`` (the named ``ids``, or all of them) back to
    ``pending``, audited; returns the re-driven ids, sorted.

    Raises:
        OperatorError: Bad input (nothing changed).
        DatabaseError: The statement failed (nothing changed).
    """
    _check_selection(ids, all_rows)
    if ids is not None and not all(isinstance(i, int) and 1 <= i <= _BIGINT_MAX for i in ids):
        raise OperatorError("ids must be positive integers", field="ids")
    with wrap_errors():
        async with db.pool.connection() as conn, conn.transaction():
            await _require_generation(conn, generation)
            cur = await conn.execute(
                query("redrive_dead"),
                {"generation": generation, "ids": sorted(set(ids)) if ids is not None else None},
            )
            done = sorted(int(r[0]) for r in await cur.fetchall())
            await _audit_redrive(conn, key_id, "outbox.redrive", generation, ids, all_rows, done)
            # the generation's workers claim at once instead of at their next poll
            await conn.execute(query("notify_channel"), {"channel": channel_for(generation)})
    log.warning("operator.redrive", key_id=key_id, generation=generation, redriven=len(done))
    return done


async def redrive_dead_turns(
    db: Database, *, key_id: str, generation: int, ids: list[str] | None, all_rows: bool = False
) -> list[str]:
    """Dead World Agent turns of ``generation`` (the named thread ids, or all of them) back
    to ``pending`` within that generation, audited; returns the re-driven thread ids.

    Raises:
        OperatorError: Bad input (nothing changed).
        DatabaseError: The statement failed (nothing changed).
    """
    _check_selection(ids, all_rows)
    if ids is not None and not all(isinstance(i, str) and 1 <= len(i) <= 1000 for i in ids):
        raise OperatorError("ids must be thread ids (strings of 1..1000 characters)", field="ids")
    with wrap_errors():
        async with db.pool.connection() as conn, conn.transaction():
            await _require_generation(conn, generation)
            cur = await conn.execute(
                query("redrive_dead_turns"),
                {
                    "generation": generation,
                    "thread_ids": sorted(set(ids)) if ids is not None else None,
                },
            )
            done = sorted(str(r[0]) for r in await cur.fetchall())
            await _audit_redrive(conn, key_id, "agent.redrive", generation, ids, all_rows, done)
    log.warning("operator.agent_redrive", key_id=key_id, generation=generation, redriven=len(done))
    return done


async def revoke_approval(
    db: Database, *, key_id: str, approval_id: int, reason: str | None = None
) -> bool:
    """Revoke a module approval, audited; True when this call revoked it, False when it
    was already revoked (audited too).  Decisions stop within the approval cache's lifetime
    (``SPECTRAL_API_APPROVAL_TTL_S``, at most 1 s) on every API process.

    Raises:
        ModuleNotFound: No approval with this id (nothing changed, nothing audited).
        DatabaseError: The statement failed (nothing changed).
    """
    if not 1 <= approval_id <= _BIGINT_MAX:
        raise ModuleNotFound("no approval with this id", approval_id=approval_id)
    with wrap_errors():
        async with db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                query("revoke_module_approval"), {"id": approval_id, "reason": reason}
            )
            revoked = await cur.fetchone() is not None
            if not revoked:
                cur = await conn.execute(query("module_approval_exists"), {"id": approval_id})
                if await cur.fetchone() is None:
                    raise ModuleNotFound("no approval with this id", approval_id=approval_id)
            await audit.record(
                conn,
                key_id=key_id,
                action="approval.revoke",
                target=f"approval {approval_id}",
                detail={
                    "approval_id": approval_id,
                    "reason": reason,
                    "already_revoked": not revoked,
                },
            )
    log.warning("operator.approval_revoked", key_id=key_id, approval_id=approval_id)
    return revoked
