"""Which endpoints want which messages (Svix semantics)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from homing.core.models import Endpoint


def wants(endpoint: Endpoint, event_type: str, channels: Iterable[str] | None) -> bool:
    """True when ``endpoint`` should receive a message of ``event_type`` on ``channels``.

    An endpoint with no event-type filter takes every type; one with no channels takes every
    message; one with channels takes only messages that share at least one of them.
    """
    if endpoint.disabled:
        return False
    return accepts(endpoint.event_types, endpoint.channels, event_type, channels)


def accepts(
    wanted_types: Collection[str] | None,
    wanted_channels: Collection[str] | None,
    event_type: str,
    channels: Iterable[str] | None,
) -> bool:
    """``wants`` for an enabled endpoint given only its two filters."""
    if wanted_types and event_type not in wanted_types:
        return False
    if wanted_channels:
        return bool(set(wanted_channels).intersection(channels or ()))
    return True
