"""The storage contract: every backend behaves the same for every domain verb.

Each test asks only for the ``storage`` fixture (or its ``database_url``), which runs it once
per backend. Times are fixed; ids are made from the records' own times so that id order (the
order pages are keyed by) matches time order.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from homing.core.models import (
    Application,
    Attempt,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointSecret,
    EventType,
    Message,
    MessageStatus,
    Trigger,
)
from homing.errors import ConflictError, NotFoundError
from homing.ids import new_id
from homing.storage import Storage, open_storage
from homing.storage.base import AttemptFilter, MessageFilter, PageRequest, StoredResponse

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
ORG = "org_contract"
OTHER_ORG = "org_other"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def make_app(uid: str | None = None, org_id: str = ORG, at: datetime = NOW) -> Application:
    return Application(
        id=new_id("app", _ms(at)),
        org_id=org_id,
        name=f"App {uid or 'anon'}",
        uid=uid,
        rate_limit=None,
        metadata={"team": "core"},
        created_at=at,
        updated_at=at,
    )


def make_endpoint(
    app: Application,
    uid: str | None = None,
    event_types: tuple[str, ...] | None = None,
    channels: tuple[str, ...] | None = None,
    disabled: bool = False,
) -> Endpoint:
    return Endpoint(
        id=new_id("ep"),
        org_id=app.org_id,
        app_id=app.id,
        url="https://receiver.example/hook",
        uid=uid,
        description="",
        rate_limit=None,
        disabled=disabled,
        event_types=event_types,
        channels=channels,
        secrets=(EndpointSecret(key="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),),
        headers={"X-Env": "test"},
        metadata={},
        created_at=NOW,
        updated_at=NOW,
    )


def make_message(
    app: Application,
    event_type: str = "user.created",
    at: datetime = NOW,
    channels: tuple[str, ...] | None = None,
    event_id: str | None = None,
) -> Message:
    return Message(
        id=new_id("msg", _ms(at)),
        org_id=app.org_id,
        app_id=app.id,
        event_type=event_type,
        event_id=event_id,
        payload='{"id":1}',
        channels=channels,
        tags=None,
        created_at=at,
    )


def make_attempt(delivery: Delivery, status: MessageStatus, code: int, at: datetime) -> Attempt:
    return Attempt(
        id=new_id("atmpt", _ms(at)),
        org_id=delivery.org_id,
        app_id=delivery.app_id,
        msg_id=delivery.msg_id,
        endpoint_id=delivery.endpoint_id,
        delivery_id=delivery.id,
        url="https://receiver.example/hook",
        status=status,
        response_status=code,
        response_body="ok" if code < 300 else "nope",
        request_headers={"webhook-id": delivery.msg_id},
        failure_class=None if code < 300 else "status",
        failure_message=None if code < 300 else f"HTTP {code}",
        duration_ms=12,
        trigger=delivery.trigger,
        created_at=at,
    )


def finished(claimed: Delivery, state: DeliveryState, at: datetime) -> Delivery:
    """``claimed`` after one attempt that ended in ``state`` (no further retry)."""
    return replace(
        claimed, state=state, attempts=claimed.attempts + 1, next_attempt_at=None, updated_at=at
    )


async def app_with_endpoint(storage: Storage, **endpoint: Any) -> tuple[Application, Endpoint]:
    app = await storage.create_application(make_app())
    ep = await storage.create_endpoint(make_endpoint(app, **endpoint))
    return app, ep


async def send_and_finish(
    storage: Storage, state: DeliveryState, at: datetime
) -> tuple[Delivery, Attempt]:
    """Claim the one due delivery at ``at`` and record an attempt that ends in ``state``."""
    (claimed,) = await storage.claim_due(at, 1, "w1", LEASE)
    ok = state is DeliveryState.SUCCESS
    attempt = make_attempt(
        claimed, MessageStatus.SUCCESS if ok else MessageStatus.FAIL, 200 if ok else 500, at
    )
    assert await storage.record_attempt(attempt, finished(claimed, state, at))
    return claimed, attempt


# -- schema ----------------------------------------------------------------------------------


async def test_migrate_again_applies_nothing(storage: Storage) -> None:
    """Migrating an up-to-date database is a no-op that returns no migration names."""
    assert await storage.migrate() == []


# -- applications ----------------------------------------------------------------------------


async def test_application_get_by_id_and_uid(storage: Storage) -> None:
    """A created application reads back unchanged by its id and by its uid."""
    app = await storage.create_application(make_app(uid="shop"))

    assert await storage.get_application(ORG, app.id) == app
    assert await storage.get_application(ORG, "shop") == app


async def test_application_uid_conflict(storage: Storage) -> None:
    """A second application with a taken uid raises ConflictError and is not stored."""
    await storage.create_application(make_app(uid="shop"))
    dup = make_app(uid="shop")

    with pytest.raises(ConflictError):
        await storage.create_application(dup)
    with pytest.raises(NotFoundError):
        await storage.get_application(ORG, dup.id)


async def test_application_uid_is_unique_per_org_only(storage: Storage) -> None:
    """Two organisations may each have an application with the same uid."""
    mine = await storage.create_application(make_app(uid="shop"))
    theirs = await storage.create_application(make_app(uid="shop", org_id=OTHER_ORG))

    assert await storage.get_application(ORG, "shop") == mine
    assert await storage.get_application(OTHER_ORG, "shop") == theirs


async def test_application_update(storage: Storage) -> None:
    """An update replaces name, uid and metadata; the old uid no longer resolves."""
    app = await storage.create_application(make_app(uid="shop"))
    later = NOW + timedelta(minutes=1)
    changed = replace(app, name="Renamed", uid="store", metadata={"a": "b"}, updated_at=later)

    await storage.update_application(changed)

    assert await storage.get_application(ORG, app.id) == changed
    assert await storage.get_application(ORG, "store") == changed
    with pytest.raises(NotFoundError):
        await storage.get_application(ORG, "shop")


async def test_application_update_to_taken_uid_conflicts(storage: Storage) -> None:
    """Updating an application to another application's uid raises ConflictError."""
    await storage.create_application(make_app(uid="shop"))
    other = await storage.create_application(make_app(uid="blog"))

    with pytest.raises(ConflictError):
        await storage.update_application(replace(other, uid="shop"))
    assert (await storage.get_application(ORG, other.id)).uid == "blog"


