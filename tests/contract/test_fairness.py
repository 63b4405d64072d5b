"""Fair claims and endpoint health in storage, on every backend: the per-endpoint in-flight
cap, throttleRate pacing, failing_since bookkeeping, per-event-type retry schedules and
replay-missing.

Times are fixed; the claims are made at ``NOW`` (or later) so the queue order is exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from homing.core.models import (
    Application,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointSecret,
    EventType,
    Message,
    Trigger,
)
from homing.ids import new_id
from homing.storage import Storage, open_storage
from homing.storage.base import MessageFilter, PageRequest

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
ORG = "org_fairness"
CAP = 4


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def add_app(storage: Storage, org_id: str = ORG) -> Application:
    return await storage.create_application(
        Application(new_id("app", _ms(NOW)), org_id, "Fair", None, None, {}, NOW, NOW)
    )


async def add_endpoint(
    storage: Storage,
    app: Application,
    rate_limit: int | None = None,
    event_types: tuple[str, ...] | None = None,
    channels: tuple[str, ...] | None = None,
) -> Endpoint:
    return await storage.create_endpoint(
        Endpoint(
            id=new_id("ep"),
            org_id=app.org_id,
            app_id=app.id,
            url="https://r.example/hook",
            uid=None,
            description="",
            rate_limit=rate_limit,
            disabled=False,
            event_types=event_types,
            channels=channels,
            secrets=(EndpointSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),),
            headers={},
            metadata={},
            created_at=NOW,
            updated_at=NOW,
        )
    )


async def add_message(
    storage: Storage,
    app: Application,
    at: datetime,
    event_type: str = "user.created",
    channels: tuple[str, ...] | None = None,
) -> Message:
    message = Message(
        new_id("msg", _ms(at)), app.org_id, app.id, event_type, None, "{}", channels, None, at
    )
    await storage.create_message(message)
    return message


async def queue(storage: Storage, app: Application, count: int, first_at: datetime) -> None:
    """``count`` messages (so as many due deliveries per endpoint), 1 ms apart from
    ``first_at``."""
    for n in range(count):
        await add_message(storage, app, first_at + timedelta(milliseconds=n))


async def deliveries_of(storage: Storage, endpoint: Endpoint) -> list[Delivery]:
    page = await storage.list_endpoint_messages(
        endpoint.id, MessageFilter(), None, PageRequest(limit=250)
    )
    assert page.done
    return [delivery for _, delivery in page.items]


async def claim_at_once(
    storage: Storage, database_url: str, limit: int, prefetch: dict[str, int] | None = None
) -> tuple[list[Delivery], list[Delivery]]:
    """Workers w1 (on ``storage``) and w2 (on a second storage of the same database) each
    claim 6 times, interleaved; what each got."""
    second = await open_storage(database_url)

    async def claim_repeatedly(store: Storage, worker: str) -> list[Delivery]:
        got: list[Delivery] = []
        for _ in range(6):
            got += await store.claim_due(NOW, limit, worker, LEASE, cap=CAP, prefetch=prefetch)
            await asyncio.sleep(0)
        return got

    try:
        one, two = await asyncio.gather(
            claim_repeatedly(storage, "w1"), claim_repeatedly(second, "w2")
        )
    finally:
        await second.close()
    return one, two


async def in_flight(storage: Storage, endpoint: Endpoint) -> int:
    return (await storage.endpoint_stats(endpoint.id, None, None))[DeliveryState.SENDING]


# -- the in-flight cap -----------------------------------------------------------------------


async def test_busy_endpoint_does_not_starve_the_one_queued_behind_it(storage: Storage) -> None:
    """With 200 of A due before 5 of B and a cap of 4, one claim of 10 starts 4 of A and as
    many of B as its cap allows: B is not starved behind A's surplus."""
    app_a, app_b = await add_app(storage), await add_app(storage)
    a, b = await add_endpoint(storage, app_a), await add_endpoint(storage, app_b)
    await queue(storage, app_a, 200, NOW - timedelta(seconds=10))
    await queue(storage, app_b, 5, NOW - timedelta(seconds=1))

    claimed = await storage.claim_due(NOW, 10, "w1", LEASE, cap=CAP)

    of_a = [d for d in claimed if d.endpoint_id == a.id]
    of_b = [d for d in claimed if d.endpoint_id == b.id]
    assert len(of_a) == CAP
    assert len(of_b) == min(5, CAP), "B's due deliveries wait behind A's surplus"


