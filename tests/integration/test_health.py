"""Endpoint health and operational webhooks end to end: real SQLite storage, a real worker and
a scripted receiver on 127.0.0.1 that serves both the customer's endpoint (``/hook``) and the
operator's (``/ops``, the endpoint of the ``ops`` application of the default organisation).

Also: per-event-type retry schedules, the endpoint.* events the API sends, and replay-missing
over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from homing import signing, verify
from homing.config import Settings
from homing.core.models import (
    DEFAULT_ORG,
    Application,
    DeliveryState,
    Endpoint,
    EndpointSecret,
    Message,
    Trigger,
)
from homing.delivery.worker import Worker
from homing.ids import new_id
from homing.storage import Storage, open_storage
from homing.storage.base import AttemptFilter, MessageFilter, PageRequest

from .conftest import sqlite_url
from .receiver import Receiver, status

OPS_UID = "ops"
SHOP_ORG = "org_shop"
CUSTOMER_SECRET = signing.generate_secret()
OPS_SECRET = signing.generate_secret()
ApiFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Two immediate retries (three tries), no jitter, a short deadline, loopback allowed and
    operational webhooks going to the ``ops`` application."""
    return Settings(
        database_url=sqlite_url(tmp_path),
        request_timeout=2.0,
        retry_schedule=(0, 0),
        retry_jitter=0.0,
        allow_networks="127.0.0.0/8",
        operational_app=OPS_UID,
    )


@pytest.fixture
async def storage(settings: Settings) -> AsyncIterator[Storage]:
    """A migrated SQLite storage in a temporary file."""
    opened = await open_storage(settings.database_url)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


def application(org_id: str, uid: str) -> Application:
    now = datetime.now(UTC)
    return Application(new_id("app"), org_id, uid.title(), uid, None, {}, now, now)


def endpoint(app: Application, url: str, secret: str, **changes: Any) -> Endpoint:
    now = datetime.now(UTC)
    made = Endpoint(
        id=new_id("ep"), org_id=app.org_id, app_id=app.id, url=url, uid=None, description="",
        rate_limit=None, disabled=False, event_types=None, channels=None,
        secrets=(EndpointSecret(secret),), headers={}, metadata={}, created_at=now, updated_at=now,
    )  # fmt: skip
    return replace(made, **changes)


@pytest.fixture
async def ops(storage: Storage, receiver: Receiver) -> Endpoint:
    """The operator's endpoint: ``/ops`` of the receiver, in the ``ops`` application."""
    app = await storage.create_application(application(DEFAULT_ORG, OPS_UID))
    return await storage.create_endpoint(endpoint(app, receiver.url("/ops"), OPS_SECRET))


@pytest.fixture
async def shop(storage: Storage) -> Application:
    """A customer's application, in another organisation."""
    return await storage.create_application(application(SHOP_ORG, "shop"))


@pytest.fixture
async def hook(storage: Storage, shop: Application, receiver: Receiver) -> Endpoint:
    """The customer's endpoint: ``/hook`` of the receiver."""
    return await storage.create_endpoint(
        endpoint(shop, receiver.url("/hook"), CUSTOMER_SECRET, uid="main-hook")
    )


async def add_message(storage: Storage, app: Application, event_id: str | None = None) -> Message:
    message = Message(
        new_id("msg"), app.org_id, app.id, "order.paid", event_id, '{"n":1}', None, None,
        datetime.now(UTC),
    )  # fmt: skip
    await storage.create_message(message)
    return message


async def deliver_all(settings: Settings, storage: Storage) -> int:
    """Run fresh workers until one finds nothing due: the customer's deliveries first, then the
    operational messages they caused (and any those caused). Returns the deliveries made."""
    total = 0
    for _ in range(5):
        worker = Worker(settings, storage, rng=random.Random(0), poll_interval=30.0)
        done = await worker.run_until_idle()
        if done == 0:
            return total
        total += done
    raise AssertionError("the worker never went idle")


def reports(receiver: Receiver) -> list[dict[str, Any]]:
    """The operational webhooks ``/ops`` received, in order, each checked to be signed with
    the ops endpoint's key."""
    found = []
    for request in receiver.at("/ops"):
        verify.Webhook(OPS_SECRET).verify(request.body, request.headers)
        found.append(json.loads(request.body))
    return found