async def test_application_pagination_forward_and_back(storage: Storage) -> None:
    """Pages of two walk forward through all five applications and back again via -id."""
    created = [
        await storage.create_application(make_app(at=NOW + timedelta(seconds=i))) for i in range(5)
    ]
    await storage.create_application(make_app(org_id=OTHER_ORG))
    ids = sorted(a.id for a in created)

    pages = [await storage.list_applications(ORG, PageRequest(limit=2))]
    while not pages[-1].done:
        pages.append(await storage.list_applications(ORG, PageRequest(2, pages[-1].iterator)))

    assert [[a.id for a in p.items] for p in pages] == [ids[0:2], ids[2:4], ids[4:5]]
    assert [p.done for p in pages] == [False, False, True]
    assert pages[-1].iterator == ids[4]

    back = await storage.list_applications(ORG, PageRequest(2, pages[-1].prev_iterator))
    assert [a.id for a in back.items] == ids[2:4]
    assert not back.done
    first = await storage.list_applications(ORG, PageRequest(2, back.prev_iterator))
    assert [a.id for a in first.items] == ids[0:2]
    assert first.done


async def test_delete_application_cascades(storage: Storage) -> None:
    """Deleting an application removes its endpoints, messages, deliveries and attempts."""
    app, ep = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    _, attempt = await send_and_finish(storage, DeliveryState.SUCCESS, NOW)

    await storage.delete_application(app.id)

    with pytest.raises(NotFoundError):
        await storage.get_application(ORG, app.id)
    with pytest.raises(NotFoundError):
        await storage.get_endpoint(app.id, ep.id)
    with pytest.raises(NotFoundError):
        await storage.get_message(app.id, msg.id)
    with pytest.raises(NotFoundError):
        await storage.get_attempt(msg.id, attempt.id)
    assert await storage.get_delivery(msg.id, ep.id) is None
    assert sum((await storage.endpoint_stats(ep.id, None, None)).values()) == 0


