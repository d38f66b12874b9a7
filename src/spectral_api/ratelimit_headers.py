"""HTTP rendering of a rate-limit state: ``Retry-After`` and the IETF ``RateLimit`` /
``RateLimit-Policy`` headers (draft-ietf-httpapi-ratelimit-headers).

The limiters live in :mod:`spectral_core.ratelimit`, which knows no HTTP; this module turns
their :class:`~spectral_core.ratelimit.RateLimitState` into header values and ASGI pairs.
"""

from __future__ import annotations

import math

from spectral_core.ratelimit import RateLimitState

__all__ = ["rate_limit_header_pairs", "rate_limit_headers"]


def rate_limit_headers(state: RateLimitState, retry_after: float | None = None) -> dict[str, str]:
    """Header values for a response (IETF draft-ietf-httpapi-ratelimit-headers).

    Args:
        state: The state returned by an ``acquire`` or carried by ``RateLimited.state``.
        retry_after: Seconds; adds ``Retry-After`` (rounded up, at least 1).

    Returns:
        ``RateLimit-Policy`` (``"<policy>";q=<limit>[;w=<window>]``), ``RateLimit``
        (``"<policy>";r=<remaining>;t=<reset>``) and optionally ``Retry-After``.
    """
    policy = f'"{state.policy}";q={state.limit}'
    if state.window is not None:
        policy += f";w={max(1, math.ceil(state.window))}"
    headers = {
        "RateLimit-Policy": policy,
        "RateLimit": f'"{state.policy}";r={state.remaining};t={math.ceil(state.reset)}',
    }
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return headers


def rate_limit_header_pairs(state: RateLimitState) -> list[tuple[bytes, bytes]]:
    """:func:`rate_limit_headers` (without ``Retry-After``) as ASGI header pairs.

    The same names (lower case) and values; the ``RateLimit-Policy`` value, constant per
    policy and limits, is formatted once.
    """
    key = (state.policy, state.limit, state.window)
    policy = _policy_values.get(key)
    if policy is None:
        if len(_policy_values) >= 1024:  # bounded: one entry per distinct limits value
            _policy_values.clear()
        policy = _policy_values[key] = rate_limit_headers(state)["RateLimit-Policy"].encode()
    current = f'"{state.policy}";r={state.remaining};t={math.ceil(state.reset)}'
    return [(b"ratelimit-policy", policy), (b"ratelimit", current.encode())]


_policy_values: dict[tuple[str, int, float | None], bytes] = {}
