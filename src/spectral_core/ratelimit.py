"""Per-tenant, in-process rate limits (GCRA) and concurrency caps.

Two independent guards protect the fleet from a noisy neighbour:

* :class:`RateLimiter` — the Generic Cell Rate Algorithm: each tenant may make ``burst``
  requests at once and then ``rate`` requests per second.  Over any interval of length ``t``
  a tenant is admitted at most ``burst + rate * t`` requests.  One number (the theoretical
  arrival time) per tenant, integer nanoseconds, O(1) per request.
* :class:`ConcurrencyLimiter` — at most ``concurrency`` requests of one tenant in flight at
  once; the next one is refused immediately (no queueing, so a slow tenant cannot tie up
  the server's workers).

Both raise :class:`~spectral_core.errors.RateLimited` carrying ``retry_after`` (seconds)
and a :class:`RateLimitState` (limit, remaining, reset), from which the HTTP entrypoint
renders ``Retry-After`` and the IETF ``RateLimit`` / ``RateLimit-Policy`` headers
(``spectral_api.ratelimit_headers``: the core knows no HTTP).

**Fleet-wide limits (ADR 0032).**  State lives in this process only, but the limits are
meant for the whole fleet: :meth:`RateLimiter.set_share` / :meth:`ConcurrencyLimiter.set_share`
make the limiter enforce this process's part of them (:func:`fleet_share`: ``rate / live``,
burst and concurrency split so the parts add up), ``live`` being the number of live API
processes the registry heartbeat counts.  Under round-robin balancing the fleet then admits
a tenant at most ``burst + rate * t`` over any interval ``t``.  See
``docs/reference/ratelimit.md``.

Memory is bounded: tenants whose bucket is full again (idle) are dropped lazily, and at
most ``max_tenants`` are tracked (least recently seen evicted first; an evicted tenant
starts again with a full burst).  The concurrency table only holds tenants with requests
in flight.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Annotated, Final, Literal

import msgspec

from spectral_core.errors import ConfigError, RateLimited

__all__ = [
    "ConcurrencyLimiter",
    "ConcurrencySlot",
    "RateLimitState",
    "RateLimiter",
    "TenantLimits",
    "fleet_share",
]

Clock = Callable[[], float]
_NS: Final = 1_000_000_000


class TenantLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits for one tenant (fleet-wide: each API process enforces its share).

    Attributes:
        rate: Sustained requests per second.
        burst: Requests admitted at once from an idle state (bucket size).
        concurrency: Requests in flight at once.
    """

    rate: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    burst: Annotated[int, msgspec.Meta(ge=1)] = 20
    concurrency: Annotated[int, msgspec.Meta(ge=1)] = 4

    def __post_init__(self) -> None:
        """Validate on construction too.

        Raises:
            ConfigError: A limit is not positive or not finite.
        """
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError("rate must be a positive number of requests per second")
        if self.burst < 1 or self.concurrency < 1:
            raise ConfigError("burst and concurrency must be at least 1")


