"""The API's TenantLimiter applies the fleet share (ADR 0032) to every limiter pair: the
pairs that exist when the view changes and those created afterwards (a tenant's override
first seen later), for the rate and for the concurrency cap."""

from __future__ import annotations

import pytest

from spectral_api.auth import TenantLimiter
from spectral_core.errors import RateLimited
from spectral_core.ratelimit import TenantLimits
from spectral_core.tenants import Principal


def admitted(limiter: TenantLimiter, who: Principal, n: int) -> int:
    got = 0
    for _ in range(n):
        try:
            limiter.admit(who)  # slots are kept: concurrency counts them
            got += 1
        except RateLimited:
            pass
    return got


def test_share_applies_to_existing_and_new_pairs() -> None:
    """Default tenant (pair created before the change) and an override tenant (pair created
    after) are both held to their part: burst 9 over 3 processes at rank 0 -> 3; a
    concurrency of 4 over 3 at rank 2 -> 1.  Back to one process, the whole value."""
    limiter = TenantLimiter(TenantLimits(rate=0.001, burst=9, concurrency=100))
    plain = Principal(key_id="k1", org="plain")
    assert admitted(limiter, plain, 1) == 1  # creates the default pair
    limiter.set_fleet(3, 0)
    assert limiter.share == (3, 0)
    assert admitted(limiter, Principal(key_id="k0", org="fresh"), 20) == 3
    narrow = Principal(key_id="k2", org="narrow", concurrency=4, burst=100, rate=1000.0)
    limiter.set_fleet(3, 2)
    assert admitted(limiter, narrow, 10) == 1  # 4 // 3 = 1, rank 2 gets no remainder
    limiter.set_fleet(1, 0)
    assert admitted(limiter, narrow, 10) == 3  # 4 in flight now, one already held


def test_a_bad_view_is_refused() -> None:
    """A rank outside the fleet is a ConfigError (never a silent full or zero share)."""
    from spectral_core.errors import ConfigError

    with pytest.raises(ConfigError):
        TenantLimiter(TenantLimits()).set_fleet(2, 2)
