"""The console's read views, as JSON-able dicts (the shapes of ``docs/reference/http-api.md``).

Framework-agnostic: the API routes call these and encode the result.  Every read is cheap
by construction: the queue counts come from :class:`~spectral_core.metrics.QueueStats` (the
statements of ``/metrics``, each on a partial index of only the rows it counts) with its
own short single-flight cache, and the other statements are primary-key or partial-index
lookups, or small registry tables, each with a LIMIT (``sql/operator.sql``).

Two figures are not exact counts, on purpose (ADR 0038): a generation's ``done`` is the
handler calls its running workers committed (from their heartbeat snapshots; counting done
rows would scan ``core.outbox``), and ``handled_per_s`` is that count's rate over the last
~20 s as seen by this process.
"""

from __future__ import annotations

import shlex
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from ..db import Database, wrap_errors
from ..errors import DatabaseError, OperatorError
from ..metrics.queue import QueueSnapshot, QueueStats
from ..ratelimit import TenantLimits
from ..sql import query
from .throttles import RecentThrottles

__all__ = ["LIMIT_MAX", "PREVIEW_CHARS", "OperatorViews", "check_limit", "deploy_verdict"]

#: the most rows one listing returns
LIMIT_MAX: Final = 1000
#: payload preview length of a dead row
PREVIEW_CHARS: Final = 200
#: generations listed (newest first)
GENERATIONS_SHOWN: Final = 50
#: the window of the handled rate
RATE_WINDOW_S: Final = 20.0
#: pins listed (by key), and the newest approvals shown per pin
PINS_SHOWN: Final = 500
APPROVALS_PER_PIN: Final = 20
#: tenants listed (by name), and their keys at most
TENANTS_SHOWN: Final = 500
KEYS_SHOWN: Final = 5000


def check_limit(limit: int) -> int:
    """``limit`` if within 1..LIMIT_MAX.

    Raises:
        OperatorError: Outside.
    """
    if not 1 <= limit <= LIMIT_MAX:
        raise OperatorError(f"limit must be 1..{LIMIT_MAX}", field="limit")
    return limit


def _handled(snap: QueueSnapshot) -> dict[int, int]:
    """Handler calls committed per generation, summed over its workers' snapshots."""
    out: dict[int, int] = {}
    for w in snap.workers:
        handlers = (w.metrics or {}).get("handlers") or {}
        if isinstance(handlers, dict):
            n = sum(int(h.get("handled", 0)) for h in handlers.values() if isinstance(h, dict))
            out[w.generation] = out.get(w.generation, 0) + n
    return out


class _Rates:
    """Per generation: the rate of a growing total over the last ``window_s``."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: dict[int, deque[tuple[float, int]]] = {}
        self._last_read: float | None = None

    def update(self, at: float, totals: Mapping[int, int]) -> None:
        if at == self._last_read:
            return
        self._last_read = at
        for gen in list(self._samples):
            if gen not in totals:
                del self._samples[gen]
        for gen, total in totals.items():
            samples = self._samples.setdefault(gen, deque())
            if samples and total < samples[-1][1]:  # a worker exited: its counts left
                samples.clear()
            samples.append((at, total))
            while samples and samples[0][0] < at - self.window_s:
                samples.popleft()

    def rate(self, gen: int) -> float:
        samples = self._samples.get(gen)
        if not samples or len(samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return round((n1 - n0) / (t1 - t0), 3) if t1 - t0 >= 1.0 else 0.0


def deploy_verdict(health: Mapping[str, Any], generations: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether a deploy may go ahead now, and why not: ``/health`` must not fail (what
    ``spectral deploy wait-healthy`` waits for) and no generation may be stranded (live
    work nobody will claim).  Warnings are listed but do not stop a deploy."""
    reasons: list[str] = []
    warnings: list[str] = []
    for name, entries in sorted((health.get("checks") or {}).items()):
        for entry in entries or ():
            status = entry.get("status")
            text = f"{name}: {entry.get('output') or status}"
            if status == "fail":
                reasons.append(text)
            elif status == "warn":
                warnings.append(text)
    for g in generations:
        if g["verdict"] == "stranded":
            reasons.append(
                f"generation {g['generation']} is stranded: unfinished work and no live worker"
            )
    return {"go": not reasons, "reasons": reasons, "warnings": warnings}