class RateLimitState(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's position against one policy, after the request was counted.

    Attributes:
        policy: ``"rate"`` or ``"concurrency"``.
        limit: Burst size (rate) or in-flight cap (concurrency).
        remaining: Requests that would be admitted right now.
        reset: Seconds until the quota is fully available again.
        window: Seconds a full burst takes to refill (``burst / rate``); None for
            concurrency.
    """

    policy: Literal["rate", "concurrency"]
    limit: int
    remaining: int
    reset: float
    window: float | None = None


def _part(total: int, live: int, rank: int) -> int:
    # the fleet total split so the parts add up to it exactly (the first ``total % live``
    # processes by rank take one more), never below 1
    return max(1, total // live + (1 if rank < total % live else 0))


def fleet_share(limits: TenantLimits, live: int, rank: int) -> TenantLimits:
    """The part of fleet-wide ``limits`` that one of ``live`` API processes enforces.

    ``rate / live``; ``burst`` and ``concurrency`` split so the parts of all processes
    (ranks ``0 .. live-1``) add up to the fleet value exactly while it is at least
    ``live``; each part is at least 1, so with more processes than the value the fleet
    admits up to ``live`` (ADR 0032).  A burst part is at least 2 (when the fleet's burst
    is): a part of 1 leaves no room for arrival jitter and under-admits the rate, so with
    more than ``burst / 2`` processes the fleet's burst is up to ``2 x live``.

    Raises:
        ConfigError: ``live < 1`` or ``rank`` outside ``0 .. live-1``.
    """
    if live < 1 or not 0 <= rank < live:
        raise ConfigError(f"bad fleet share: live={live} rank={rank}")
    if live == 1:
        return limits
    return TenantLimits(
        rate=limits.rate / live,
        # a part of at least 2 (when the fleet's burst is): with 1 a process has no room
        # for arrival jitter and admits well under its rate (0.85x measured at 8 processes)
        burst=max(min(2, limits.burst), _part(limits.burst, live, rank)),
        concurrency=_part(limits.concurrency, live, rank),
    )


class _Policies:
    def __init__(
        self,
        default: TenantLimits,
        overrides: Mapping[str, TenantLimits] | None,
        share: tuple[int, int] = (1, 0),
    ) -> None:
        if not isinstance(default, TenantLimits):
            raise ConfigError("default limits must be TenantLimits")
        self.default = default
        self.overrides = dict(overrides or {})
        self.share = share
        # this process's part of each tenant's fleet-wide limits
        self._mine = {t: fleet_share(lim, *share) for t, lim in self.overrides.items()}
        self._default_mine = fleet_share(default, *share)
        # (limits, GCRA emission interval, tolerance) per override, and for the default
        self._params = {t: (lim, *_gcra_params(lim)) for t, lim in self._mine.items()}
        self._default_params = (self._default_mine, *_gcra_params(self._default_mine))

    def configured(self, tenant: str) -> TenantLimits:
        return self.overrides.get(tenant, self.default)

    def get(self, tenant: str) -> TenantLimits:
        return self._mine.get(tenant, self._default_mine)

    def params(self, tenant: str) -> tuple[TenantLimits, int, int]:
        return self._params.get(tenant, self._default_params)


class RateLimiter:
    """Per-tenant GCRA rate limiter, in-process.  Thread-safe.

    Args:
        default: Limits for tenants without an override.
        overrides: Per-tenant limits.
        clock: Monotonic clock in seconds (inject a fake in tests).
        max_tenants: Most tenants tracked at once (LRU eviction beyond).

    Raises:
        ConfigError: Invalid limits.
    """

    def __init__(
        self,
        default: TenantLimits | None = None,
        overrides: Mapping[str, TenantLimits] | None = None,
        *,
        clock: Clock = time.monotonic,
        max_tenants: int = 100_000,
    ) -> None:
        if max_tenants < 1:
            raise ConfigError("max_tenants must be at least 1")
        self._policies = _Policies(default or TenantLimits(), overrides)
        self._clock = clock
        self._max_tenants = max_tenants
        self._tat: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of tenants currently tracked."""
        return len(self._tat)

    def limits_for(self, tenant: str) -> TenantLimits:
        """The (fleet-wide) limits configured for ``tenant``."""
        return self._policies.configured(tenant)

    def set_share(self, live: int, rank: int) -> None:
        """Enforce this process's part of the fleet-wide limits: one of ``live`` API
        processes, at ``rank`` (see :func:`fleet_share`).  Tenants keep their history.

        Raises:
            ConfigError: A bad ``live`` / ``rank``.
        """
        policies = _Policies(self._policies.default, self._policies.overrides, (live, rank))
        with self._lock:
            self._policies = policies

    def acquire(self, tenant: str) -> RateLimitState:
        """Count one request for ``tenant``, or refuse it.

        Args:
            tenant: The tenant identifier.

        Returns:
            The state after admission (for the ``RateLimit`` headers).

        Raises:
            RateLimited: Over the rate; ``.retry_after`` is the wait until one request fits.
        """
        limits, interval, tolerance = self._policies.params(tenant)
        with self._lock:
            now = math.floor(self._clock() * _NS)
            self._prune(now)
            tat = max(self._tat.get(tenant, now), now)
            new_tat = tat + interval
            allow_at = new_tat - tolerance
            if allow_at > now:
                retry_after = (allow_at - now) / _NS
                state = RateLimitState(
                    policy="rate",
                    limit=limits.burst,
                    remaining=0,
                    reset=(tat - now) / _NS,
                    window=tolerance / _NS,
                )
                raise RateLimited(
                    "tenant rate limit exceeded",
                    tenant=tenant,
                    policy="rate",
                    retry_after=retry_after,
                    state=state,
                )
            self._tat[tenant] = new_tat
            self._tat.move_to_end(tenant)
            while len(self._tat) > self._max_tenants:
                self._tat.popitem(last=False)
        return RateLimitState(
            policy="rate",
            limit=limits.burst,
            remaining=(now + tolerance - new_tat) // interval,
            reset=(new_tat - now) / _NS,
            window=tolerance / _NS,
        )

    def peek(self, tenant: str) -> RateLimitState:
        """The tenant's state without counting a request."""
        limits = self._policies.get(tenant)
        interval, tolerance = _gcra_params(limits)
        with self._lock:
            now = math.floor(self._clock() * _NS)
            tat = max(self._tat.get(tenant, now), now)
        return RateLimitState(
            policy="rate",
            limit=limits.burst,
            remaining=max(0, (now + tolerance - tat) // interval),
            reset=(tat - now) / _NS,
            window=tolerance / _NS,
        )

    def _prune(self, now: int) -> None:
        # Amortised O(1): drop idle tenants (bucket full again) from the LRU end.
        for _ in range(2):
            if not self._tat:
                return
            oldest, tat = next(iter(self._tat.items()))
            if tat > now:
                return
            del self._tat[oldest]


def _gcra_params(limits: TenantLimits) -> tuple[int, int]:
    # Emission interval rounded up: never admit faster than the configured rate.
    interval = math.ceil(_NS / limits.rate)
    return interval, interval * limits.burst


class ConcurrencySlot:
    """One admitted in-flight request; release it exactly once (idempotent).

    Usable as a sync or async context manager.
    """

    __slots__ = ("_limiter", "_released", "state", "tenant")

    def __init__(self, limiter: ConcurrencyLimiter, tenant: str, state: RateLimitState) -> None:
        self._limiter = limiter
        self._released = False
        self.tenant = tenant
        self.state = state

    def release(self) -> None:
        """Give the slot back.  Calling it again does nothing."""
        if not self._released:
            self._released = True
            self._limiter._release(self.tenant)

    def __enter__(self) -> ConcurrencySlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> ConcurrencySlot:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class ConcurrencyLimiter:
    """Per-tenant cap on requests in flight, in-process.  Thread-safe; never waits.

    Usage::

        async with concurrency.acquire(tenant):
            ...

    Args:
        default: Limits for tenants without an override (``concurrency`` is used).
        overrides: Per-tenant limits.
        retry_after: Seconds suggested to a refused client (in-flight work has no known
            end time).

    Raises:
        ConfigError: Invalid limits.
    """

    def __init__(
        self,
        default: TenantLimits | None = None,
        overrides: Mapping[str, TenantLimits] | None = None,
        *,
        retry_after: float = 1.0,
    ) -> None:
        if not retry_after > 0:
            raise ConfigError("retry_after must be positive")
        self._policies = _Policies(default or TenantLimits(), overrides)
        self._retry_after = retry_after
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of tenants with requests in flight."""
        return len(self._in_flight)

    def in_flight(self, tenant: str) -> int:
        """Requests of ``tenant`` currently holding a slot."""
        return self._in_flight.get(tenant, 0)

    def set_share(self, live: int, rank: int) -> None:
        """Cap at this process's part of the fleet-wide concurrency (see
        :func:`fleet_share`); requests in flight keep their slots.

        Raises:
            ConfigError: A bad ``live`` / ``rank``.
        """
        policies = _Policies(self._policies.default, self._policies.overrides, (live, rank))
        with self._lock:
            self._policies = policies

    def acquire(self, tenant: str) -> ConcurrencySlot:
        """Take a slot for ``tenant`` or refuse immediately.

        Args:
            tenant: The tenant identifier.

        Returns:
            The slot; release it (or use it as a context manager).

        Raises:
            RateLimited: The tenant already has ``concurrency`` requests in flight.
        """
        cap = self._policies.get(tenant).concurrency
        with self._lock:
            current = self._in_flight.get(tenant, 0)
            if current >= cap:
                state = RateLimitState(
                    policy="concurrency", limit=cap, remaining=0, reset=self._retry_after
                )
                raise RateLimited(
                    "tenant concurrency limit exceeded",
                    tenant=tenant,
                    policy="concurrency",
                    retry_after=self._retry_after,
                    state=state,
                )
            self._in_flight[tenant] = current + 1
        state = RateLimitState(
            policy="concurrency", limit=cap, remaining=cap - current - 1, reset=0.0
        )
        return ConcurrencySlot(self, tenant, state)

    def _release(self, tenant: str) -> None:
        with self._lock:
            current = self._in_flight.get(tenant, 0)
            if current <= 1:
                self._in_flight.pop(tenant, None)
            else:
                self._in_flight[tenant] = current - 1
