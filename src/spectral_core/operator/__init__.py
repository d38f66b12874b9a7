"""The operator console's server side, framework-agnostic (issue 18, ADR 0038): sessions of
operator keys, the read views, the audited actions and recent 429s per tenant."""

from . import audit
from .actions import MAX_IDS, redrive_dead_rows, redrive_dead_turns, revoke_approval
from .audit import AuditEntry
from .sessions import (
    SESSION_COOKIE,
    OperatorSession,
    close_session,
    csrf_matches,
    csrf_token,
    open_session,
    resolve_session,
)
from .throttles import RecentThrottles
from .views import OperatorViews, check_limit, deploy_verdict

__all__ = [
    "MAX_IDS",
    "SESSION_COOKIE",
    "AuditEntry",
    "OperatorSession",
    "OperatorViews",
    "RecentThrottles",
    "audit",
    "check_limit",
    "close_session",
    "csrf_matches",
    "csrf_token",
    "deploy_verdict",
    "open_session",
    "redrive_dead_rows",
    "redrive_dead_turns",
    "resolve_session",
    "revoke_approval",
]