async def test_application_is_invisible_to_other_orgs(storage: Storage) -> None:
    """Another organisation can neither get nor list an application, by id or uid."""
    app = await storage.create_application(make_app(uid="shop"))

    with pytest.raises(NotFoundError):
        await storage.get_application(OTHER_ORG, app.id)
    with pytest.raises(NotFoundError):
        await storage.get_application(OTHER_ORG, "shop")
    assert (await storage.list_applications(OTHER_ORG, PageRequest())).items == []


# -- endpoints -------------------------------------------------------------------------------


async def test_endpoint_create_get_update_delete(storage: Storage) -> None:
    """An endpoint reads back by id and uid, takes updates, and is gone after delete."""
    app = await storage.create_application(make_app())
    ep = await storage.create_endpoint(
        make_endpoint(app, uid="main", event_types=("a.b",), channels=("eu",))
    )

    assert await storage.get_endpoint(app.id, ep.id) == ep
    assert await storage.get_endpoint(app.id, "main") == ep

    changed = replace(
        ep,
        uid="primary",
        url="https://other.example/x",
        disabled=True,
        event_types=None,
        channels=("us", "eu"),
        headers={},
        description="rotated",
        metadata={"k": "v"},
        secrets=(
            EndpointSecret(key="whsec_bmV3LWtleS1uZXcta2V5LW5ldy1rZXk="),
            EndpointSecret(key=ep.secrets[0].key, expires_at=NOW + timedelta(hours=24)),
        ),
        updated_at=NOW + timedelta(minutes=1),
    )
    await storage.update_endpoint(changed)
    assert await storage.get_endpoint(app.id, "primary") == changed
    with pytest.raises(NotFoundError):
        await storage.get_endpoint(app.id, "main")

    await storage.delete_endpoint(ep.id)
    with pytest.raises(NotFoundError):
        await storage.get_endpoint(app.id, ep.id)


async def test_endpoint_uid_unique_per_application_only(storage: Storage) -> None:
    """An endpoint uid may repeat across applications but not within one."""
    first = await storage.create_application(make_app())
    second = await storage.create_application(make_app())
    await storage.create_endpoint(make_endpoint(first, uid="main"))
    other = await storage.create_endpoint(make_endpoint(second, uid="main"))

    with pytest.raises(ConflictError):
        await storage.create_endpoint(make_endpoint(first, uid="main"))
    assert await storage.get_endpoint(second.id, "main") == other
    spare = await storage.create_endpoint(make_endpoint(first, uid="spare"))
    with pytest.raises(ConflictError):
        await storage.update_endpoint(replace(spare, uid="main"))


async def test_endpoint_is_scoped_to_its_application(storage: Storage) -> None:
    """An endpoint cannot be read through another application."""
    _, ep = await app_with_endpoint(storage)
    other = await storage.create_application(make_app())

    with pytest.raises(NotFoundError):
        await storage.get_endpoint(other.id, ep.id)


# -- event types -----------------------------------------------------------------------------


def make_event_type(name: str, archived: bool = False, org_id: str = ORG) -> EventType:
    return EventType(
        org_id=org_id,
        name=name,
        description=f"{name} happened",
        archived=archived,
        deprecated=False,
        feature_flag=None,
        schemas={"1": {"type": "object"}},
        created_at=NOW,
        updated_at=NOW,
    )


async def test_event_type_create_and_conflict(storage: Storage) -> None:
    """An event type reads back; the same name again in the same org raises ConflictError."""
    et = await storage.create_event_type(make_event_type("user.created"))

    assert await storage.get_event_type(ORG, "user.created") == et
    with pytest.raises(ConflictError):
        await storage.create_event_type(make_event_type("user.created"))
    await storage.create_event_type(make_event_type("user.created", org_id=OTHER_ORG))


async def test_event_type_list_hides_archived(storage: Storage) -> None:
    """Listing omits archived event types unless include_archived is set."""
    for name in ("a.one", "b.two", "c.three"):
        await storage.create_event_type(make_event_type(name))
    await storage.update_event_type(replace(make_event_type("b.two"), archived=True))

    live = await storage.list_event_types(ORG, PageRequest(), include_archived=False)
    every = await storage.list_event_types(ORG, PageRequest(), include_archived=True)

    assert [e.name for e in live.items] == ["a.one", "c.three"]
    assert [e.name for e in every.items] == ["a.one", "b.two", "c.three"]
    assert every.items[1].archived


# -- messages --------------------------------------------------------------------------------


