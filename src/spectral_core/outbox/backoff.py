"""Retry delays: exponential with jitter, capped (pure)."""

from __future__ import annotations

import random

__all__ = ["next_delay"]


def next_delay(
    attempts: int, *, base_s: float, cap_s: float, rand: random.Random | None = None
) -> float:
    """Seconds to wait before attempt ``attempts + 1``.

    "Equal jitter": half the exponential step is fixed, half random, so retries of many
    rows spread out but none comes back immediately.
    """
    # the exponent is clamped: 2.0 ** 1024 overflows a float, and the cap won long before
    step = min(cap_s, base_s * 2.0 ** min(max(attempts - 1, 0), 1000))
    r = rand.random() if rand is not None else random.random()
    return step / 2 + r * step / 2
