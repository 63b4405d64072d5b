"""The claim planner (``core.pacing.plan_claim``): the per-endpoint in-flight cap and the
throttleRate pacing, decided purely from the due queue and each endpoint's load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from homing.core.pacing import ClaimPlan, Due, EndpointLoad, plan_claim

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def due(endpoint: str, count: int, paced: bool = False, start: int = 0) -> list[Due]:
    """``count`` due deliveries of ``endpoint``, named ``{endpoint}{n}``."""
    return [Due(f"{endpoint}{n}", endpoint, paced) for n in range(start, start + count)]


def plan(
    items: list[Due],
    loads: dict[str, EndpointLoad] | None = None,
    limit: int = 100,
    cap: int = 16,
) -> ClaimPlan:
    return plan_claim(items, loads or {}, NOW, limit, cap)


def test_nothing_due_plans_nothing() -> None:
    """An empty queue starts, defers and paces nothing."""
    result = plan([])
    assert (result.start, result.defer, result.next_send_at) == ([], {}, {})


def test_cap_holds_the_surplus_as_it_is() -> None:
    """Past the cap an endpoint's deliveries are passed over, untouched, and it is held."""
    result = plan(due("a", 5), {"a": EndpointLoad(in_flight=1)}, cap=3)
    assert result.start == ["a0", "a1"]
    assert result.defer == {}
    assert result.held == {"a"}
    assert result.next_send_at == {}


def test_endpoint_already_at_cap_starts_nothing() -> None:
    """An endpoint whose in-flight count is at the cap gets nothing new this claim."""
    result = plan(due("a", 2), {"a": EndpointLoad(in_flight=4)}, cap=4)
    assert result.start == []
    assert result.defer == {}
    assert result.held == {"a"}


def test_throttle_spaces_starts_one_over_rate_apart() -> None:
    """With rate 4/s the first delivery starts now and the others get slots 0.25 s apart."""
    result = plan(due("a", 4), {"a": EndpointLoad(rate=4)})
    step = timedelta(seconds=0.25)
    assert result.start == ["a0"]
    assert result.defer == {
        "a1": (NOW + step, True),
        "a2": (NOW + 2 * step, True),
        "a3": (NOW + 3 * step, True),
    }
    assert result.next_send_at == {"a": NOW + 4 * step}  # past every slot handed out


def test_throttle_waits_for_a_future_next_send_at() -> None:
    """When the endpoint's next free slot is in the future, even the first delivery waits."""
    later = NOW + timedelta(seconds=3)
    result = plan(due("a", 2), {"a": EndpointLoad(rate=2, next_send_at=later)})
    assert result.start == []
    assert result.defer == {
        "a0": (later, True),
        "a1": (later + timedelta(seconds=0.5), True),
    }
    assert result.next_send_at == {"a": later + timedelta(seconds=1)}


def test_throttle_ignores_a_past_next_send_at() -> None:
    """A next_send_at in the past does not hand out slots in the past: now is the floor."""
    result = plan(due("a", 2), {"a": EndpointLoad(rate=1, next_send_at=NOW - timedelta(hours=1))})
    assert result.start == ["a0"]
    assert result.defer == {"a1": (NOW + timedelta(seconds=1), True)}
    assert result.next_send_at == {"a": NOW + timedelta(seconds=2)}


def test_paced_delivery_starts_without_taking_a_new_slot() -> None:
    """A delivery whose due time is its reserved slot starts now and moves next_send_at not."""
    reserved = NOW + timedelta(seconds=5)
    result = plan(due("a", 1, paced=True), {"a": EndpointLoad(rate=1, next_send_at=reserved)})
    assert result.start == ["a0"]
    assert result.defer == {}
    assert result.next_send_at == {}


def test_paced_delivery_still_obeys_the_cap() -> None:
    """A paced delivery of an endpoint at its cap waits, keeping its slot, until one frees."""
    result = plan(due("a", 1, paced=True), {"a": EndpointLoad(in_flight=2, rate=1)}, cap=2)
    assert result.start == []
    assert result.defer == {}
    assert result.held == {"a"}


def test_paced_and_new_deliveries_mix() -> None:
    """A paced delivery starts in its slot while new ones of the endpoint take later slots."""
    slot = NOW + timedelta(seconds=1)
    items = [Due("p", "a", paced=True), *due("a", 2)]
    result = plan(items, {"a": EndpointLoad(rate=1, next_send_at=slot)})
    assert result.start == ["p"]
    assert result.defer == {"a0": (slot, True), "a1": (slot + timedelta(seconds=1), True)}


def test_limit_stops_planning_and_leaves_the_rest_untouched() -> None:
    """Once ``limit`` deliveries start, the rest are neither started nor rescheduled; an
    endpoint held before that point stays held and does not count towards the limit."""
    items = [Due("x0", "x"), *due("a", 3), Due("b0", "b")]
    result = plan(
        items, {"x": EndpointLoad(in_flight=2), "b": EndpointLoad(rate=1)}, limit=2, cap=2
    )
    assert result.start == ["a0", "a1"]
    assert result.defer == {}
    assert result.held == {"x"}
    assert result.next_send_at == {}  # b was never reached, so none of its slots was taken


