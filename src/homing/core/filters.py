"""Which endpoints want which messages (Svix semantics)."""

from __future__ import annotations

from collections.abc import Iterable

from homing.core.models import Endpoint


def wants(endpoint: Endpoint, event_type: str, channels: Iterable[str] | None) -> bool:
    """True when ``endpoint`` should receive a message of ``event_type`` on ``channels``.

    An endpoint with no event-type filter takes every type; one with no channels takes every
    message; one with channels takes only messages that share at least one of them.
    """
    if endpoint.disabled:
        return False
    if endpoint.event_types and event_type not in endpoint.event_types:
        return False
    if endpoint.channels:
        return bool(set(endpoint.channels).intersection(channels or ()))
    return True