async def test_surplus_of_a_busy_endpoint_stays_due_and_waits_for_a_free_slot(
    storage: Storage,
) -> None:
    """The deliveries of A that the cap keeps back stay due where they were (nothing is
    rescheduled), none of A starts while its 4 are in flight, and one starts when a send ends."""
    app = await add_app(storage)
    a = await add_endpoint(storage, app)
    await queue(storage, app, 20, NOW - timedelta(seconds=10))
    due_at = {d.id: d.next_attempt_at for d in await deliveries_of(storage, a)}

    first = await storage.claim_due(NOW, 10, "w1", LEASE, cap=CAP)

    assert len(first) == CAP
    pending = [d for d in await deliveries_of(storage, a) if d.state is DeliveryState.PENDING]
    assert len(pending) == 20 - CAP
    assert all(d.next_attempt_at == due_at[d.id] for d in pending)
    assert await storage.claim_due(NOW, 10, "w2", LEASE, cap=CAP) == []
    assert await in_flight(storage, a) == CAP

    done = replace(first[0], state=DeliveryState.SUCCESS, attempts=1, updated_at=NOW)
    assert await storage.record_attempt(None, done)
    assert len(await storage.claim_due(NOW, 10, "w2", LEASE, cap=CAP)) == 1


async def test_concurrent_claimers_never_exceed_the_cap_together(
    storage: Storage, database_url: str
) -> None:
    """Two storage instances claiming at once never have more than cap of one endpoint in
    flight in all (SQLite serialises writers; PostgreSQL locks the endpoint row)."""
    app = await add_app(storage)
    a = await add_endpoint(storage, app)
    await queue(storage, app, 40, NOW - timedelta(seconds=10))
    one, two = await claim_at_once(storage, database_url, limit=2)

    assert 1 <= len(one) + len(two) <= CAP
    assert len({d.id for d in one + two}) == len(one) + len(two)
    assert await in_flight(storage, a) == len(one) + len(two)


# -- throttleRate pacing ---------------------------------------------------------------------


async def test_throttled_endpoint_gets_slots_one_over_rate_apart(storage: Storage) -> None:
    """At throttleRate 2 a claim starts one of 10 due deliveries and gives the other nine
    slots 0.5 s apart; a claim at the second slot starts that (paced) delivery."""
    app = await add_app(storage)
    ep = await add_endpoint(storage, app, rate_limit=2)
    await queue(storage, app, 10, NOW - timedelta(seconds=1))
    step = timedelta(seconds=0.5)

    first = await storage.claim_due(NOW, 10, "w1", LEASE)

    assert len(first) == 1
    waiting = sorted(
        (d for d in await deliveries_of(storage, ep) if d.state is DeliveryState.PENDING),
        key=lambda d: d.next_attempt_at or NOW,
    )
    assert [d.next_attempt_at for d in waiting] == [NOW + n * step for n in range(1, 10)]

    second = await storage.claim_due(NOW + step, 10, "w1", LEASE)

    assert [d.id for d in second] == [waiting[0].id]
    assert await storage.claim_due(NOW + step, 10, "w1", LEASE) == []  # the 3rd slot is later
    assert (await storage.get_delivery(waiting[1].msg_id, ep.id)).next_attempt_at == (  # type: ignore[union-attr]
        NOW + 2 * step
    )


async def test_throttle_slots_carry_over_to_new_deliveries(storage: Storage) -> None:
    """Deliveries that fall due after slots were handed out queue behind those slots."""
    app = await add_app(storage)
    ep = await add_endpoint(storage, app, rate_limit=2)
    await queue(storage, app, 2, NOW - timedelta(seconds=1))
    assert len(await storage.claim_due(NOW, 10, "w1", LEASE)) == 1  # slot NOW+0.5 s is taken
    fresh = await add_message(storage, app, NOW)

    assert await storage.claim_due(NOW, 10, "w1", LEASE) == []

    delivery = await storage.get_delivery(fresh.id, ep.id)
    assert delivery is not None
    assert delivery.next_attempt_at == NOW + timedelta(seconds=1)


# -- endpoint health -------------------------------------------------------------------------


async def test_failing_since_is_set_once_and_cleared_by_a_success(storage: Storage) -> None:
    """note_exhausted keeps the first failure time; note_success clears it."""
    app = await add_app(storage)
    ep = await add_endpoint(storage, app)
    later = NOW + timedelta(hours=1)

    assert await storage.note_exhausted(ep.id, NOW) == NOW
    assert await storage.note_exhausted(ep.id, later) == NOW
    assert (await storage.get_endpoint(app.id, ep.id)).failing_since == NOW

    await storage.note_success(ep.id)

    assert (await storage.get_endpoint(app.id, ep.id)).failing_since is None
    assert await storage.note_exhausted(ep.id, later) == later


async def test_note_exhausted_for_a_missing_endpoint_is_none(storage: Storage) -> None:
    """A deleted endpoint has no failing time."""
    assert await storage.note_exhausted(new_id("ep"), NOW) is None