async def test_create_message_fans_out_to_matching_endpoints(storage: Storage) -> None:
    """Each message gets one pending delivery per enabled endpoint whose filters accept it."""
    app = await storage.create_application(make_app())
    every = await storage.create_endpoint(make_endpoint(app))
    created_only = await storage.create_endpoint(make_endpoint(app, event_types=("user.created",)))
    eu_only = await storage.create_endpoint(make_endpoint(app, channels=("eu",)))
    await storage.create_endpoint(make_endpoint(app, disabled=True))
    elsewhere = await storage.create_application(make_app())
    await storage.create_endpoint(make_endpoint(elsewhere))

    cases = [
        (make_message(app, "user.created"), {every.id, created_only.id}),
        (make_message(app, "user.deleted", channels=("eu",)), {every.id, eu_only.id}),
        (
            make_message(app, "user.created", channels=("us", "eu")),
            {every.id, created_only.id, eu_only.id},
        ),
        (make_message(app, "user.created", channels=("asia",)), {every.id, created_only.id}),
    ]
    for msg, expected in cases:
        deliveries = await storage.create_message(msg)

        assert {d.endpoint_id for d in deliveries} == expected, msg
        assert len(deliveries) == len(expected)
        for d in deliveries:
            assert d.msg_id == msg.id
            assert d.state is DeliveryState.PENDING
            assert d.trigger is Trigger.SCHEDULED
            assert d.attempts == 0
            assert d.next_attempt_at == msg.created_at
            assert await storage.get_delivery(msg.id, d.endpoint_id) == d
        assert await storage.get_message(app.id, msg.id) == msg


async def test_create_message_duplicate_event_id_is_atomic(storage: Storage) -> None:
    """A repeated eventId raises ConflictError and stores neither the message nor deliveries."""
    app, ep = await app_with_endpoint(storage)
    first = make_message(app, event_id="evt-1")
    await storage.create_message(first)
    dup = make_message(app, event_id="evt-1", at=NOW + timedelta(seconds=1))

    with pytest.raises(ConflictError):
        await storage.create_message(dup)

    with pytest.raises(NotFoundError):
        await storage.get_message(app.id, dup.id)
    assert await storage.get_delivery(dup.id, ep.id) is None
    assert (await storage.endpoint_stats(ep.id, None, None))[DeliveryState.PENDING] == 1
    assert await storage.get_message(app.id, "evt-1") == first
    other_app = await storage.create_application(make_app())
    await storage.create_message(make_message(other_app, event_id="evt-1"))


async def test_list_messages_filters_and_order(storage: Storage) -> None:
    """Messages list newest first and filter by event type, exact channel and time window."""
    app = await storage.create_application(make_app())
    at = [NOW + timedelta(minutes=i) for i in range(5)]
    msgs = [
        make_message(app, "user.created", at[0], channels=("eu",)),
        make_message(app, "user.deleted", at[1]),
        make_message(app, "user.created", at[2], channels=("eu-west",)),
        make_message(app, "order.paid", at[3], channels=("us", "eu")),
        make_message(app, "user.created", at[4]),
    ]
    for m in msgs:
        await storage.create_message(m)

    async def ids(flt: MessageFilter, limit: int = 50) -> list[str]:
        page = await storage.list_messages(app.id, flt, PageRequest(limit, descending=True))
        return [m.id for m in page.items]

    newest_first = [m.id for m in reversed(msgs)]
    assert await ids(MessageFilter()) == newest_first
    assert await ids(MessageFilter(), limit=2) == newest_first[:2]
    assert await ids(MessageFilter(event_types=("user.created",))) == [
        msgs[4].id,
        msgs[2].id,
        msgs[0].id,
    ]
    assert await ids(MessageFilter(event_types=("user.deleted", "order.paid"))) == [
        msgs[3].id,
        msgs[1].id,
    ]
    assert await ids(MessageFilter(channel="eu")) == [msgs[3].id, msgs[0].id]
    assert await ids(MessageFilter(after=at[1], before=at[4])) == [msgs[3].id, msgs[2].id]
    assert await ids(MessageFilter(before=at[1])) == [msgs[0].id]
    assert await ids(MessageFilter(after=at[3])) == [msgs[4].id]


