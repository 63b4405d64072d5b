"""Tests for homing.core.retry: the retry schedule, jitter, Retry-After and exhaustion."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from homing.core.retry import DEFAULT_SCHEDULE, RetryPolicy, next_attempt_at
from homing.core.states import Outcome
from homing.errors import ConfigError

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FLAT = RetryPolicy(jitter=0.0)
SERVER_ERROR = Outcome(status=500, failure_class="http_status")
TIMEOUT = Outcome(status=0, failure_class="timeout")


def delay(policy: RetryPolicy, attempts: int, outcome: Outcome, seed: int = 0) -> float | None:
    """Seconds from NOW to the next try, or None when there is none."""
    at = next_attempt_at(policy, attempts, outcome, NOW, random.Random(seed))
    return None if at is None else (at - NOW).total_seconds()


def throttled(status: int, retry_after: float | None) -> Outcome:
    return Outcome(status=status, failure_class="http_status", retry_after=retry_after)


def test_default_schedule_is_svix_schedule() -> None:
    """The default waits 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h, with 20 % jitter."""
    policy = RetryPolicy()
    assert policy.schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert policy.schedule == DEFAULT_SCHEDULE
    assert policy.jitter == 0.2
    assert policy.max_attempts == 8


@pytest.mark.parametrize("attempts", range(1, 8))
def test_without_jitter_each_retry_follows_the_schedule(attempts: int) -> None:
    """After try n the next one comes schedule[n-1] seconds later."""
    assert delay(FLAT, attempts, SERVER_ERROR) == DEFAULT_SCHEDULE[attempts - 1]


def test_exhausted_schedule_returns_none() -> None:
    """After the first try plus one try per delay there is no more retry."""
    assert delay(FLAT, 8, SERVER_ERROR) is None
    assert delay(RetryPolicy(schedule=()), 1, SERVER_ERROR) is None


def test_success_needs_no_retry() -> None:
    """A successful try schedules nothing."""
    assert delay(FLAT, 1, Outcome(status=204, failure_class=None)) is None


def test_gone_is_final() -> None:
    """A 410 Gone is never retried, whatever is left of the schedule."""
    assert delay(FLAT, 1, Outcome(status=410, failure_class="http_status")) is None


def test_attempts_below_one_is_an_error() -> None:
    """There is always a try before a retry."""
    with pytest.raises(ValueError, match="at least 1"):
        next_attempt_at(FLAT, 0, SERVER_ERROR, NOW, random.Random(0))


def test_jitter_stays_within_bounds_and_varies() -> None:
    """With 20 % jitter a 300 s delay lands in [240, 360] and is not always the same."""
    policy = RetryPolicy(jitter=0.2)
    rng = random.Random(1234)
    seen = []
    for _ in range(500):
        at = next_attempt_at(policy, 2, SERVER_ERROR, NOW, rng)
        assert at is not None
        seen.append((at - NOW).total_seconds())
    assert min(seen) >= 240
    assert max(seen) <= 360
    assert max(seen) - min(seen) > 60  # spread over most of the window, not stuck


def test_same_seed_gives_same_time() -> None:
    """The policy is a pure function of its inputs, the random source included."""
    policy = RetryPolicy()
    assert delay(policy, 3, SERVER_ERROR, seed=7) == delay(policy, 3, SERVER_ERROR, seed=7)


def test_timeout_waits_at_least_the_slow_down_floor() -> None:
    """After a timeout the 5 s first retry is stretched to the 30 s floor."""
    assert delay(FLAT, 1, TIMEOUT) == 30
    assert delay(FLAT, 2, TIMEOUT) == 300  # a longer scheduled delay is kept


def test_too_many_requests_waits_at_least_the_floor() -> None:
    """A 429 without Retry-After also gets the slow-down floor."""
    assert delay(FLAT, 1, throttled(429, None)) == 30


def test_floor_is_configurable() -> None:
    """A zero floor leaves the schedule alone (useful in tests)."""
    assert delay(RetryPolicy(schedule=(0,), jitter=0.0, slow_down_floor=0), 1, TIMEOUT) == 0


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_lengthens_the_delay(status: int) -> None:
    """On 429 and 503 a Retry-After beyond the schedule is honoured."""
    assert delay(FLAT, 1, throttled(status, 120)) == 120


def test_retry_after_never_shortens_the_delay() -> None:
    """A Retry-After shorter than the schedule cannot make us retry sooner."""
    assert delay(FLAT, 2, throttled(503, 1)) == 300


def test_retry_after_is_capped() -> None:
    """A huge Retry-After is bounded by the cap (24 h by default)."""
    assert delay(FLAT, 1, throttled(429, 10**9)) == 24 * 3600
    assert delay(RetryPolicy(jitter=0.0, retry_after_cap=600), 1, throttled(503, 10**9)) == 600


def test_negative_retry_after_is_ignored() -> None:
    """A Retry-After in the past counts as zero."""
    assert delay(FLAT, 2, throttled(503, -50)) == 300


def test_retry_after_is_ignored_on_other_statuses() -> None:
    """Retry-After only means something on 429 and 503."""
    assert delay(FLAT, 1, throttled(500, 600)) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": (5, -1)},
        {"jitter": -0.1},
        {"jitter": 1.0},
        {"retry_after_cap": -1},
        {"slow_down_floor": -1},
    ],
)
def test_invalid_policy_is_rejected(kwargs: dict[str, object]) -> None:
    """Negative delays and a jitter outside [0, 1) are configuration errors."""
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_next_time_is_after_now_by_the_delay() -> None:
    """The result is an aware time ``now`` plus the delay."""
    at = next_attempt_at(FLAT, 1, SERVER_ERROR, NOW, random.Random(0))
    assert at == NOW + timedelta(seconds=5)
    assert at is not None and at.tzinfo is not None