async def test_disable_endpoint_reports_only_the_first_time(storage: Storage) -> None:
    """disable_endpoint is True when it disabled the endpoint, False when it already was."""
    app = await add_app(storage)
    ep = await add_endpoint(storage, app)

    assert await storage.disable_endpoint(ep.id, NOW) is True
    assert await storage.disable_endpoint(ep.id, NOW) is False
    assert (await storage.get_endpoint(app.id, ep.id)).disabled


async def test_get_endpoints_returns_those_that_exist(storage: Storage) -> None:
    """get_endpoints maps the ids that exist to their endpoints and leaves the rest out."""
    app = await add_app(storage)
    one, two = await add_endpoint(storage, app), await add_endpoint(storage, app)

    found = await storage.get_endpoints([one.id, two.id, new_id("ep")])

    assert found == {one.id: one, two.id: two}
    assert await storage.get_endpoints([]) == {}


# -- retry schedules -------------------------------------------------------------------------


def event_type(name: str, schedule: tuple[int, ...] | None, org_id: str = ORG) -> EventType:
    return EventType(org_id, name, "", False, False, None, None, NOW, NOW, schedule)


async def test_retry_schedules_lists_only_event_types_with_one(storage: Storage) -> None:
    """Only event types of the organisation that set a schedule are returned."""
    await storage.create_event_type(event_type("with.schedule", (0, 5, 60)))
    await storage.create_event_type(event_type("without.schedule", None))
    await storage.create_event_type(event_type("elsewhere", (1,), org_id="org_other"))
    await storage.create_event_type(event_type("empty.schedule", ()))

    found = await storage.retry_schedules(
        ORG, ["with.schedule", "without.schedule", "elsewhere", "empty.schedule", "unknown"]
    )

    assert found == {"with.schedule": (0, 5, 60), "empty.schedule": ()}
    assert await storage.retry_schedules(ORG, []) == {}


# -- replay-missing --------------------------------------------------------------------------


async def test_replay_missing_queues_only_what_the_endpoint_missed(storage: Storage) -> None:
    """Messages in [since, until) that the endpoint wants and has no delivery of are queued
    (as manual tries, due now); the count is returned and a second call makes none."""
    app, other_app = await add_app(storage), await add_app(storage)
    since, until = NOW - timedelta(hours=1), NOW - timedelta(minutes=5)
    wanted = ("user.created", "user.deleted")

    def at(minutes: int) -> datetime:
        return NOW - timedelta(minutes=minutes)

    before = await add_message(storage, app, since - timedelta(milliseconds=1), channels=("eu",))
    at_since = await add_message(storage, app, since, channels=("eu",))
    second_type = await add_message(storage, app, at(50), "user.deleted", channels=("us", "eu"))
    wrong_type = await add_message(storage, app, at(40), "order.paid", channels=("eu",))
    wrong_channel = await add_message(storage, app, at(30), channels=("us",))
    no_channel = await add_message(storage, app, at(25))
    await add_message(storage, other_app, at(20), channels=("eu",))
    at_until = await add_message(storage, app, until, channels=("eu",))
    ep = await add_endpoint(storage, app, event_types=wanted, channels=("eu",))
    already = await add_message(storage, app, at(15), channels=("eu",))  # fanned out to ep

    made = await storage.replay_missing(ep, since, until, NOW)

    assert made == 2
    for message in (at_since, second_type):
        delivery = await storage.get_delivery(message.id, ep.id)
        assert delivery is not None
        assert (delivery.state, delivery.trigger, delivery.attempts) == (
            DeliveryState.PENDING, Trigger.MANUAL, 0,
        )  # fmt: skip
        assert delivery.next_attempt_at == NOW
    for message in (before, wrong_type, wrong_channel, no_channel, at_until):
        assert await storage.get_delivery(message.id, ep.id) is None
    kept = await storage.get_delivery(already.id, ep.id)
    assert kept is not None and kept.trigger is Trigger.SCHEDULED
    assert len(await deliveries_of(storage, ep)) == 3

    assert await storage.replay_missing(ep, since, until, NOW) == 0

    assert await storage.replay_missing(ep, since, None, NOW) == 1  # open end: at_until too
    assert await storage.get_delivery(at_until.id, ep.id) is not None


# -- leasing ahead (prefetch) ----------------------------------------------------------------


