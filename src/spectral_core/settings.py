"""Process settings: one frozen Struct, built once per process by the entrypoint.

``Settings.from_env(environ)`` collects every ``SPECTRAL_*`` variable, maps it 1:1 to a
field (``SPECTRAL_DATABASE_URL`` -> ``database_url``) and validates it.  An unknown
``SPECTRAL_*`` variable or a bad value is a :class:`~spectral_core.errors.ConfigError`.
``spectral_core`` itself never reads ``os.environ``: entrypoints pass the mapping in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .errors import ConfigError, GenerationError

__all__ = ["Settings", "package_version", "redact_url"]

PREFIX = "SPECTRAL_"
CREDENTIAL_PREFIX = "SPECTRAL_LLM_CREDENTIAL__"
_DOMAIN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

PosFloat = Annotated[float, Meta(gt=0)]
PosInt = Annotated[int, Meta(ge=1)]
#: bounds of a consumer's batch size and lane count (also checked by ``ConsumerConfig``)
OUTBOX_BATCH_MAX = 1000
OUTBOX_LANES_MAX = 64
#: inline decisions made back to back per event-loop iteration, by default (ADR 0018)
SANDBOX_INLINE_BATCH = 32
SANDBOX_INLINE_MS = 2.0
#: upper bound of a pruning batch (rows examined per transaction)
RETENTION_BATCH_MAX = 100_000
#: upper bound of the pruner's pace (rows examined per second)
RETENTION_ROWS_PER_S_MAX = 1_000_000


def package_version() -> str:
    """The installed spectral version (``0+unknown`` when not installed)."""
    try:
        return version("spectral")
    except PackageNotFoundError:  # pragma: no cover - only in a bare source tree
        return "0+unknown"


def redact_url(url: str | None) -> str | None:
    """Return ``url`` with any password replaced by ``***`` (safe for logs)."""
    if url is None:
        return None
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


_QUOTED = re.compile(r'"[^"]*"')


def _check_conninfo(field: str, value: str | None) -> None:
    """A connection string libpq cannot parse is a ConfigError naming the setting (not a
    driver traceback); the quoted fragments of libpq's reason are left out, since they can
    be pieces of a password."""
    if not value:
        return
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value)
    except Exception as exc:  # psycopg.ProgrammingError, whatever libpq says
        reason = _QUOTED.sub("…", str(exc).strip().splitlines()[0])
        env = "SPECTRAL_" + field.upper()
        raise ConfigError(
            f"{env} is not a valid PostgreSQL connection URL ({reason}); expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME or a key=value conninfo string",
            field=field,
        ) from None


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a spectral process is configured with.

    Field names are the ``SPECTRAL_*`` variable names without the prefix, lower-cased.
    Secrets (database URLs, LLM credentials) never appear in ``repr``.
    """

    database_url: str | None = None
    database_session_url: str | None = None
    #: Deprecated and ignored (ADR 0041): the same configuration works directly and
    #: through a transaction pooler; accepted so existing deployments boot (with a warning).
    database_transaction_pooler: bool = False
    database_pool_min: Annotated[int, Meta(ge=0)] = 1
    database_pool_max: PosInt = 10
    database_connect_timeout_s: PosFloat = 10.0
    #: a connection whose peer stopped answering (partition, vanished host) is declared
    #: dead after about this long: TCP keepalives and tcp_user_timeout on every connection
    database_tcp_timeout_s: Annotated[float, Meta(ge=1, le=600)] = 10.0
    #: the most database connections one process may open (its pools, heartbeat, LISTEN
    #: and checkpointer connections, ADR 0035); a process whose settings need more refuses
    #: to start.  None: unchecked
    database_max_connections: Annotated[int, Meta(ge=1, le=100_000)] | None = None

    generation: Annotated[int, Meta(ge=1)] | None = None
    version: str = ""
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: the binaries' event loop: uvloop when installed ("auto"), or forced either way
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"

    #: project-local folder for ``spectral up`` (embedded database, operator keys)
    home_dir: str = ".spectral"

    operator_keys: str = ""
    llm_credential: dict[str, str] = {}

    #: extra handler installers for spectral-workers: ``module:function`` entries,
    #: comma-separated; each is called as ``function(registry, settings)``
    worker_handlers: str = ""

    # migrations (ADR 0019): the apps' migration directories, separated by os.pathsep (each
    # is a set named by its directory's name, applied after spectral's own); the lock
    # timeout of every statement of a migration file (a file may set its own) and how often
    # a file that hit it is retried, with backoff, before the runner gives up
    migration_dirs: str = ""
    migration_lock_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 2.0
    migration_lock_retries: Annotated[int, Meta(ge=0, le=100)] = 10

    # outbox / workers tunables
    outbox_max_payload_bytes: PosInt = 256 * 1024
    outbox_batch_size: Annotated[int, Meta(ge=1, le=OUTBOX_BATCH_MAX)] = 100
    outbox_lanes: Annotated[int, Meta(ge=1, le=OUTBOX_LANES_MAX)] = 4
    outbox_max_attempts: PosInt = 10
    outbox_backoff_base_s: PosFloat = 1.0
    outbox_backoff_cap_s: PosFloat = 300.0
    poll_interval_s: PosFloat = 1.0
    heartbeat_interval_s: PosFloat = 2.0
    worker_stale_after_s: PosFloat = 10.0
    #: rows of workers not seen for this long (lost or exited, any generation) are
    #: deleted by the reapers (ADR 0027)
    worker_retention_s: PosFloat = 86400.0
    reaper_interval_s: PosFloat = 2.0
    # automatic retention (ADR 0030): every worker runs the pruner; one prunes at a time
    retention_enabled: bool = True
    #: seconds between two pruning passes of a worker
    retention_interval_s: Annotated[float, Meta(ge=1, le=86400)] = 60.0
    #: rows one pruning batch examines (one short transaction each)
    retention_batch_size: Annotated[int, Meta(ge=1, le=RETENTION_BATCH_MAX)] = 1000
    #: the pruner's pace: rows it examines (and at most deletes) per second, over every
    #: table; each batch is followed by a pause so that it and its pause last
    #: batch rows / this (ADR 0030)
    retention_rows_per_s: Annotated[float, Meta(ge=1, le=RETENTION_ROWS_PER_S_MAX)] = 5000.0
    #: ``done`` outbox rows finished longer ago than this are deleted
    outbox_retention_s: PosFloat = 7 * 86400.0
    #: the deduplication window promised to publishers: a publish repeating an
    #: idempotency key within this long after a handler took the first is a no-op for it
    dedup_window_s: PosFloat = 7 * 86400.0
    #: ledger rows (core.event_handled) older than this are deleted; at least the window
    ledger_retention_s: PosFloat = 14 * 86400.0
    #: ``done`` World Agent turns (and their checkpoints) finished longer ago are deleted
    agent_turn_retention_s: PosFloat = 7 * 86400.0
    shutdown_grace_s: PosFloat = 10.0
    #: set by the supervisor for its children: stop (as on SIGTERM) once this process is
    #: no longer our parent (ADR 0022)
    parent_pid: Annotated[int, Meta(ge=1)] | None = None
    reconnect_backoff_cap_s: PosFloat = 5.0
    outage_limit_s: PosFloat = 300.0

    # spectral-api: request limits, per-tenant defaults (overridable per tenant in
    # core.tenants), cache lifetimes and the sandbox budget of one decision
    api_max_body_bytes: PosInt = 1024 * 1024
    #: connection-level limits of spectral-api's HTTP server (ADR 0025): the request line
    #: and headers together (431 beyond), a connection's idle time before its first request
    #: and between requests, the time to receive a request's head and then its body (408
    #: beyond), and the open connections of one process (503 at connect beyond)
    api_max_header_bytes: Annotated[int, Meta(ge=1024, le=1024 * 1024)] = 16 * 1024
    api_idle_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    api_header_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    api_body_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    api_max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    api_rate: PosFloat = 50.0
    api_burst: PosInt = 100
    api_concurrency: PosInt = 16
    api_auth_ttl_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    api_approval_ttl_s: Annotated[float, Meta(ge=0, le=1)] = 0.5
    api_health_cache_s: Annotated[float, Meta(ge=0, le=60)] = 0.5
    api_sandbox_threads: Annotated[int, Meta(ge=1, le=256)] = 8
    sandbox_fuel: PosInt = 10_000_000
    sandbox_deadline_ms: PosInt = 100
    sandbox_memory_bytes: Annotated[int, Meta(ge=64 * 1024)] = 16 * 1024 * 1024
    sandbox_output_bytes: PosInt = 64 * 1024
    #: the sandbox's call path: ``auto`` (the C API fast path when wasmtime is a tested
    #: major, else the public API with a warning), ``capi`` (that path or refuse to start)
    #: or ``public`` (wasmtime-py's documented API only; ADR 0026)
    sandbox_binding: Literal["auto", "capi", "public"] = "auto"
    #: nesting bound (arrays/objects) of a decision's input and of its module's output
    sandbox_json_depth: Annotated[int, Meta(ge=1, le=512)] = 128
    #: fuel of the inline fast path: a decision that finishes within it runs on the event
    #: loop (no thread hop); otherwise it is re-run in a worker thread with the full
    #: budget.  0 disables the fast path.
    sandbox_inline_fuel: Annotated[int, Meta(ge=0)] = 200_000
    #: inline decisions made back to back per event-loop iteration (ADR 0018); 0 makes
    #: each in its own request task
    sandbox_inline_batch: Annotated[int, Meta(ge=0, le=1024)] = SANDBOX_INLINE_BATCH
    #: wall time an inline batch may hold the event loop; a module whose inline call took
    #: longer runs in worker threads for a while (ADR 0023)
    sandbox_inline_ms: Annotated[float, Meta(gt=0, le=1000)] = SANDBOX_INLINE_MS
    #: worker threads one tenant's decisions may run in at once (the rest wait in the
    #: tenant's own queue, ADR 0040); ``api_sandbox_threads`` or more: no per-tenant bound
    sandbox_tenant_threads: Annotated[int, Meta(ge=1, le=256)] = 1

    # the operator console (issue 18, ADR 0038): browser sessions of operator keys, and the
    # folder of the console's static files the API serves at /console/
    #: a console session ends this long after its login (the operator logs in again)
    console_session_ttl_s: Annotated[float, Meta(ge=60, le=30 * 86400)] = 8 * 3600.0
    #: mark the session cookie ``Secure`` even on a plain-http request (set it behind a
    #: proxy that terminates TLS); an https request always gets ``Secure``
    console_cookie_secure: bool = False
    #: the console's built files; empty: the checkout's ``apps/console`` when present, else
    #: the copy shipped in the wheel (``spectral_api/console``)
    console_dir: str = ""

    # World Agent (spectral_core.agent): turns run off the decision path, at most
    # ``agent_concurrency`` at once per worker, each within a step and token budget
    agent_concurrency: PosInt = 4
    #: ``anthropic`` (the ``anthropic`` extra), ``scripted`` (spectral_core.testing, reads
    #: ``agent_script_path``) or ``module:function`` returning a ModelFactory for settings
    agent_provider: str = "anthropic"
    agent_model: str = "claude-sonnet-4-5"
    agent_base_url: str | None = None
    agent_script_path: str | None = None
    #: checkpointer connection (defaults to ``database_url``); must keep startup options
    agent_database_url: str | None = None
    agent_llm_timeout_s: PosFloat = 120.0
    agent_llm_retries: Annotated[int, Meta(ge=0, le=10)] = 3
    agent_llm_backoff_base_s: PosFloat = 0.5
    agent_max_steps: Annotated[int, Meta(ge=1, le=100)] = 12
    agent_max_tokens: PosInt = 50_000
    agent_max_attempts: PosInt = 5
    agent_poll_interval_s: PosFloat = 1.0

    # observability (ADR 0029): ``GET /metrics`` on the API's port, behind an operator key
    # (``operator``) or open (``none``: only where the port is reachable by the scraper
    # alone); the queue gauges read from PostgreSQL are cached this long, so any number of
    # scrapers costs one query per interval
    metrics_auth: Literal["operator", "none"] = "operator"
    metrics_cache_s: Annotated[float, Meta(ge=0, le=300)] = 5.0
    #: OTLP/HTTP collector base URL (e.g. ``http://collector:4318``): traces, and the
    #: workers' metrics, are exported there (the ``otel`` extra); empty: no SDK is
    #: configured and tracing is a no-op
    otlp_endpoint: str = ""
    #: ``service.name`` of the exported traces and metrics (default: the binary's name)
    otlp_service_name: str = ""

    # only read by the test-suite; accepted so a shell exporting it can still boot
    test_database_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("database_url", "database_session_url", "agent_database_url"):
            _check_conninfo(name, getattr(self, name))
        for domain in self.llm_credential:
            if not _DOMAIN.match(domain):
                raise ConfigError(f"bad LLM credential domain name: {domain!r}", field=domain)
        if self.otlp_endpoint and not re.match(r"^https?://[^\s/]+(/\S*)?$", self.otlp_endpoint):
            raise ConfigError(
                "SPECTRAL_OTLP_ENDPOINT must be an http:// or https:// URL (the collector's "
                "OTLP/HTTP base, e.g. http://collector:4318) or empty",
                field="otlp_endpoint",
            )
        if self.heartbeat_interval_s >= self.worker_stale_after_s:
            raise ConfigError(
                "SPECTRAL_WORKER_STALE_AFTER_S must be larger than SPECTRAL_HEARTBEAT_INTERVAL_S",
                field="worker_stale_after_s",
            )
        if self.worker_retention_s <= self.worker_stale_after_s:
            raise ConfigError(
                "SPECTRAL_WORKER_RETENTION_S must be larger than SPECTRAL_WORKER_STALE_AFTER_S",
                field="worker_retention_s",
            )
        if self.retention_batch_size > self.retention_rows_per_s:
            raise ConfigError(
                "SPECTRAL_RETENTION_BATCH_SIZE must not exceed SPECTRAL_RETENTION_ROWS_PER_S "
                "(a pruning batch is deleted in one burst: at most one second of the pace)",
                field="retention_batch_size",
            )
        if self.ledger_retention_s < self.dedup_window_s:
            raise ConfigError(
                "SPECTRAL_LEDGER_RETENTION_S must be at least SPECTRAL_DEDUP_WINDOW_S (the "
                "deduplication window: a ledger row pruned earlier lets a repeated publish "
                "run its handlers again)",
                field="ledger_retention_s",
            )

    # -- derived values --------------------------------------------------------------
    @property
    def session_url(self) -> str | None:
        """The session-mode URL (LISTEN/NOTIFY); defaults to ``database_url``."""
        return self.database_session_url or self.database_url

    @property
    def migration_dir_list(self) -> list[str]:
        """``migration_dirs`` split on ``os.pathsep`` (empty entries dropped)."""
        return [d for d in self.migration_dirs.split(os.pathsep) if d.strip()]

    @property
    def running_version(self) -> str:
        return self.version or package_version()

    def require_generation(self) -> int:
        """Return the configured generation.

        Raises:
            GenerationError: SPECTRAL_GENERATION is not set.
        """
        if self.generation is None:
            raise GenerationError(
                "SPECTRAL_GENERATION is not set; allocate one with "
                "`spectral deploy allocate --version V`"
            )
        return self.generation

    def require_database_url(self) -> str:
        """Return the database URL.

        Raises:
            ConfigError: SPECTRAL_DATABASE_URL is not set.
        """
        if not self.database_url:
            raise ConfigError("SPECTRAL_DATABASE_URL is not set", field="database_url")
        return self.database_url

    def __repr__(self) -> str:
        shown = {
            f: getattr(self, f)
            for f in self.__struct_fields__
            if f
            not in {
                "database_url",
                "database_session_url",
                "test_database_url",
                "llm_credential",
                "operator_keys",
                "agent_database_url",
            }
        }
        shown["database_url"] = redact_url(self.database_url)
        shown["llm_credential"] = sorted(self.llm_credential)
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Settings({inner})"

    __str__ = __repr__

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from a ``SPECTRAL_*`` environment mapping.

        Args:
            environ: usually ``os.environ``, passed in by the entrypoint.
            overrides: field values that win over the environment.

        Raises:
            ConfigError: unknown ``SPECTRAL_*`` variable or invalid value.
        """
        raw: dict[str, Any] = {}
        creds: dict[str, str] = {}
        for name, value in environ.items():
            if name.startswith(CREDENTIAL_PREFIX):
                domain = name[len(CREDENTIAL_PREFIX) :].lower()
                creds[domain] = value
            elif name.startswith(PREFIX):
                raw[name[len(PREFIX) :].lower()] = value
        if "llm_credential" in raw:
            raise ConfigError(
                "use SPECTRAL_LLM_CREDENTIAL__<DOMAIN>, one per domain", field="llm_credential"
            )
        raw["llm_credential"] = creds
        raw = {k: v for k, v in raw.items() if v != "" or k == "llm_credential"}
        raw.update(overrides)
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(str(exc))) from None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated)."""
        try:
            return msgspec.structs.replace(self, **changes)
        except msgspec.ValidationError as exc:  # pragma: no cover - defensive
            raise ConfigError(_explain(str(exc))) from None


def _explain(message: str) -> str:
    """Turn msgspec's ``$.field`` paths into the variable the user actually set."""
    match = re.search(r"`\$\.(\w+)`", message)
    if match:
        var = PREFIX + match.group(1).upper()
        message = message.replace(match.group(0), var)
    unknown = re.match(r"Object contains unknown field `(\w+)`", message)
    if unknown:
        return f"unknown setting {PREFIX}{unknown.group(1).upper()}"
    return f"invalid setting: {message}"
