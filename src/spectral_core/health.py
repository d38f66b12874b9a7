"""The health model: ``application/health+json`` documents and the checks behind them.

Framework-agnostic: :class:`HealthProbe` produces a :class:`HealthReport`; the API turns it
into a response (200 on ``pass``/``warn``, 503 on ``fail``).  The shape follows
draft-inadarei-api-health-check: ``status``, ``version``, ``releaseId`` (the running
generation) and ``checks`` keyed ``component:measurement``, each a list of check objects.

Checks (each a pure function of facts, so they are unit-testable):

==========================  ==================================================  =========
key                         fact                                                 worst
==========================  ==================================================  =========
``database:reachable``      one round trip answered within the timeout           fail
``database:writable``       the session takes writes (not a standby, not         fail
                            ``transaction_read_only``)
``migrations:head``         ledger head vs the newest bundled migration          fail/warn
``outbox:writable``         ``core.outbox`` exists and is INSERT-able            fail
``workers:live``            live workers (running/reconnecting) of this gen      warn
``fleet:live``              live API processes of this gen (this one included)   warn
``sandbox:self_test``       the built-in echo module compiles and runs           fail
``operator_keys:loaded``    trusted operator public keys configured              warn
``llm_credential:<domain>`` credential configured (true/false, never the value)  warn
==========================  ==================================================  =========

Every database fact comes from one statement (``health_probe``), and the whole report is
cached for ``cache_s`` so a probe every second (or many probes) costs at most one round trip
per interval.  Nothing secret is ever included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import anyio
import anyio.to_thread
import msgspec
import structlog

from .db import Database, wrap_errors
from .migrate import head
from .settings import Settings
from .sql import query

__all__ = [
    "HEALTH_MEDIA_TYPE",
    "HealthCheck",
    "HealthProbe",
    "HealthReport",
    "Status",
    "check_database",
    "check_database_writable",
    "check_fleet",
    "check_llm_credentials",
    "check_migrations",
    "check_operator_keys",
    "check_outbox",
    "check_sandbox",
    "check_workers",
    "worst",
]

log = structlog.get_logger(__name__)

HEALTH_MEDIA_TYPE: Final = "application/health+json"

Status = Literal["pass", "warn", "fail"]
_RANK: Final = {"pass": 0, "warn": 1, "fail": 2}


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """One check object (``observedValue`` is never a secret)."""

    status: Status
    component_type: str | None = None
    observed_value: Any = None
    observed_unit: str | None = None
    output: str | None = None
    time: str | None = None


class HealthReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """The ``application/health+json`` document."""

    status: Status
    version: str
    release_id: str
    service_id: str = "spectral-api"
    description: str = "spectral decision API"
    checks: dict[str, list[HealthCheck]] = {}

    @property
    def http_status(self) -> int:
        """200 on pass/warn, 503 on fail (the deploy go/no-go)."""
        return 503 if self.status == "fail" else 200


def worst(statuses: Any) -> Status:
    """The most severe status of an iterable (``pass`` when empty)."""
    result: Status = "pass"
    for status in statuses:
        if _RANK[status] > _RANK[result]:
            result = status
    return result


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_database(error: str | None, latency_ms: float | None) -> HealthCheck:
    """``database:reachable``: fail with a short, secret-free reason when unreachable."""
    if error is not None:
        return HealthCheck(status="fail", component_type="datastore", output=error, time=_now())
    return HealthCheck(
        status="pass",
        component_type="datastore",
        observed_value=round(latency_ms or 0.0, 3),
        observed_unit="ms",
        time=_now(),
    )


def check_database_writable(writable: bool | None) -> HealthCheck:
    """``database:writable``: a read-only session (a standby after a failover, or
    ``default_transaction_read_only``) is an outage, never a healthy database."""
    if not writable:
        return HealthCheck(
            status="fail",
            component_type="datastore",
            observed_value=False if writable is not None else None,
            output="database session is read-only (a standby or a read-only session): "
            "writes are refused"
            if writable is not None
            else "database unreachable",
            time=_now(),
        )
    return HealthCheck(status="pass", component_type="datastore", observed_value=True, time=_now())


def check_migrations(db_head: int | None, code_head: int) -> HealthCheck:
    """``migrations:head``: equal passes; schema behind the code fails; ahead warns.

    A schema ahead of this code is normal for the previous generation during an
    expand/contract rollout, so it is only a warning.
    """
    if db_head is None:
        return HealthCheck(
            status="fail",
            component_type="datastore",
            output="migration ledger unreadable",
            time=_now(),
        )
    value = {"database": db_head, "code": code_head}
    if db_head < code_head:
        return HealthCheck(
            status="fail",
            component_type="datastore",
            observed_value=value,
            output="pending migrations: run `spectral migrate`",
            time=_now(),
        )
    if db_head > code_head:
        return HealthCheck(
            status="warn",
            component_type="datastore",
            observed_value=value,
            output="schema is ahead of this code (expand/contract rollout)",
            time=_now(),
        )
    return HealthCheck(status="pass", component_type="datastore", observed_value=value, time=_now())


def check_outbox(writable: bool | None) -> HealthCheck:
    """``outbox:writable``: the publish path (``core.outbox`` present and INSERT-able)."""
    if not writable:
        return HealthCheck(
            status="fail",
            component_type="component",
            observed_value=False,
            output="core.outbox is missing or not writable",
            time=_now(),
        )
    return HealthCheck(status="pass", component_type="component", observed_value=True, time=_now())


def _live_count(live: int | None, unreadable: str, none_live: str) -> HealthCheck:
    """A count of live processes: fail when it could not be read, warn at 0, else pass."""
    if live is None:
        return HealthCheck(
            status="fail", component_type="component", output=unreadable, time=_now()
        )
    if live == 0:
        return HealthCheck(
            status="warn",
            component_type="component",
            observed_value=0,
            output=none_live,
            time=_now(),
        )
    return HealthCheck(status="pass", component_type="component", observed_value=live, time=_now())


def check_workers(live: int | None, generation: int) -> HealthCheck:
    """``workers:live``: warn when no live worker of this generation consumes the outbox."""
    return _live_count(
        live,
        "worker registry unreadable",
        f"no live worker of generation {generation}: published events wait until one starts",
    )


def check_fleet(live: int | None, generation: int) -> HealthCheck:
    """``fleet:live``: the API processes of this generation whose registry heartbeat is
    fresh (ADR 0032).  The answering process is one of them, so 0 means its own
    registration is not (yet) written: warn."""
    return _live_count(
        live,
        "API registry unreadable",
        f"no live API process of generation {generation} registered (not even "
        "this one): tenant limits are not shared across the fleet",
    )


def check_sandbox(ok: bool) -> HealthCheck:
    """``sandbox:self_test``: the built-in module compiled and ran."""
    if not ok:
        return HealthCheck(
            status="fail",
            component_type="component",
            observed_value=False,
            output="sandbox self-test failed",
            time=_now(),
        )
    return HealthCheck(status="pass", component_type="component", observed_value=True, time=_now())


def check_operator_keys(count: int) -> HealthCheck:
    """``operator_keys:loaded``: warn when no key is trusted (nothing can be approved)."""
    if count == 0:
        return HealthCheck(
            status="warn",
            component_type="component",
            observed_value=0,
            output="SPECTRAL_OPERATOR_KEYS is empty: no module can run",
            time=_now(),
        )
    return HealthCheck(status="pass", component_type="component", observed_value=count, time=_now())


def check_llm_credentials(credentials: Mapping[str, str]) -> dict[str, list[HealthCheck]]:
    """``llm_credential:<domain>``: configured true/false per domain, never the value."""
    out: dict[str, list[HealthCheck]] = {}
    for domain in sorted(credentials):
        configured = bool(credentials[domain])
        out[f"llm_credential:{domain}"] = [
            HealthCheck(
                status="pass" if configured else "warn",
                component_type="component",
                observed_value=configured,
                output=None if configured else "credential is empty",
                time=_now(),
            )
        ]
    return out


class HealthProbe:
    """Computes the health report, cached for ``cache_s``, one DB round trip per refresh.

    Args:
        settings: Process settings (version, generation, LLM credential domains).
        db: The process's database.
        generation: The running (verified) generation.
        sandbox_check: Returns True when the sandbox self-test passed (run in a thread).
        operator_keys: Number of trusted operator keys.
        cache_s: How long a computed report is served again.
        timeout_s: Deadline for the database round trip.
        clock: Monotonic clock (tests).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        generation: int,
        sandbox_check: Callable[[], bool],
        operator_keys: int,
        cache_s: float = 0.5,
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.db = db
        self.generation = generation
        self._sandbox_check = sandbox_check
        self._operator_keys = operator_keys
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._code_head = head()
        self._cached: tuple[float, HealthReport] | None = None
        self._lock = anyio.Lock()

    async def report(self) -> HealthReport:
        """The current report (served from cache when younger than ``cache_s``)."""
        cached = self._cached
        if cached is not None and self._clock() - cached[0] < self.cache_s:
            return cached[1]
        async with self._lock:
            cached = self._cached
            if cached is not None and self._clock() - cached[0] < self.cache_s:
                return cached[1]
            report = await self.compute()
            self._cached = (self._clock(), report)
            return report

    async def _probe_db(self) -> tuple[str | None, float | None, tuple[Any, ...] | None]:
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout_s), wrap_errors():
                async with self.db.pool.connection(timeout=self.timeout_s) as conn:
                    cur = await conn.execute(
                        query("health_probe"),
                        {
                            "generation": self.generation,
                            "stale_after_s": self.settings.worker_stale_after_s,
                        },
                    )
                    row = await cur.fetchone()
        except TimeoutError:
            return "database did not answer in time", None, None
        except Exception as exc:  # noqa: BLE001 - a probe reports, it does not raise
            log.warning("health.database_failed", error_type=type(exc).__name__)
            return f"database unreachable ({type(exc).__name__})", None, None
        return None, (time.perf_counter() - started) * 1000, row

    async def compute(self) -> HealthReport:
        """Run every check now (no cache)."""
        error, latency, row = await self._probe_db()
        try:
            sandbox_ok = bool(await anyio.to_thread.run_sync(self._sandbox_check))
        except Exception:  # noqa: BLE001
            sandbox_ok = False
        checks: dict[str, list[HealthCheck]] = {
            "database:reachable": [check_database(error, latency)],
            "database:writable": [check_database_writable(bool(row[3]) if row else None)],
            "migrations:head": [check_migrations(int(row[0]) if row else None, self._code_head)],
            "outbox:writable": [check_outbox(bool(row[1]) if row else None)],
            "workers:live": [check_workers(int(row[2]) if row else None, self.generation)],
            "fleet:live": [check_fleet(int(row[4]) if row else None, self.generation)],
            "sandbox:self_test": [check_sandbox(sandbox_ok)],
            "operator_keys:loaded": [check_operator_keys(self._operator_keys)],
            **check_llm_credentials(self.settings.llm_credential),
        }
        status = worst(c.status for items in checks.values() for c in items)
        return HealthReport(
            status=status,
            version=self.settings.running_version,
            release_id=str(self.generation),
            checks=checks,
        )