async def test_worker_alone_on_an_endpoint_leases_ahead_and_keeps_others_out(
    storage: Storage,
) -> None:
    """w1 may lease 10 of ``a`` ahead (it sends 4 at a time itself); while it holds any, w2
    gets none of ``a``, but still gets ``b``; once w1 holds none, w2 may take over."""
    app = await add_app(storage)
    a = await add_endpoint(storage, app)
    b = await add_endpoint(storage, await add_app(storage))
    await queue(storage, app, 30, NOW - timedelta(seconds=10))
    first = await storage.claim_due(NOW, 50, "w1", LEASE, cap=CAP, prefetch={a.id: 10})
    assert len(first) == 10
    assert await storage.claim_due(NOW, 50, "w1", LEASE, cap=CAP, prefetch={a.id: 10}) == []
    assert await storage.claim_due(NOW, 50, "w2", LEASE, cap=CAP, prefetch={a.id: 10}) == []

    await add_message(storage, await storage.get_application(ORG, b.app_id), NOW)
    of_b = await storage.claim_due(NOW, 50, "w2", LEASE, cap=CAP, prefetch={a.id: 10})
    assert [d.endpoint_id for d in of_b] == [b.id]

    for d in first[:9]:
        done = replace(d, state=DeliveryState.SUCCESS, attempts=1, updated_at=NOW)
        assert await storage.record_attempt(None, done)
    # w1 still holds one lease of a: w2 may only fill up to the cap
    second = await storage.claim_due(NOW, 50, "w2", LEASE, cap=CAP, prefetch={a.id: 10})
    assert len(second) == CAP - 1
    # and now that two workers hold leases of a, w1 is bound by the cap too
    assert await storage.claim_due(NOW, 50, "w1", LEASE, cap=CAP, prefetch={a.id: 10}) == []
    assert await in_flight(storage, a) == CAP


async def test_paced_endpoint_is_not_leased_ahead(storage: Storage) -> None:
    app = await add_app(storage)
    a = await add_endpoint(storage, app, rate_limit=1000)
    await queue(storage, app, 30, NOW - timedelta(seconds=10))
    claimed = await storage.claim_due(NOW, 50, "w1", LEASE, cap=CAP, prefetch={a.id: 10})
    assert 1 <= len(claimed) <= CAP


async def test_concurrent_claimers_leasing_ahead_never_share_an_endpoint_past_the_cap(
    storage: Storage, database_url: str
) -> None:
    """Two storage instances claiming at once with prefetch: either one of them holds all the
    leases of the endpoint, or both together hold at most the cap."""
    app = await add_app(storage)
    a = await add_endpoint(storage, app)
    await queue(storage, app, 60, NOW - timedelta(seconds=10))
    one, two = await claim_at_once(storage, database_url, limit=3, prefetch={a.id: 12})

    assert len({d.id for d in one + two}) == len(one) + len(two)
    if one and two:
        assert len(one) + len(two) <= CAP
    else:
        assert 1 <= len(one) + len(two) <= 12
    assert await in_flight(storage, a) == len(one) + len(two)


async def test_stale_copy_of_a_renewed_lease_cannot_move_the_delivery(storage: Storage) -> None:
    """w1's lease runs out while the delivery waits in w1's queue; it is reclaimed and w1
    leases it again. Handing back (or recording) the stale copy must not touch the new lease:
    otherwise w2 could claim and send it while w1 sends it too."""
    app = await add_app(storage)
    endpoint = await add_endpoint(storage, app)
    await queue(storage, app, 1, NOW - timedelta(seconds=1))
    [stale] = await storage.claim_due(NOW, 10, "w1", LEASE, cap=CAP)
    later = NOW + LEASE + timedelta(seconds=1)
    assert await storage.reclaim_expired(later) == 1
    [fresh] = await storage.claim_due(later, 10, "w1", LEASE, cap=CAP)
    assert fresh.id == stale.id and fresh.lease_until != stale.lease_until

    handed_back = replace(stale, state=DeliveryState.PENDING, updated_at=later)
    assert await storage.record_attempts([(None, handed_back)]) == [None]
    assert await in_flight(storage, endpoint) == 1
    assert await storage.claim_due(later, 10, "w2", LEASE, cap=CAP) == []
    done = replace(fresh, state=DeliveryState.SUCCESS, attempts=1, updated_at=later)
    assert await storage.record_attempts([(None, done)]) == [DeliveryState.SUCCESS]


async def test_backlog_leased_ahead_does_not_hide_an_endpoint_past_the_first_window(
    storage: Storage,
) -> None:
    """200 of A (which w1 may lease ahead) are due before B's one delivery, far more than one
    read window: one claim still gives B its delivery, and A the rest of the limit."""
    app_a, app_b = await add_app(storage), await add_app(storage)
    a, b = await add_endpoint(storage, app_a), await add_endpoint(storage, app_b)
    await queue(storage, app_a, 200, NOW - timedelta(seconds=10))
    await queue(storage, app_b, 1, NOW - timedelta(seconds=1))
    got = await storage.claim_due(NOW, 8, "w1", LEASE, cap=CAP, prefetch={a.id: 64}, plain=4)
    assert sum(d.endpoint_id == b.id for d in got) == 1
    assert sum(d.endpoint_id == a.id for d in got) == 7