async def test_list_messages_descending_pages(storage: Storage) -> None:
    """Paging newest first with an iterator continues with older messages and then ends."""
    app = await storage.create_application(make_app())
    msgs = [make_message(app, at=NOW + timedelta(minutes=i)) for i in range(3)]
    for m in msgs:
        await storage.create_message(m)

    first = await storage.list_messages(app.id, MessageFilter(), PageRequest(2, descending=True))
    rest = await storage.list_messages(
        app.id, MessageFilter(), PageRequest(2, first.iterator, descending=True)
    )

    assert [m.id for m in first.items] == [msgs[2].id, msgs[1].id]
    assert not first.done
    assert [m.id for m in rest.items] == [msgs[0].id]
    assert rest.done


# -- claiming and recording ------------------------------------------------------------------


async def test_claim_due_takes_only_due_pending_deliveries(storage: Storage) -> None:
    """claim_due leases due deliveries once; later ones wait; a second claim gets nothing."""
    app, ep = await app_with_endpoint(storage)
    due = make_message(app, at=NOW)
    later = make_message(app, at=NOW + timedelta(hours=1))
    await storage.create_message(due)
    await storage.create_message(later)

    claimed = await storage.claim_due(NOW, 10, "w1", LEASE)

    assert [(d.msg_id, d.endpoint_id) for d in claimed] == [(due.id, ep.id)]
    (d,) = claimed
    assert d.state is DeliveryState.SENDING
    assert d.leased_by == "w1"
    assert d.lease_until == NOW + LEASE
    assert await storage.get_delivery(due.id, ep.id) == d
    assert await storage.claim_due(NOW, 10, "w2", LEASE) == []
    pending = await storage.get_delivery(later.id, ep.id)
    assert pending is not None and pending.state is DeliveryState.PENDING


async def test_reclaim_expired_requeues_after_lease(storage: Storage) -> None:
    """A lease that runs out makes the delivery pending, and claimable by another worker."""
    app, ep = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    await storage.claim_due(NOW, 10, "w1", LEASE)

    assert await storage.reclaim_expired(NOW + LEASE - timedelta(seconds=1)) == 0
    assert await storage.claim_due(NOW + LEASE, 10, "w2", LEASE) == []
    assert await storage.reclaim_expired(NOW + LEASE) == 1

    back = await storage.get_delivery(msg.id, ep.id)
    assert back is not None
    assert (back.state, back.leased_by, back.lease_until) == (DeliveryState.PENDING, None, None)
    (again,) = await storage.claim_due(NOW + LEASE, 10, "w2", LEASE)
    assert again.id == back.id
    assert again.leased_by == "w2"


async def test_record_attempt_moves_state_and_stores_attempt(storage: Storage) -> None:
    """record_attempt by the leaseholder ends the lease, sets the state and keeps the attempt."""
    app, ep = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    (claimed,) = await storage.claim_due(NOW, 10, "w1", LEASE)
    at = NOW + timedelta(seconds=2)
    attempt = make_attempt(claimed, MessageStatus.SUCCESS, 204, at)

    assert await storage.record_attempt(attempt, finished(claimed, DeliveryState.SUCCESS, at))

    stored = await storage.get_delivery(msg.id, ep.id)
    assert stored is not None
    assert stored.state is DeliveryState.SUCCESS
    assert (stored.attempts, stored.leased_by, stored.lease_until) == (1, None, None)
    assert await storage.get_attempt(msg.id, attempt.id) == attempt
    by_msg = await storage.list_attempts("msg_id", msg.id, AttemptFilter(), PageRequest())
    by_ep = await storage.list_attempts("endpoint_id", ep.id, AttemptFilter(), PageRequest())
    assert by_msg.items == [attempt]
    assert by_ep.items == [attempt]
    assert await storage.claim_due(at, 10, "w1", LEASE) == []


async def test_record_attempt_after_lost_lease_is_refused(storage: Storage) -> None:
    """A worker whose lease expired and was re-taken cannot move the delivery (returns False)."""
    app, ep = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    (stale,) = await storage.claim_due(NOW, 10, "w1", LEASE)
    await storage.reclaim_expired(NOW + LEASE)
    (current,) = await storage.claim_due(NOW + LEASE, 10, "w2", LEASE)
    at = NOW + LEASE + timedelta(seconds=1)
    late = make_attempt(stale, MessageStatus.SUCCESS, 200, at)

    assert not await storage.record_attempt(late, finished(stale, DeliveryState.SUCCESS, at))

    assert await storage.get_delivery(msg.id, ep.id) == current
    assert await storage.record_attempt(None, finished(current, DeliveryState.FAILED, at))
    done = await storage.get_delivery(msg.id, ep.id)
    assert done is not None and done.state is DeliveryState.FAILED


