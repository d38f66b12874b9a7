"""The retry delay formula (``spectral_core.outbox.backoff``)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from spectral_core.outbox.backoff import next_delay


@given(
    attempts=st.integers(min_value=0, max_value=10**9),
    base_s=st.floats(min_value=1e-3, max_value=1e6),
    cap_s=st.floats(min_value=1e-3, max_value=1e6),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_is_bounded_for_any_attempt_count(
    attempts: int, base_s: float, cap_s: float, seed: int
) -> None:
    """Any attempt count the settings allow (``SPECTRAL_OUTBOX_MAX_ATTEMPTS`` has no upper
    bound) gets a delay between half the capped step and the cap: past about a thousand
    attempts the doubling must not overflow a float and crash the retry."""
    step = min(cap_s, base_s * 2.0 ** min(max(attempts - 1, 0), 1000))
    delay = next_delay(attempts, base_s=base_s, cap_s=cap_s, rand=random.Random(seed))
    assert step / 2 <= delay <= step <= cap_s


def test_delay_after_many_attempts_is_the_cap_range() -> None:
    """Attempt 5,000 with a 1 s base and a 300 s cap waits between 150 and 300 s."""
    delay = next_delay(5000, base_s=1.0, cap_s=300.0, rand=random.Random(1))
    assert 150.0 <= delay <= 300.0


@given(
    attempt=st.integers(min_value=0, max_value=10**6),
    cap_s=st.floats(min_value=1e-3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_reconnect_delay_is_the_same_formula(attempt: int, cap_s: float, seed: int) -> None:
    """The consumer's reconnect backoff is ``next_delay`` with a 0.25 s base (one formula):
    0.25 s, 0.5 s, 1 s ... capped, each between half and all of its step."""
    from spectral_core.outbox.consumer import reconnect_delay

    delay = reconnect_delay(attempt, cap_s, random.Random(seed))
    assert delay == next_delay(attempt + 1, base_s=0.25, cap_s=cap_s, rand=random.Random(seed))
    step = min(cap_s, 0.25 * 2.0 ** min(attempt, 1000))
    assert step / 2 <= delay <= step