def of_type(found: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [r for r in found if r["type"] == event_type]


async def last_attempt(storage: Storage, message: Message) -> dict[str, Any]:
    """The message's newest attempt as operational webhooks show it."""
    page = await storage.list_attempts("msg_id", message.id, AttemptFilter(), PageRequest())
    newest = max(page.items, key=lambda a: a.created_at)  # ids tie within a millisecond
    return {
        "id": newest.id,
        "timestamp": newest.created_at,
        "responseStatusCode": newest.response_status,
    }


def shown_attempt(data: dict[str, Any]) -> dict[str, Any]:
    """``data["lastAttempt"]`` with its timestamp read back into a datetime."""
    shown = dict(data["lastAttempt"])
    shown["timestamp"] = datetime.fromisoformat(shown["timestamp"])
    return shown


async def tries(storage: Storage, message: Message) -> int:
    page = await storage.list_attempts("msg_id", message.id, AttemptFilter(), PageRequest())
    return len(page.items)


# -- message.attempt.* -----------------------------------------------------------------------


async def test_exhausted_message_is_reported_to_the_ops_endpoint(
    settings: Settings, storage: Storage, receiver: Receiver, ops: Endpoint, shop: Application,
    hook: Endpoint,
) -> None:  # fmt: skip
    """When a message runs out of tries, the ops endpoint gets message.attempt.exhausted with
    the application, message, endpoint and last attempt."""
    receiver.reply("/hook", status(500))
    message = await add_message(storage, shop, event_id="evt-1")

    assert await deliver_all(settings, storage) == 3 + 1

    [report] = reports(receiver)
    assert set(report) == {"type", "timestamp", "data"}
    assert report["type"] == "message.attempt.exhausted"
    datetime.fromisoformat(report["timestamp"])
    data = report["data"]
    assert shown_attempt(data) == await last_attempt(storage, message)
    assert data["lastAttempt"]["responseStatusCode"] == 500
    assert {k: v for k, v in data.items() if k != "lastAttempt"} == {
        "appId": shop.id,
        "appUid": "shop",
        "msgId": message.id,
        "msgEventId": "evt-1",
        "endpointId": hook.id,
    }
    [request] = receiver.at("/ops")
    assert request.headers["webhook-id"].startswith("msg_")
    customer = await storage.get_endpoint(shop.id, hook.id)
    assert customer.failing_since is not None
    assert not customer.disabled  # disable_after (5 days) has not passed


async def test_third_failure_reports_failing_then_exhausted(
    settings: Settings, storage: Storage, receiver: Receiver, ops: Endpoint, shop: Application,
    hook: Endpoint,
) -> None:  # fmt: skip
    """With four tries, the third failure sends message.attempt.failing and the fourth
    message.attempt.exhausted."""
    receiver.reply("/hook", status(503))
    message = await add_message(storage, shop)

    await deliver_all(replace(settings, retry_schedule=(0, 0, 0)), storage)

    assert len(receiver.at("/hook")) == 4
    found = reports(receiver)
    assert [r["type"] for r in found] == ["message.attempt.failing", "message.attempt.exhausted"]
    failing = found[0]["data"]
    assert (failing["msgId"], failing["endpointId"]) == (message.id, hook.id)
    assert failing["lastAttempt"]["responseStatusCode"] == 503


async def test_success_after_three_failures_reports_recovered(
    settings: Settings, storage: Storage, receiver: Receiver, ops: Endpoint, shop: Application,
    hook: Endpoint,
) -> None:  # fmt: skip
    """A message that succeeds on its fourth try sends failing, then recovered (not
    exhausted)."""
    receiver.reply("/hook", status(500), status(500), status(500), status(200))
    message = await add_message(storage, shop)

    await deliver_all(replace(settings, retry_schedule=(0, 0, 0)), storage)

    found = reports(receiver)
    assert [r["type"] for r in found] == ["message.attempt.failing", "message.attempt.recovered"]
    recovered = found[1]["data"]
    assert recovered["msgId"] == message.id
    assert shown_attempt(recovered) == await last_attempt(storage, message)
    assert recovered["lastAttempt"]["responseStatusCode"] == 200


async def test_early_recovery_and_plain_success_report_nothing(
    settings: Settings, storage: Storage, receiver: Receiver, ops: Endpoint, shop: Application,
    hook: Endpoint,
) -> None:  # fmt: skip
    """A success on the first try, or after fewer than three failures, sends no operational
    webhook."""
    receiver.reply("/hook", status(200), status(500), status(200))
    await add_message(storage, shop)
    await deliver_all(settings, storage)
    await add_message(storage, shop)
    await deliver_all(settings, storage)

    assert len(receiver.at("/hook")) == 3
    assert reports(receiver) == []


# -- endpoint health -------------------------------------------------------------------------


async def test_gone_disables_the_endpoint_and_reports_it(
    settings: Settings, storage: Storage, receiver: Receiver, ops: Endpoint, shop: Application,
    hook: Endpoint,
) -> None:  # fmt: skip
    """A 410 disables the endpoint at once and sends endpoint.disabled (trigger automatic)
    as well as message.attempt.exhausted."""
    receiver.reply("/hook", status(410))
    await add_message(storage, shop)

    await deliver_all(settings, storage)

    assert len(receiver.at("/hook")) == 1
    assert (await storage.get_endpoint(shop.id, hook.id)).disabled
    found = reports(receiver)
    assert sorted(r["type"] for r in found) == [
        "endpoint.disabled",
        "message.attempt.exhausted",
    ]
    [disabled] = of_type(found, "endpoint.disabled")
    fail_since = disabled["data"].pop("failSince")
    datetime.fromisoformat(fail_since)
    assert disabled["data"] == {
        "appId": shop.id,
        "appUid": "shop",
        "endpointId": hook.id,
        "endpointUid": "main-hook",
        "trigger": "automatic",
    }


async def test_exhausted_endpoint_is_disabled_when_disable_after_is_zero(
    settings: Settings, storage: Storage, receiver: Receiver, ops: Endpoint, shop: Application,
    hook: Endpoint,
) -> None:  # fmt: skip
    """With disable_after=0 the first message that runs out of tries disables its endpoint,
    which is reported once."""
    receiver.reply("/hook", status(500))
    message = await add_message(storage, shop)

    await deliver_all(replace(settings, disable_after=0), storage)

    customer = await storage.get_endpoint(shop.id, hook.id)
    assert customer.disabled
    assert customer.failing_since is not None
    found = reports(receiver)
    [disabled] = of_type(found, "endpoint.disabled")
    assert disabled["data"]["trigger"] == "automatic"
    assert disabled["data"]["endpointId"] == hook.id
    assert len(of_type(found, "message.attempt.exhausted")) == 1
    assert await tries(storage, message) == 3
    # a disabled endpoint gets no new deliveries
    later = await add_message(storage, shop)
    assert await storage.get_delivery(later.id, hook.id) is None


async def test_success_clears_failing_since(
    settings: Settings, storage: Storage, receiver: Receiver, shop: Application, hook: Endpoint
) -> None:
    """An exhausted message marks the endpoint failing; its next success clears the mark."""
    receiver.reply("/hook", status(500), status(500), status(500), status(200))
    await add_message(storage, shop)
    await deliver_all(settings, storage)
    assert (await storage.get_endpoint(shop.id, hook.id)).failing_since is not None

    healthy = await add_message(storage, shop)
    await deliver_all(settings, storage)

    assert await tries(storage, healthy) == 1
    assert (await storage.get_endpoint(shop.id, hook.id)).failing_since is None


async def test_ops_application_never_reports_on_itself(
    settings: Settings, storage: Storage, receiver: Receiver, ops: Endpoint, shop: Application,
    hook: Endpoint,
) -> None:  # fmt: skip
    """When the ops endpoint itself fails, gives up and is disabled, no operational message is
    made about it (no feedback loop)."""
    receiver.reply("/hook", status(500))
    receiver.reply("/ops", status(410))
    await add_message(storage, shop)

    await deliver_all(settings, storage)

    ops_app = await storage.get_application(DEFAULT_ORG, OPS_UID)
    assert (await storage.get_endpoint(ops_app.id, ops.id)).disabled
    page = await storage.list_messages(ops_app.id, MessageFilter(), PageRequest())
    assert [m.event_type for m in page.items] == ["message.attempt.exhausted"]


# -- per-event-type retry schedules ----------------------------------------------------------


@contextlib.asynccontextmanager
async def api_and_worker_settings(
    api_factory: ApiFactory, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """An API client on SQLite (with the ``ops`` application as operational target) and
    worker settings on the same database."""
    url = sqlite_url(tmp_path)
    async with api_factory(url, operational_app=OPS_UID, allow_networks="127.0.0.0/8") as api:
        worker_settings = replace(
            api.settings,  # type: ignore[attr-defined]
            request_timeout=2.0,
            retry_schedule=(0, 0),
            retry_jitter=0.0,
        )
        yield api, worker_settings


async def test_event_type_retry_schedule_overrides_the_global_one(
    api_factory: ApiFactory, tmp_path: Path, receiver: Receiver
) -> None:
    """A message of an event type with retrySchedule [0] gets 2 tries; one of a type without
    a schedule gets the global (0, 0): 3 tries."""
    receiver.reply("/hook", status(500))
    async with api_and_worker_settings(api_factory, tmp_path) as (api, worker_settings):
        created = await api.post(
            "/api/v1/event-type",
            json={"name": "quick.fail", "description": "", "retrySchedule": [0]},
        )
        assert created.status_code == 201, created.text
        assert created.json()["retrySchedule"] == [0]
        await api.post("/api/v1/event-type", json={"name": "plain", "description": ""})
        assert (await api.post("/api/v1/app", json={"name": "Shop", "uid": "shop"})).is_success
        ep = await api.post("/api/v1/app/shop/endpoint", json={"url": receiver.url("/hook")})
        assert ep.status_code == 201, ep.text
        quick = await api.post(
            "/api/v1/app/shop/msg", json={"eventType": "quick.fail", "payload": {"a": 1}}
        )
        plain = await api.post(
            "/api/v1/app/shop/msg", json={"eventType": "plain", "payload": {"a": 2}}
        )

        storage: Storage = api.storage  # type: ignore[attr-defined]
        await deliver_all(worker_settings, storage)

        shop = await storage.get_application(DEFAULT_ORG, "shop")
        counts = {
            name: await tries(storage, await storage.get_message(shop.id, answer.json()["id"]))
            for name, answer in (("quick", quick), ("plain", plain))
        }
        assert counts == {"quick": 2, "plain": 3}
        assert len(receiver.at("/hook")) == 5


async def test_empty_event_type_retry_schedule_means_one_try(
    api_factory: ApiFactory, tmp_path: Path, receiver: Receiver
) -> None:
    """An event type with retrySchedule [] gets no retries: one try, then failed."""
    receiver.reply("/hook", status(500))
    async with api_and_worker_settings(api_factory, tmp_path) as (api, worker_settings):
        created = await api.post(
            "/api/v1/event-type", json={"name": "once", "description": "", "retrySchedule": []}
        )
        assert created.status_code == 201, created.text
        assert created.json()["retrySchedule"] == []
        await api.post("/api/v1/app", json={"name": "Shop", "uid": "shop"})
        await api.post("/api/v1/app/shop/endpoint", json={"url": receiver.url("/hook")})
        await api.post("/api/v1/app/shop/msg", json={"eventType": "once", "payload": {}})

        await deliver_all(worker_settings, api.storage)  # type: ignore[attr-defined]

        assert len(receiver.at("/hook")) == 1, "retrySchedule [] fell back to the global one"


# -- endpoint.* from the API -----------------------------------------------------------------


async def ops_events(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The payloads of the messages in the ``ops`` application, oldest first."""
    listed = await api.get(f"/api/v1/app/{OPS_UID}/msg", params={"limit": 250})
    assert listed.status_code == 200, listed.text
    return sorted(
        (m["payload"] for m in listed.json()["data"]),
        key=lambda p: datetime.fromisoformat(p["timestamp"]),
    )


async def test_endpoint_changes_through_the_api_are_reported(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    """Creating (POST or PUT), updating (PUT or PATCH) and deleting an endpoint each put an
    endpoint.* message in the ops application."""
    async with api_and_worker_settings(api_factory, tmp_path) as (api, _):
        assert (await api.post("/api/v1/app", json={"name": "Ops", "uid": OPS_UID})).is_success
        shop = (await api.post("/api/v1/app", json={"name": "Shop", "uid": "shop"})).json()
        base = "/api/v1/app/shop/endpoint"
        url = "https://hooks.example.com/in"

        made = (await api.post(base, json={"url": url, "uid": "first"})).json()
        assert (await api.put(f"{base}/first", json={"url": url + "2", "uid": "first"})).is_success
        assert (await api.patch(f"{base}/first", json={"description": "x"})).is_success
        upserted = await api.put(f"{base}/second", json={"url": url})
        assert upserted.status_code == 201, upserted.text
        assert (await api.delete(f"{base}/first")).status_code == 204

        events = await ops_events(api)

    assert [e["type"] for e in events] == [
        "endpoint.created",
        "endpoint.updated",
        "endpoint.updated",
        "endpoint.created",
        "endpoint.deleted",
    ]
    for event in events:
        datetime.fromisoformat(event["timestamp"])
        assert event["data"]["appId"] == shop["id"]
        assert event["data"]["appUid"] == "shop"
    first = {
        "appId": shop["id"],
        "appUid": "shop",
        "endpointId": made["id"],
        "endpointUid": "first",
    }
    assert events[0]["data"] == first
    assert events[-1]["data"] == first
    assert events[3]["data"]["endpointId"] == upserted.json()["id"]
    assert events[3]["data"]["endpointUid"] == "second"


async def test_endpoint_changes_in_the_ops_application_are_not_reported(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    """Endpoints of the ops application itself come and go without operational messages."""
    async with api_and_worker_settings(api_factory, tmp_path) as (api, _):
        await api.post("/api/v1/app", json={"name": "Ops", "uid": OPS_UID})
        base = f"/api/v1/app/{OPS_UID}/endpoint"
        made = await api.post(base, json={"url": "https://ops.example.com/in", "uid": "pager"})
        assert made.status_code == 201, made.text
        assert (await api.patch(f"{base}/pager", json={"description": "x"})).is_success
        assert (await api.delete(f"{base}/pager")).status_code == 204

        assert await ops_events(api) == []


async def test_without_an_operational_app_nothing_is_reported(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    """With operational_app unset, endpoint changes make no message anywhere."""
    async with api_factory(sqlite_url(tmp_path)) as api:
        await api.post("/api/v1/app", json={"name": "Ops", "uid": OPS_UID})
        await api.post("/api/v1/app", json={"name": "Shop", "uid": "shop"})
        made = await api.post("/api/v1/app/shop/endpoint", json={"url": "https://h.example/in"})
        assert made.status_code == 201, made.text

        assert await ops_events(api) == []


# -- replay-missing over HTTP ----------------------------------------------------------------


async def test_replay_missing_sends_what_a_new_endpoint_missed(
    api_factory: ApiFactory, tmp_path: Path, receiver: Receiver
) -> None:
    """POST replay-missing answers 202 with the task, and the endpoint then receives the
    messages sent before it existed."""
    async with api_and_worker_settings(api_factory, tmp_path) as (api, worker_settings):
        storage: Storage = api.storage  # type: ignore[attr-defined]
        await api.post("/api/v1/app", json={"name": "Shop", "uid": "shop"})
        since = datetime.now(UTC) - timedelta(minutes=1)
        sent = [
            (
                await api.post(
                    "/api/v1/app/shop/msg", json={"eventType": "a.b", "payload": {"n": n}}
                )
            ).json()["id"]
            for n in range(3)
        ]
        made = await api.post("/api/v1/app/shop/endpoint", json={"url": receiver.url("/late")})
        ep_id = made.json()["id"]
        assert all([await storage.get_delivery(m, ep_id) is None for m in sent])

        answer = await api.post(
            f"/api/v1/app/shop/endpoint/{ep_id}/replay-missing",
            json={"since": since.isoformat()},
        )

        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert set(body) == {"id", "status", "task", "updatedAt"}
        assert body["task"] == "endpoint.replay"
        assert body["status"] in ("running", "finished")
        datetime.fromisoformat(body["updatedAt"])
        for msg_id in sent:
            delivery = await storage.get_delivery(msg_id, ep_id)
            assert delivery is not None and delivery.trigger is Trigger.MANUAL

        assert await deliver_all(worker_settings, storage) == 3

        received = sorted(r.headers["webhook-id"] for r in receiver.at("/late"))
        assert received == sorted(sent)
        for msg_id in sent:
            delivery = await storage.get_delivery(msg_id, ep_id)
            assert delivery is not None and delivery.state is DeliveryState.SUCCESS
        again = await api.post(
            f"/api/v1/app/shop/endpoint/{ep_id}/replay-missing",
            json={"since": since.isoformat()},
        )
        assert again.status_code == 202
        assert await deliver_all(worker_settings, storage) == 0