async def test_record_attempt_after_reclaim_without_new_claim_is_refused(storage: Storage) -> None:
    """Once a lease is reclaimed, the old leaseholder cannot record even if nobody re-claimed."""
    app, ep = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    (stale,) = await storage.claim_due(NOW, 10, "w1", LEASE)
    await storage.reclaim_expired(NOW + LEASE)
    at = NOW + LEASE + timedelta(seconds=1)

    assert not await storage.record_attempt(None, finished(stale, DeliveryState.SUCCESS, at))
    back = await storage.get_delivery(msg.id, ep.id)
    assert back is not None and back.state is DeliveryState.PENDING


async def test_concurrent_claimers_take_each_delivery_once(
    database_url: str, storage: Storage
) -> None:
    """Two storages on one database, claiming at once in small batches, never share a delivery."""
    app = await storage.create_application(make_app())
    endpoints = [await storage.create_endpoint(make_endpoint(app)) for _ in range(5)]
    expected: set[str] = set()
    for i in range(10):
        made = await storage.create_message(make_message(app, at=NOW - timedelta(seconds=i)))
        expected.update(d.id for d in made)
    assert len(expected) == 50
    second = await open_storage(database_url)
    try:
        claimed: list[str] = []

        async def drain(store: Storage, worker: str) -> list[Delivery]:
            # an empty claim does not mean the queue is empty: the other claimer may hold
            # the endpoints' locks at that moment, or have just taken what this one read
            taken: list[Delivery] = []
            for _ in range(500):
                if len(claimed) >= len(expected):
                    break
                batch = await store.claim_due(NOW, 2, worker, LEASE)
                taken.extend(batch)
                claimed.extend(d.id for d in batch)
                await asyncio.sleep(0 if batch else 0.002)
            return taken

        one, two = await asyncio.gather(drain(storage, "w1"), drain(second, "w2"))
    finally:
        await second.close()

    ids_one = [d.id for d in one]
    ids_two = [d.id for d in two]
    assert len(ids_one) == len(set(ids_one))
    assert len(ids_two) == len(set(ids_two))
    assert not set(ids_one) & set(ids_two)
    assert set(ids_one) | set(ids_two) == expected
    assert {d.leased_by for d in one} <= {"w1"} and {d.leased_by for d in two} <= {"w2"}
    counts = [(await storage.endpoint_stats(ep.id, None, None)) for ep in endpoints]
    assert all(c[DeliveryState.SENDING] == 10 and c[DeliveryState.PENDING] == 0 for c in counts)


async def test_concurrent_claimers_one_delivery_one_winner(
    database_url: str, storage: Storage
) -> None:
    """When two storages race for a single due delivery, exactly one of them gets it."""
    app, _ = await app_with_endpoint(storage)
    await storage.create_message(make_message(app))
    second = await open_storage(database_url)
    try:
        one, two = await asyncio.gather(
            storage.claim_due(NOW, 5, "w1", LEASE), second.claim_due(NOW, 5, "w2", LEASE)
        )
    finally:
        await second.close()

    assert sorted([len(one), len(two)]) == [0, 1]


# -- resend and recover ----------------------------------------------------------------------


async def test_resend_failed_delivery(storage: Storage) -> None:
    """Resending a failed delivery makes it pending now, as a manual try with no attempts."""
    app, ep = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    await send_and_finish(storage, DeliveryState.FAILED, NOW)
    later = NOW + timedelta(hours=2)

    again = await storage.resend(msg, ep, later)

    assert again.state is DeliveryState.PENDING
    assert again.trigger is Trigger.MANUAL
    assert (again.attempts, again.next_attempt_at) == (0, later)
    assert await storage.get_delivery(msg.id, ep.id) == again
    (claimed,) = await storage.claim_due(later, 10, "w1", LEASE)
    assert claimed.id == again.id and claimed.trigger is Trigger.MANUAL


