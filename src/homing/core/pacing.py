"""Pacing (pure): which due deliveries one claim may start now, and when the others may.

Two limits keep one endpoint from hurting the rest, across every worker (the inputs are read
in the claim transaction):

- at most ``cap`` deliveries in flight per endpoint: the surplus stays due but is passed over
  (``held``); the claim then reads on past that endpoint, so its backlog cannot keep other
  endpoints waiting, and its next delivery starts as soon as one of its sends ends;
- at most ``rate`` starts per second for an endpoint with a ``throttleRate``: starts are spaced
  ``1/rate`` apart. A delivery that must wait is given the next free slot (``paced``), and the
  endpoint's ``next_send_at`` moves past it, so waiting deliveries never compete for a slot
  twice.

A claimer may also hold more than ``cap`` leases of an endpoint (its ``prefetch`` for that
endpoint), but only while no other claimer holds any of its leases and it has no ``rate``: it
then keeps the surplus queued and never sends more than ``cap`` at once itself, so the cap
holds across claimers.
Whenever two claimers hold leases of one endpoint, the total stays within ``cap``: a claimer
only joins while the total is under it, and then only up to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Due:
    """A due pending delivery; ``paced`` when its time is a slot already reserved for it."""

    delivery_id: str
    endpoint_id: str
    paced: bool = False


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    in_flight: int = 0  # leases held, by every claimer
    rate: int | None = None  # starts per second (Svix throttleRate)
    next_send_at: datetime | None = None
    mine: int = 0  # of ``in_flight``, the leases this claimer holds

    def allowance(self, cap: int, prefetch: int) -> int:
        """How many leases this claimer may hold in all: ``prefetch`` when the endpoint is
        unpaced and nobody else holds a lease of it, else ``cap``."""
        alone = self.in_flight == self.mine and not self.rate
        return max(cap, prefetch) if alone else cap


@dataclass(slots=True)
class ClaimPlan:
    start: list[str] = field(default_factory=list)
    #: delivery id -> (new next_attempt_at, paced)
    defer: dict[str, tuple[datetime, bool]] = field(default_factory=dict)
    #: endpoint id -> its new next_send_at
    next_send_at: dict[str, datetime] = field(default_factory=dict)
    #: endpoints at their cap: their due deliveries were passed over, untouched
    held: set[str] = field(default_factory=set)


def plan_claim(
    due: Sequence[Due],
    loads: Mapping[str, EndpointLoad],
    now: datetime,
    limit: int,
    cap: int,
    prefetch: Mapping[str, int] | None = None,
    plain: int | None = None,
    lease_ahead: bool = True,
) -> ClaimPlan:
    """Go through ``due`` in queue order and decide, for at most ``limit`` starts, what starts
    now and what waits until when. Deliveries past the limit are left as they are.

    First every endpoint gets up to ``cap`` (endpoints not in ``prefetch`` at most ``plain``
    starts in all: what the claimer can send at once), then what is left of ``limit`` goes to
    the endpoints in ``prefetch``, up to their allowance (see the module text). So one
    endpoint's backlog leased ahead never keeps the endpoints queued behind it out (a caller
    reading the queue in windows plans each with ``lease_ahead=False`` and leases ahead once
    it has read them all).
    """
    plan = ClaimPlan()
    ahead = prefetch or {}
    running = {ep: load.in_flight for ep, load in loads.items()}
    plain_left = limit if plain is None else plain
    for item in due:
        if len(plan.start) >= limit:
            break
        is_plain = item.endpoint_id not in ahead
        if is_plain and plain_left <= 0:
            continue
        load = loads.get(item.endpoint_id, EndpointLoad())
        if running.get(item.endpoint_id, 0) >= cap:
            plan.held.add(item.endpoint_id)
            continue
        if load.rate and not item.paced:
            slot = max(plan.next_send_at.get(item.endpoint_id, load.next_send_at or now), now)
            plan.next_send_at[item.endpoint_id] = slot + timedelta(seconds=1 / load.rate)
            if slot > now:
                plan.defer[item.delivery_id] = (slot, True)
                continue
        plan.start.append(item.delivery_id)
        running[item.endpoint_id] = running.get(item.endpoint_id, 0) + 1
        plain_left -= is_plain
    if lease_ahead:
        _lease_ahead(plan, due, loads, running, limit, cap, ahead)
    return plan


def _lease_ahead(
    plan: ClaimPlan,
    due: Sequence[Due],
    loads: Mapping[str, EndpointLoad],
    running: dict[str, int],
    limit: int,
    cap: int,
    ahead: Mapping[str, int],
) -> None:
    """The second pass of ``plan_claim``: endpoints leased ahead take what is left."""
    allowed = {ep: loads[ep].allowance(cap, n) for ep, n in ahead.items() if ep in loads}
    allowed = {ep: n for ep, n in allowed.items() if n > cap}
    if not allowed or len(plan.start) >= limit:
        return
    planned = set(plan.start) | set(plan.defer)
    for item in due:
        if len(plan.start) >= limit:
            break
        endpoint = item.endpoint_id
        if endpoint not in allowed or item.delivery_id in planned:
            continue
        if running.get(endpoint, 0) < allowed[endpoint]:
            plan.start.append(item.delivery_id)
            running[endpoint] = running.get(endpoint, 0) + 1
    plan.held -= {ep for ep, n in allowed.items() if running.get(ep, 0) < n}
