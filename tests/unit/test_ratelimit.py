"""The pure token bucket (``homing.core.ratelimit``) and the per-token limiter built on it."""

from __future__ import annotations

import pytest

from homing.api.errors import ApiError
from homing.api.limits import RateLimiter
from homing.core.ratelimit import Bucket, retry_after_header, take

# powers of two keep the float arithmetic exact
RATE = 4.0
BURST = 8.0


def drain(count: int, now: float = 0.0) -> tuple[Bucket | None, list[float]]:
    """Take ``count`` tokens at one instant from a fresh bucket; the bucket and every wait."""
    bucket: Bucket | None = None
    waits = []
    for _ in range(count):
        bucket, wait = take(bucket, now, RATE, BURST)
        waits.append(wait)
    return bucket, waits


def test_a_fresh_bucket_allows_a_full_burst_then_refuses() -> None:
    """A new bucket grants ``burst`` requests at one instant and refuses the next one."""
    bucket, waits = drain(int(BURST) + 1)
    assert waits[:-1] == [0.0] * int(BURST)
    assert waits[-1] == pytest.approx(1 / RATE)
    assert bucket is not None and bucket.tokens == pytest.approx(0.0)


def test_a_refusal_does_not_spend_a_token() -> None:
    """Refused requests leave the bucket as it was, so hammering does not push the wait out."""
    bucket, _ = drain(int(BURST))
    for _ in range(5):
        bucket, wait = take(bucket, 0.0, RATE, BURST)
        assert wait == pytest.approx(1 / RATE)
    assert bucket is not None and bucket.tokens == pytest.approx(0.0)


def test_tokens_refill_at_the_rate() -> None:
    """After a refusal, tokens come back at ``rate`` per second and can be spent at once."""
    bucket, _ = drain(int(BURST))
    bucket, wait = take(bucket, 0.125, RATE, BURST)
    assert wait == pytest.approx(0.125)
    bucket, wait = take(bucket, 0.25, RATE, BURST)
    assert wait == 0.0
    bucket, wait = take(bucket, 0.25, RATE, BURST)
    assert wait > 0
    bucket, first = take(bucket, 0.75, RATE, BURST)
    bucket, second = take(bucket, 0.75, RATE, BURST)
    assert (first, second) == (0.0, 0.0)


def test_refill_is_capped_at_the_burst() -> None:
    """A long idle period refills the bucket to ``burst`` and no further."""
    bucket, _ = drain(int(BURST))
    bucket, wait = take(bucket, 1_000_000.0, RATE, BURST)
    assert wait == 0.0
    assert bucket.tokens == pytest.approx(BURST - 1)
    assert bucket.at == 1_000_000.0


def test_a_clock_going_backwards_refills_nothing() -> None:
    """An earlier ``now`` than the last update adds no tokens (and never removes any)."""
    bucket = Bucket(tokens=0.5, at=100.0)
    refused, wait = take(bucket, 50.0, RATE, BURST)
    assert refused.tokens == pytest.approx(0.5)
    assert wait == pytest.approx(0.5 / RATE)


@pytest.mark.parametrize(
    ("tokens", "rate", "wait"),
    [(0.0, 5.0, 0.2), (0.5, 2.0, 0.25), (0.9, 1.0, 0.1), (0.0, 0.5, 2.0), (0.0, 0.01, 100.0)],
)
def test_retry_after_is_the_time_to_the_next_whole_token(
    tokens: float, rate: float, wait: float
) -> None:
    """The wait is the time the missing part of one token takes to refill at ``rate``."""
    _, got = take(Bucket(tokens=tokens, at=0.0), 0.0, rate, 2 * rate)
    assert got == pytest.approx(wait)


@pytest.mark.parametrize(
    ("wait", "header"),
    [(0.0, "1"), (1e-9, "1"), (0.2, "1"), (1.0, "1"), (1.0001, "2"), (2.5, "3"), (100.0, "100")],
)
def test_retry_after_header_rounds_up_and_is_never_zero(wait: float, header: str) -> None:
    """``Retry-After`` is whole seconds rounded up, and at least 1 for any refusal."""
    assert retry_after_header(wait) == header


def test_limiter_refuses_with_429_and_retry_after() -> None:
    """The limiter grants twice the rate at once, then raises 429 with a Retry-After of 1+."""
    limiter = RateLimiter(RATE, clock=lambda: 0.0)
    for _ in range(int(2 * RATE)):
        limiter.check("tok_a")
    with pytest.raises(ApiError) as refused:
        limiter.check("tok_a")
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert refused.value.headers == {"Retry-After": "1"}


def test_limiter_keeps_one_bucket_per_key() -> None:
    """One key running dry does not limit another."""
    limiter = RateLimiter(1.0, clock=lambda: 0.0)
    limiter.check("tok_a")
    limiter.check("tok_a")
    with pytest.raises(ApiError):
        limiter.check("tok_a")
    limiter.check("tok_b")


def test_limiter_with_rate_zero_never_refuses() -> None:
    """A rate of 0 turns the limit off."""
    limiter = RateLimiter(0.0, clock=lambda: 0.0)
    for _ in range(10_000):
        limiter.check("tok_a")
