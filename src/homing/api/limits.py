"""Per-token API rate limiting (in-process: with N API processes a token may get N times the
rate; a shared limit would cost a database round trip on every request)."""

from __future__ import annotations

import time
from collections.abc import Callable

from homing.api.errors import ApiError
from homing.core.ratelimit import Bucket, retry_after_header, take

MAX_TRACKED = 100_000  # distinct tokens remembered before the table is reset


class RateLimiter:
    """``rate`` requests per second per key, bursts of ``2 * rate``; ``rate`` 0 is unlimited."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}

    def check(self, key: str) -> None:
        """Spend one request of ``key``; raise 429 with ``Retry-After`` when none is left."""
        if self._rate <= 0:
            return
        if len(self._buckets) > MAX_TRACKED:
            self._buckets.clear()
        bucket, wait = take(self._buckets.get(key), self._clock(), self._rate, 2 * self._rate)
        self._buckets[key] = bucket
        if wait > 0:
            raise ApiError(
                429,
                "Too many requests for this token; slow down.",
                headers={"Retry-After": retry_after_header(wait)},
            )
