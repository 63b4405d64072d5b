"""When to try a failed delivery again (pure): the retry schedule as data.

The schedule lists the delays, in seconds, before the 2nd, 3rd, ... try, each counted from the
end of the try before it; when it runs out the delivery has failed. The default is Svix's:
5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (eight tries over about 28 hours).

Adjustments, in this order:

1. **Jitter**: each delay is scaled by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]``
   so that deliveries that failed together (an endpoint outage) do not retry together.
2. **Slow-down floor**: after a timeout or a 429 the receiver is overloaded, so the next try
   waits at least ``slow_down_floor`` seconds (30 s by default) even when the schedule says
   less. The floor only lengthens; it never adds a try.
3. **Retry-After**: on 429 and 503 the server's ``Retry-After`` (seconds; the sender turns an
   HTTP date into seconds) lengthens the delay to at least that value, capped at
   ``retry_after_cap`` (24 h by default) so that a hostile or broken server cannot park a
   delivery for ever. It never shortens the schedule, so it cannot be used to hammer us.

A 410 Gone is final: no retry (the worker also disables the endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from homing.core.states import Outcome, is_success
from homing.errors import ConfigError

DEFAULT_SCHEDULE: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_JITTER = 0.2
DEFAULT_RETRY_AFTER_CAP = 24 * 3600
DEFAULT_SLOW_DOWN_FLOOR = 30

_GONE = 410
_TOO_MANY_REQUESTS = 429
_UNAVAILABLE = 503


class Rng(Protocol):
    """The one method of ``random.Random`` the policy needs (pass a seeded one in tests)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry delays in seconds after each failed try, and how to bend them (module docstring).

    Raises ``ConfigError`` for a negative delay, cap or floor, or a jitter outside ``[0, 1)``.
    """

    schedule: tuple[int, ...] = DEFAULT_SCHEDULE
    jitter: float = DEFAULT_JITTER
    retry_after_cap: int = DEFAULT_RETRY_AFTER_CAP
    slow_down_floor: int = DEFAULT_SLOW_DOWN_FLOOR

    def __post_init__(self) -> None:
        if any(delay < 0 for delay in self.schedule):
            raise ConfigError("retry schedule: delays must not be negative")
        if not 0 <= self.jitter < 1:
            raise ConfigError("retry jitter: must be in [0, 1)")
        if self.retry_after_cap < 0 or self.slow_down_floor < 0:
            raise ConfigError("retry policy: cap and floor must not be negative")

    @property
    def max_attempts(self) -> int:
        """How many tries a delivery gets in all: the first one plus one per delay."""
        return len(self.schedule) + 1


def _is_overload(outcome: Outcome) -> bool:
    return outcome.failure_class == "timeout" or outcome.status == _TOO_MANY_REQUESTS


def next_attempt_at(
    policy: RetryPolicy, attempts_made: int, outcome: Outcome, now: datetime, rng: Rng
) -> datetime | None:
    """When to try again after the ``attempts_made``-th try ended at ``now`` with ``outcome``.

    Returns None when there is nothing more to do: the try succeeded, the answer was 410 Gone,
    or the schedule is exhausted. ``rng.uniform`` is called once per scheduled retry. Raises
    ``ValueError`` if ``attempts_made`` is below 1 (there is always a try before a retry).
    """
    if attempts_made < 1:
        raise ValueError(f"attempts_made must be at least 1, not {attempts_made}")
    if is_success(outcome) or outcome.status == _GONE or attempts_made > len(policy.schedule):
        return None
    delay = policy.schedule[attempts_made - 1] * (1 + rng.uniform(-policy.jitter, policy.jitter))
    if _is_overload(outcome):
        delay = max(delay, policy.slow_down_floor)
    if outcome.status in (_TOO_MANY_REQUESTS, _UNAVAILABLE) and outcome.retry_after is not None:
        delay = max(delay, min(max(outcome.retry_after, 0.0), policy.retry_after_cap))
    return now + timedelta(seconds=delay)