def test_interleaved_endpoints_keep_queue_order_for_the_healthy_ones() -> None:
    """A busy endpoint's and a throttled endpoint's surplus step aside; the others start in
    queue order."""
    items = [
        Due("a0", "busy"),
        Due("b0", "calm"),
        Due("t0", "slow"),
        Due("a1", "busy"),
        Due("c0", "other"),
        Due("t1", "slow"),
        Due("b1", "calm"),
        Due("c1", "other"),
    ]
    loads = {
        "busy": EndpointLoad(in_flight=3),
        "calm": EndpointLoad(),
        "slow": EndpointLoad(rate=10),
        "other": EndpointLoad(in_flight=1),
    }
    result = plan(items, loads, cap=3)
    assert result.start == ["b0", "t0", "c0", "b1", "c1"]
    assert result.defer == {"t1": (NOW + timedelta(seconds=0.1), True)}
    assert result.held == {"busy"}
    assert result.next_send_at == {"slow": NOW + timedelta(seconds=0.2)}


def test_endpoint_missing_from_loads_has_no_limits_but_the_cap() -> None:
    """An endpoint without a load entry counts as idle and unthrottled: only the cap applies."""
    result = plan(due("z", 3), {}, cap=2)
    assert result.start == ["z0", "z1"]
    assert result.defer == {}
    assert result.held == {"z"}
    assert result.next_send_at == {}


def test_loads_are_not_changed() -> None:
    """Planning counts starts on its own copy: the given loads stay as they were."""
    loads = {"a": EndpointLoad(in_flight=1, rate=2)}
    plan(due("a", 3), loads)
    assert loads == {"a": EndpointLoad(in_flight=1, rate=2)}


# -- leasing ahead (prefetch) ----------------------------------------------------------------


def test_endpoint_served_by_this_claimer_alone_is_leased_ahead_up_to_its_prefetch() -> None:
    """Holding 3 leases of ``a`` itself and nobody else any, the claimer may hold 10: 7 more."""
    loads = {"a": EndpointLoad(in_flight=3, mine=3)}
    result = plan_claim(due("a", 20), loads, NOW, 100, 4, {"a": 10})
    assert result.start == [f"a{n}" for n in range(7)]
    assert result.held == {"a"}


def test_endpoint_nobody_serves_is_leased_ahead_from_zero() -> None:
    result = plan_claim(due("a", 20), {"a": EndpointLoad()}, NOW, 100, 4, {"a": 10})
    assert len(result.start) == 10


def test_another_claimers_lease_limits_the_endpoint_to_the_cap() -> None:
    """One lease held elsewhere: the cap (4) bounds every claimer's leases together."""
    loads = {"a": EndpointLoad(in_flight=3, mine=2)}
    result = plan_claim(due("a", 20), loads, NOW, 100, 4, {"a": 10})
    assert result.start == ["a0"]


def test_another_claimers_surplus_leaves_nothing() -> None:
    """Another claimer holds 9 leases (it leased ahead): nothing may join it."""
    loads = {"a": EndpointLoad(in_flight=9, mine=0)}
    assert plan_claim(due("a", 20), loads, NOW, 100, 4, {"a": 10}).start == []


def test_paced_endpoint_is_never_leased_ahead() -> None:
    """With a throttleRate, pacing decides the starts; the cap stays the limit."""
    loads = {"a": EndpointLoad(in_flight=4, mine=4, rate=1000)}
    assert plan_claim(due("a", 20), loads, NOW, 100, 4, {"a": 10}).start == []


def test_endpoints_without_a_prefetch_keep_the_cap() -> None:
    loads = {"a": EndpointLoad(), "b": EndpointLoad()}
    result = plan_claim(due("a", 20) + due("b", 20), loads, NOW, 100, 4, {"a": 10})
    assert sum(1 for d in result.start if d.startswith("a")) == 10
    assert sum(1 for d in result.start if d.startswith("b")) == 4


def test_allowance_is_the_cap_whenever_someone_else_holds_a_lease() -> None:
    assert EndpointLoad(in_flight=2, mine=2).allowance(4, 10) == 10
    assert EndpointLoad(in_flight=2, mine=1).allowance(4, 10) == 4
    assert EndpointLoad(in_flight=0, rate=5).allowance(4, 10) == 4
    assert EndpointLoad().allowance(4, 0) == 4  # a prefetch under the cap never lowers it


def test_plain_starts_are_bounded_but_leased_ahead_endpoints_are_not() -> None:
    """``plain`` bounds the starts of endpoints not leased ahead (what the claimer can send at
    once); an endpoint leased ahead still gets its allowance."""
    loads = {"a": EndpointLoad(), "b": EndpointLoad()}
    result = plan_claim(due("b", 5) + due("a", 20), loads, NOW, 100, 4, {"a": 10}, plain=2)
    assert [d for d in result.start if d.startswith("b")] == ["b0", "b1"]
    assert sum(1 for d in result.start if d.startswith("a")) == 10
    assert plan_claim(due("b", 5), loads, NOW, 100, 4, {}, plain=0).start == []


def test_backlog_leased_ahead_never_keeps_the_endpoints_behind_it_out() -> None:
    """``a``'s long backlog comes first in the queue and ``a`` may lease 10 ahead, but every
    endpoint gets its cap first: ``b`` gets 2 of the 6 starts, ``a`` the rest."""
    loads = {"a": EndpointLoad(), "b": EndpointLoad()}
    result = plan_claim(due("a", 20) + due("b", 3), loads, NOW, 6, 2, {"a": 10})
    assert result.start == ["a0", "a1", "b0", "b1", "a2", "a3"]
    assert result.held == {"b"}  # at its cap; "a" still had room
