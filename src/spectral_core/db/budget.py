"""The connection budget (ADR 0035): how many database connections a process opens.

Every connection a process opens follows from its :class:`~spectral_core.Settings`:

==========================  =================================================  ============
connection                  size                                               URL
==========================  =================================================  ============
main pool                   ``max(DATABASE_POOL_MAX, DATABASE_POOL_MIN, 1)``    DATABASE_URL
heartbeat / API registry    1 (a connection of its own, never from the pool)   DATABASE_URL
LISTEN (workers)            1                                                  SESSION_URL
checkpointer pool (workers) ``max(2, min(AGENT_CONCURRENCY, POOL_MAX) + 1)``   AGENT_DATABASE_URL
                                                                               (else DATABASE_URL)
==========================  =================================================  ============

So a fleet of K API and M worker processes (same settings) opens
``K x api.main + M x workers.main`` connections on ``SPECTRAL_DATABASE_URL`` (the
transaction pooler's clients when it is one), ``M`` on the session URL (always a
server connection: LISTEN needs a session), and ``M x checkpointer`` on the agent URL when
it is set apart.  :func:`check_budget` refuses a process whose own total exceeds
``SPECTRAL_DATABASE_MAX_CONNECTIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from ..settings import Settings

__all__ = ["ConnectionNeeds", "check_budget", "connection_needs", "fleet_connections"]

Role = Literal["api", "workers"]


@dataclass(frozen=True, slots=True)
class ConnectionNeeds:
    """The connections one process of ``role`` opens, by purpose."""

    role: Role
    pool: int
    heartbeat: int
    listen: int
    checkpointer: int
    #: the checkpointer pool has a URL of its own (SPECTRAL_AGENT_DATABASE_URL)
    separate_agent_url: bool

    @property
    def main(self) -> int:
        """Connections on ``SPECTRAL_DATABASE_URL``."""
        return self.pool + self.heartbeat + (0 if self.separate_agent_url else self.checkpointer)

    @property
    def session(self) -> int:
        """Connections on the session URL (LISTEN)."""
        return self.listen

    @property
    def agent(self) -> int:
        """Connections on ``SPECTRAL_AGENT_DATABASE_URL`` (0 when it is not set)."""
        return self.checkpointer if self.separate_agent_url else 0

    @property
    def total(self) -> int:
        return self.pool + self.heartbeat + self.listen + self.checkpointer

    def explain(self) -> str:
        parts = [f"pool {self.pool}", f"{'heartbeat' if self.role == 'workers' else 'registry'} 1"]
        if self.listen:
            parts.append(f"LISTEN {self.listen}")
        if self.checkpointer:
            parts.append(f"checkpointer pool {self.checkpointer}")
        return " + ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "heartbeat": self.heartbeat,
            "listen": self.listen,
            "checkpointer": self.checkpointer,
            "main_url": self.main,
            "session_url": self.session,
            "agent_url": self.agent,
            "total": self.total,
        }


def connection_needs(settings: Settings, role: Role) -> ConnectionNeeds:
    """The connections a ``spectral-api`` (``"api"``) or ``spectral-workers``
    (``"workers"``) process with ``settings`` opens at most."""
    pool = max(settings.database_pool_max, settings.database_pool_min, 1)
    workers = role == "workers"
    checkpointer = (
        max(2, min(settings.agent_concurrency, settings.database_pool_max) + 1) if workers else 0
    )
    return ConnectionNeeds(
        role=role,
        pool=pool,
        heartbeat=1,
        listen=1 if workers else 0,
        checkpointer=checkpointer,
        separate_agent_url=bool(settings.agent_database_url),
    )


def check_budget(settings: Settings, role: Role) -> ConnectionNeeds:
    """The process's needs, checked against ``SPECTRAL_DATABASE_MAX_CONNECTIONS``.

    Raises:
        ConfigError: The settings need more connections than the budget (the message
            names the count, its parts and what to change).
    """
    needs = connection_needs(settings, role)
    budget = settings.database_max_connections
    if budget is not None and needs.total > budget:
        raise ConfigError(
            f"spectral-{role} needs {needs.total} database connections ({needs.explain()}) "
            f"but SPECTRAL_DATABASE_MAX_CONNECTIONS is {budget}: lower "
            "SPECTRAL_DATABASE_POOL_MAX"
            + (" or SPECTRAL_AGENT_CONCURRENCY" if role == "workers" else "")
            + " or raise the budget",
            field="database_max_connections",
        )
    return needs


def fleet_connections(settings: Settings, *, api: int, workers: int) -> dict[str, Any]:
    """The connections of ``api`` API and ``workers`` worker processes running with
    ``settings``, per URL and in total, with the formula spelled out."""
    a, w = connection_needs(settings, "api"), connection_needs(settings, "workers")
    main = api * a.main + workers * w.main
    session = workers * w.session
    agent = workers * w.agent
    formula = f"{api} x {a.main} + {workers} x {w.main} = {main} on SPECTRAL_DATABASE_URL"
    formula += f"; {workers} x {w.session} = {session} on the session URL"
    if agent:
        formula += f"; {workers} x {w.agent} = {agent} on SPECTRAL_AGENT_DATABASE_URL"
    return {
        "api_processes": api,
        "worker_processes": workers,
        "per_api": a.as_dict(),
        "per_worker": w.as_dict(),
        "main_url": main,
        "session_url": session,
        "agent_url": agent,
        "total": main + session + agent,
        "formula": formula,
    }