async def test_resend_to_endpoint_added_later_creates_delivery(storage: Storage) -> None:
    """Resending to an endpoint that had no delivery for the message creates a manual one."""
    app = await storage.create_application(make_app())
    msg = make_message(app)
    assert await storage.create_message(msg) == []
    ep = await storage.create_endpoint(make_endpoint(app))

    made = await storage.resend(msg, ep, NOW)

    assert (made.state, made.trigger, made.endpoint_id) == (
        DeliveryState.PENDING,
        Trigger.MANUAL,
        ep.id,
    )
    assert await storage.get_delivery(msg.id, ep.id) == made


async def test_recover_requeues_failed_in_window_only(storage: Storage) -> None:
    """recover(since) re-queues the endpoint's failed deliveries made since then, no others."""
    app, ep = await app_with_endpoint(storage)
    old = make_message(app, at=NOW - timedelta(days=2))
    recent = make_message(app, at=NOW - timedelta(hours=1))
    ok = make_message(app, at=NOW - timedelta(minutes=30))
    for msg, state in (
        (old, DeliveryState.FAILED),
        (recent, DeliveryState.FAILED),
        (ok, DeliveryState.SUCCESS),
    ):
        await storage.create_message(msg)
        await send_and_finish(storage, state, msg.created_at)

    assert await storage.recover(ep.id, NOW - timedelta(days=1), None, NOW) == 1

    states = {
        m.id: (d.state, d.trigger)
        for m in (old, recent, ok)
        if (d := await storage.get_delivery(m.id, ep.id)) is not None
    }
    assert states == {
        old.id: (DeliveryState.FAILED, Trigger.SCHEDULED),
        recent.id: (DeliveryState.PENDING, Trigger.MANUAL),
        ok.id: (DeliveryState.SUCCESS, Trigger.SCHEDULED),
    }
    assert await storage.recover(ep.id, NOW - timedelta(days=3), NOW - timedelta(days=1), NOW) == 1


# -- stats -----------------------------------------------------------------------------------


async def test_endpoint_stats_counts_per_state(storage: Storage) -> None:
    """endpoint_stats counts the endpoint's deliveries in each state, zero for unused states."""
    app, ep = await app_with_endpoint(storage)
    _, other = await app_with_endpoint(storage)
    for i in range(4):
        await storage.create_message(make_message(app, at=NOW + timedelta(seconds=i)))
    await send_and_finish(storage, DeliveryState.SUCCESS, NOW)
    await send_and_finish(storage, DeliveryState.FAILED, NOW + timedelta(seconds=1))
    await storage.claim_due(NOW + timedelta(seconds=2), 1, "w1", LEASE)

    assert await storage.endpoint_stats(ep.id, None, None) == {
        DeliveryState.PENDING: 1,
        DeliveryState.SENDING: 1,
        DeliveryState.SUCCESS: 1,
        DeliveryState.FAILED: 1,
        DeliveryState.CANCELED: 0,
    }
    window = await storage.endpoint_stats(
        ep.id, NOW + timedelta(seconds=1), NOW + timedelta(seconds=3)
    )
    assert sum(window.values()) == 2
    assert window[DeliveryState.FAILED] == window[DeliveryState.SENDING] == 1
    assert sum((await storage.endpoint_stats(other.id, None, None)).values()) == 0


# -- idempotency -----------------------------------------------------------------------------


async def test_idempotency_key_lifecycle(storage: Storage) -> None:
    """The first begin runs, a second waits while running, and after finish gets the response."""
    assert await storage.idempotency_begin("key-1", NOW) is True
    assert await storage.idempotency_begin("key-1", NOW + timedelta(seconds=1)) is False

    response = StoredResponse(status_code=201, body='{"id":"app_1"}')
    await storage.idempotency_finish("key-1", response)

    assert await storage.idempotency_begin("key-1", NOW + timedelta(seconds=2)) == response
    assert await storage.idempotency_begin("key-2", NOW) is True


async def test_idempotency_concurrent_begin_has_one_winner(storage: Storage) -> None:
    """Of several concurrent begins with one key, exactly one may run the request."""
    results = await asyncio.gather(*(storage.idempotency_begin("key", NOW) for _ in range(4)))

    assert sorted(map(repr, results)) == ["False", "False", "False", "True"]


