"""Endpoint signing keys over time (pure): which keys are live, and rotation."""

from __future__ import annotations

from datetime import datetime, timedelta

from homing.core.models import EndpointSecret


def live_keys(secrets: tuple[EndpointSecret, ...], now: datetime) -> tuple[EndpointSecret, ...]:
    """The keys that still sign: the current one and old ones inside their grace period."""
    return tuple(s for s in secrets if s.expires_at is None or s.expires_at > now)


def rotate(
    secrets: tuple[EndpointSecret, ...], new_key: str, now: datetime, grace: timedelta
) -> tuple[EndpointSecret, ...]:
    """Make ``new_key`` current; keep every live old key for at most ``grace`` more.

    A zero grace drops the old keys at once.
    """
    until = now + grace
    kept = tuple(
        EndpointSecret(s.key, min(s.expires_at, until) if s.expires_at else until)
        for s in live_keys(secrets, now)
        if grace > timedelta(0)
    )
    return (EndpointSecret(new_key), *kept)