class OperatorViews:
    """The console's reads for one API process.

    Args:
        db: The process's database.
        generation: The generation this process serves.
        stale_after_s: A heartbeat older than this is lost (ADR 0027).
        retention_s: Processes not seen for this long are not listed.
        defaults: The process's default tenant limits.
        throttles: This process's recent 429s.
        cache_s: Lifetime of the queue counts (polls within it share one read).
    """

    def __init__(
        self,
        db: Database,
        *,
        generation: int,
        stale_after_s: float,
        retention_s: float,
        defaults: TenantLimits,
        throttles: RecentThrottles,
        cache_s: float = 1.0,
    ) -> None:
        self.db = db
        self.generation = generation
        self.stale_after_s = stale_after_s
        self.retention_s = retention_s
        self.defaults = defaults
        self.throttles = throttles
        self.queue = QueueStats(db, cache_s=cache_s, stale_after_s=stale_after_s)
        self._rates = _Rates(RATE_WINDOW_S)

    async def _snapshot(self) -> QueueSnapshot:
        snap = await self.queue.refresh()
        if snap is None:
            raise DatabaseError("the queue counts could not be read")
        return snap

    async def _all(self, name: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                cur = await conn.execute(query(name), dict(params))
                return await cur.fetchall()

    async def generations(self) -> dict[str, Any]:
        """Every generation of the newest :data:`GENERATIONS_SHOWN`, newest first, with its
        verdict, row counts, oldest pending age, handled rate and live processes."""
        snap = await self._snapshot()
        rows = await self._all("operator_generations", {"limit": GENERATIONS_SHOWN})
        handled = _handled(snap)
        self._rates.update(snap.read_at, handled)
        workers_live: dict[int, int] = {}
        for w in snap.workers:
            if w.state != "lost":
                workers_live[w.generation] = workers_live.get(w.generation, 0) + 1
        api_live: dict[int, int] = {}
        for (g, state), n in snap.api_processes.items():
            if state != "lost":
                api_live[g] = api_live.get(g, 0) + n
        running = [g for g in (*workers_live, *api_live)]
        current = max(running) if running else self.generation
        out = []
        for gen, version, created_at in rows:
            pending = snap.outbox.get((gen, "pending"), 0)
            in_flight = snap.outbox.get((gen, "in_flight"), 0)
            live_turns = snap.turns.get((gen, "pending"), 0) + snap.turns.get((gen, "running"), 0)
            unfinished = pending + in_flight + live_turns
            live = workers_live.get(gen, 0)
            if unfinished and not live:
                verdict = "stranded"
            elif gen == current:
                verdict = "running"
            elif unfinished:
                verdict = "draining"
            else:
                verdict = "drained"
            out.append(
                {
                    "generation": gen,
                    "version": version,
                    "created_at": created_at,
                    "verdict": verdict,
                    "counts": {
                        "pending": pending,
                        "in_flight": in_flight,
                        "done": handled.get(gen, 0),
                        "dead": snap.outbox.get((gen, "dead"), 0),
                    },
                    "turns": {
                        s: snap.turns.get((gen, s), 0) for s in ("pending", "running", "dead")
                    },
                    "oldest_pending_age_s": snap.outbox_oldest_pending_s.get(gen),
                    "handled_per_s": self._rates.rate(gen),
                    "workers_live": live,
                    "api_live": api_live.get(gen, 0),
                }
            )
        return {"generations": out, "current": current, "read_at": snap.read_at}

    async def workers(self, generation: int | None) -> dict[str, Any]:
        """Workers and API processes seen within the retention (one generation or all)."""
        rows = await self._all(
            "operator_processes",
            {
                "generation": generation,
                "stale_after_s": self.stale_after_s,
                "retention_s": self.retention_s,
                "limit": LIMIT_MAX,
            },
        )
        out = []
        for role, pid_id, gen, state, host, pid, version, age, reconnects, lost in rows:
            out.append(
                {
                    "id": pid_id,
                    "role": role,
                    "generation": gen,
                    "version": version,
                    "host": host,
                    "pid": pid,
                    "state": "lost" if lost else state,
                    "heartbeat_age_s": round(max(0.0, float(age)), 3),
                    "reconnects": int(reconnects),
                    "lost": bool(lost),
                }
            )
        return {"workers": out, "stale_after_s": self.stale_after_s}

    async def dead_rows(self, generation: int, limit: int = 100) -> dict[str, Any]:
        """Dead outbox rows of one generation, oldest first."""
        rows = await self._all(
            "operator_dead_rows",
            {"generation": generation, "limit": check_limit(limit), "preview": PREVIEW_CHARS},
        )
        return {
            "generation": generation,
            "rows": [
                {
                    "id": r[0],
                    "topic": r[1],
                    "attempts": r[2],
                    "last_error": r[3],
                    "payload_preview": r[4],
                    "created_at": r[5],
                }
                for r in rows
            ],
        }

    async def modules(self) -> dict[str, Any]:
        """Pins (the first :data:`PINS_SHOWN` by key) with the newest approvals of their
        content (state, signer, expiry) and, for a pin with no active approval, the exact
        ``spectral modules approve`` command."""
        pins = await self._all("operator_pins", {"limit": PINS_SHOWN + 1})
        truncated = len(pins) > PINS_SHOWN
        pins = pins[:PINS_SHOWN]
        approvals = await self._all(
            "operator_pin_approvals",
            {
                "orgs": [p[0] for p in pins],
                "domains": [p[1] for p in pins],
                "actions": [p[2] for p in pins],
                "wmvs": [p[3] for p in pins],
                "hashes": [p[4] for p in pins],
                "per_pin": APPROVALS_PER_PIN,
            },
        )
        now = time.time()
        by_pin: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for (
            aid,
            signer,
            org,
            domain,
            action,
            wmv,
            h,
            expires_at,
            created_at,
            revoked_at,
        ) in approvals:
            state = (
                "revoked"
                if revoked_at is not None
                else "expired"
                if expires_at <= now
                else "active"
            )
            by_pin.setdefault((org, domain, action, wmv, h), []).append(
                {
                    "id": aid,
                    "signer": signer,
                    "expires_at": datetime.fromtimestamp(expires_at, UTC),
                    "created_at": created_at,
                    "revoked_at": revoked_at,
                    "state": state,
                }
            )
        out = []
        for org, domain, action, wmv, h, size, created_at in pins:
            found = by_pin.get((org, domain, action, wmv, h), [])
            command = None
            if not any(a["state"] == "active" for a in found):
                command = shlex.join(
                    ["spectral", "modules", "approve", "--org", org, "--domain", domain]
                    + ["--action", action, "--world-model-version", wmv, h]
                )
            out.append(
                {
                    "org": org,
                    "domain": domain,
                    "action": action,
                    "world_model_version": wmv,
                    "hash": h,
                    "size": size,
                    "created_at": created_at,
                    "approvals": found,
                    "approve_command": command,
                }
            )
        return {"pins": out, "truncated": truncated}

    async def tenants(self) -> dict[str, Any]:
        """Tenants (the first :data:`TENANTS_SHOWN` by name) with their effective limits,
        keys (ids, never tokens) and this process's 429s of the last window."""
        tenants = await self._all("operator_tenants", {"limit": TENANTS_SHOWN + 1})
        truncated = len(tenants) > TENANTS_SHOWN
        tenants = tenants[:TENANTS_SHOWN]
        keys = await self._all(
            "operator_api_keys", {"orgs": [t[0] for t in tenants], "limit": KEYS_SHOWN}
        )
        by_org: dict[str, list[dict[str, Any]]] = {}
        for key_id, org, operator, label, created_at, revoked_at in keys:
            by_org.setdefault(org, []).append(
                {
                    "id": key_id,
                    "prefix": f"sk_{org}_",
                    "label": label,
                    "operator": operator,
                    "created_at": created_at,
                    "revoked": revoked_at is not None,
                }
            )
        out = []
        d = self.defaults
        for org, rate, burst, concurrency in tenants:
            counts = self.throttles.counts(org)
            out.append(
                {
                    "org": org,
                    "limits": {
                        "rate_per_s": rate or d.rate,
                        "burst": burst or d.burst,
                        "concurrency": concurrency or d.concurrency,
                        "overridden": any(v is not None for v in (rate, burst, concurrency)),
                    },
                    "keys": by_org.get(org, []),
                    "recent_429": {"total": sum(counts.values()), "by_kind": counts},
                }
            )
        return {
            "tenants": out,
            "truncated": truncated or len(keys) >= KEYS_SHOWN,
            "recent_429_window_s": self.throttles.window_s,
        }

    async def agent(self, generation: int | None, limit: int = 100) -> dict[str, Any]:
        """World Agent turns of one generation (default: this process's) by status, and
        its dead turns (newest first) with their reasons."""
        gen = self.generation if generation is None else generation
        check_limit(limit)
        snap = await self._snapshot()
        rows = await self._all("operator_dead_turns", {"generation": gen, "limit": limit})
        return {
            "generation": gen,
            "by_status": {s: snap.turns.get((gen, s), 0) for s in ("pending", "running", "dead")},
            "oldest_pending_age_s": snap.turns_oldest_pending_s.get(gen),
            "dead": [
                {
                    "id": r[0],
                    "org": r[1],
                    "domain": r[2],
                    "attempts": r[3],
                    "reason": r[4] or "",
                    "created_at": r[5],
                    "finished_at": r[6],
                }
                for r in rows
            ],
        }