async def test_idempotency_finish_none_releases_key(storage: Storage) -> None:
    """Finishing with None releases the key so that a retry runs again."""
    assert await storage.idempotency_begin("key", NOW) is True
    await storage.idempotency_finish("key", None)

    assert await storage.idempotency_begin("key", NOW + timedelta(seconds=1)) is True


async def test_idempotency_stale_running_key_is_taken_over(storage: Storage) -> None:
    """A key left running for over a minute (its process died) may be run again, once."""
    assert await storage.idempotency_begin("key", NOW) is True
    later = NOW + timedelta(minutes=2)

    assert await storage.idempotency_begin("key", later) is True
    assert await storage.idempotency_begin("key", later + timedelta(seconds=1)) is False


# -- tokens ----------------------------------------------------------------------------------


async def test_token_find_expire_revoke(storage: Storage) -> None:
    """A token is found until it expires or is revoked; unknown tokens are never found."""
    made = await storage.create_token("secret-a", ORG, None, NOW, None)
    expiring = await storage.create_token("secret-b", ORG, "app_1", NOW, NOW + timedelta(hours=1))

    assert await storage.find_token("secret-a", NOW) == made
    assert await storage.find_token("secret-b", NOW) == expiring
    assert await storage.find_token("secret-b", NOW + timedelta(hours=1)) is None
    assert await storage.find_token("nope", NOW) is None

    assert await storage.revoke_token(made.id) is True
    assert await storage.find_token("secret-a", NOW) is None


async def test_resend_during_a_try_queues_the_delivery_again_after_it(storage: Storage) -> None:
    """A resend asked for while the delivery is in flight is not lost: recording that try
    leaves the delivery pending again, due at once, as a manual try with a fresh schedule."""
    app, endpoint = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    [claimed] = await storage.claim_due(NOW + timedelta(seconds=1), 10, "w1", LEASE)
    resent = await storage.resend(msg, endpoint, NOW + timedelta(seconds=2))
    assert resent.state is DeliveryState.SENDING  # the try in flight goes on
    done_at = NOW + timedelta(seconds=3)
    succeeded = replace(claimed, state=DeliveryState.SUCCESS, attempts=1, updated_at=done_at)
    assert await storage.record_attempt(None, succeeded)
    after = await storage.get_delivery(msg.id, endpoint.id)
    assert after is not None
    assert (after.state, after.attempts, after.trigger) == (
        DeliveryState.PENDING, 0, Trigger.MANUAL,
    )  # fmt: skip
    assert after.next_attempt_at == done_at
    assert [d.id for d in await storage.claim_due(done_at, 10, "w2", LEASE)] == [after.id]


async def test_resend_before_the_first_try_adds_a_try(storage: Storage) -> None:
    """A resend of a delivery not yet tried does not merge with that first try: after the
    first try is recorded, the delivery is queued again as a manual try."""
    app, endpoint = await app_with_endpoint(storage)
    msg = make_message(app)
    await storage.create_message(msg)
    await storage.resend(msg, endpoint, NOW)
    [claimed] = await storage.claim_due(NOW + timedelta(seconds=1), 10, "w1", LEASE)
    assert claimed.trigger is Trigger.SCHEDULED  # the first try is still the scheduled one
    done_at = NOW + timedelta(seconds=2)
    assert await storage.record_attempt(
        None, replace(claimed, state=DeliveryState.SUCCESS, attempts=1, updated_at=done_at)
    )
    again = await storage.get_delivery(msg.id, endpoint.id)
    assert again is not None
    assert (again.state, again.trigger, again.next_attempt_at) == (
        DeliveryState.PENDING, Trigger.MANUAL, done_at,
    )  # fmt: skip


async def test_event_type_pages_walk_names_that_start_with_a_dash(storage: Storage) -> None:
    """Event type names may begin with "-", which must not read as "walk backwards"."""
    for name in ("-a", "-b", "c", "d"):
        await storage.create_event_type(
            EventType(ORG, name, "", False, False, None, None, NOW, NOW)
        )
    seen: list[str] = []
    iterator: str | None = None
    for _ in range(10):
        page = await storage.list_event_types(ORG, PageRequest(limit=1, iterator=iterator), False)
        seen += [et.name for et in page.items]
        if page.done:
            break
        iterator = page.iterator
    assert seen == ["-a", "-b", "c", "d"]
