"""The delivery state machine (pure): what one HTTP try did, and where the delivery goes next.

```
pending ──claim──▶ sending ──2xx──────────────────▶ success
   ▲                  │ ──failure, retry left─────▶ pending (next_attempt_at)
   │                  │ ──failure, none left──────▶ failed
   └──────────────────┘ ──endpoint gone/disabled──▶ canceled   (also straight from pending)
                        ──released unsent─────────▶ pending (as due as before)
```

Claiming (pending → sending) and lease expiry (sending → pending) happen inside storage, which
owns the lease; this module decides every move that follows an attempt. The lease fields are
returned unchanged: storage checks ``leased_by`` when it records the move, then clears them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from homing.core.models import Delivery, DeliveryState
from homing.errors import InvalidTransition

#: Why a try failed. ``http_status``: a non-2xx, non-3xx answer; ``redirect``: a 3xx (never
#: followed); ``blocked``: the address is forbidden (SSRF guard); ``signing``: the endpoint has
#: no usable key, so nothing was sent.
FailureClass = Literal[
    "timeout",
    "dns",
    "connect",
    "tls",
    "blocked",
    "http_status",
    "redirect",
    "invalid_response",
    "signing",
]

#: Every move the state machine allows; anything else raises ``InvalidTransition``.
ALLOWED: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset({DeliveryState.SENDING, DeliveryState.CANCELED}),
    DeliveryState.SENDING: frozenset(
        {
            DeliveryState.SUCCESS,
            DeliveryState.PENDING,
            DeliveryState.FAILED,
            DeliveryState.CANCELED,
        }
    ),
    DeliveryState.SUCCESS: frozenset(),
    DeliveryState.FAILED: frozenset(),
    DeliveryState.CANCELED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one HTTP try did. A failed try is a value, never an exception.

    ``status`` is the response status code, 0 when no response arrived. ``failure_class`` is
    None exactly for a 2xx answer. ``body`` is the (truncated) response text, ``retry_after``
    the server's ``Retry-After`` in seconds (None when absent or unreadable) and
    ``request_headers`` the headers sent, already redacted for storage.
    """

    status: int
    failure_class: FailureClass | None
    message: str = ""
    body: str = ""
    duration_ms: int = 0
    retry_after: float | None = None
    request_headers: dict[str, str] = field(default_factory=dict)


def is_success(outcome: Outcome) -> bool:
    """True for a 2xx answer without a failure class; 3xx and everything else fail."""
    return outcome.failure_class is None and 200 <= outcome.status < 300


def _move(delivery: Delivery, target: DeliveryState) -> None:
    if target not in ALLOWED[delivery.state]:
        raise InvalidTransition(
            f"delivery {delivery.id} cannot go from {delivery.state} to {target}"
        )


def transition(
    delivery: Delivery, outcome: Outcome, now: datetime, next_at: datetime | None
) -> Delivery:
    """The delivery after the try described by ``outcome`` ended at ``now``.

    Success → SUCCESS; a failure with ``next_at`` → PENDING due at ``next_at``; a failure
    without → FAILED. ``attempts`` grows by one. ``next_at`` is ignored on success. Raises
    ``InvalidTransition`` unless ``delivery`` is SENDING.
    """
    if is_success(outcome):
        target, due = DeliveryState.SUCCESS, None
    elif next_at is not None:
        target, due = DeliveryState.PENDING, next_at
    else:
        target, due = DeliveryState.FAILED, None
    # the table allows these three targets only from SENDING: a try needs a claim first
    _move(delivery, target)
    return replace(
        delivery,
        state=target,
        attempts=delivery.attempts + 1,
        next_attempt_at=due,
        updated_at=now,
    )


def cancel(delivery: Delivery, now: datetime) -> Delivery:
    """The delivery given up without a try (its endpoint is gone or disabled, or its message).

    ``attempts`` is unchanged. Raises ``InvalidTransition`` unless it is PENDING or SENDING.
    """
    _move(delivery, DeliveryState.CANCELED)
    return replace(delivery, state=DeliveryState.CANCELED, next_attempt_at=None, updated_at=now)


def release(delivery: Delivery, now: datetime) -> Delivery:
    """The claimed delivery handed back unsent (its worker stops, or its lease is too short
    for a try now): PENDING again, due when it was, ``attempts`` unchanged. Raises
    ``InvalidTransition`` unless it is SENDING."""
    if delivery.state is not DeliveryState.SENDING:
        raise InvalidTransition(f"delivery {delivery.id} is {delivery.state}, not sending")
    return replace(delivery, state=DeliveryState.PENDING, updated_at=now)
