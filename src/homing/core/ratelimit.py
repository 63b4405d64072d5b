"""Token buckets (pure): ``rate`` requests per second on average, bursts up to ``burst``."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at: float  # monotonic seconds of the last update


def take(bucket: Bucket | None, now: float, rate: float, burst: float) -> tuple[Bucket, float]:
    """Take one token at ``now``. Returns the new bucket and 0.0 when allowed, or the seconds
    to wait before a token is free (the bucket is then left as it was, refilled)."""
    if bucket is None:
        bucket = Bucket(tokens=burst, at=now)
    tokens = min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
    if tokens >= 1.0 - 1e-9:  # refills are sums of floats: 1.9999999 is two tokens
        return Bucket(max(0.0, tokens - 1.0), now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / rate


def retry_after_header(wait: float) -> str:
    """``Retry-After`` is whole seconds; never say 0 for a refusal."""
    return str(max(1, math.ceil(wait)))
