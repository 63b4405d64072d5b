"""The official, unmodified ``svix`` Python SDK against a real ``homing serve`` process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from svix.api import (
    ApplicationIn,
    ApplicationPatch,
    EndpointHeadersIn,
    EndpointHeadersPatchIn,
    EndpointIn,
    EndpointPatch,
    EndpointSecretRotateIn,
    EndpointUpsertIn,
    EventTypeIn,
    EventTypeListOptions,
    EventTypeUpsertIn,
    MessageAttemptListByEndpointOptions,
    MessageAttemptOut,
    MessageCreateOptions,
    MessageGetOptions,
    MessageIn,
    MessageListOptions,
    MessageStatus,
    Svix,
    SvixAsync,
    SvixOptions,
)
from svix.exceptions import HttpError, HTTPValidationError
from svix.webhooks import Webhook

from .conftest import (
    SERVE_COMMAND,
    WORKER_EXISTS,
    HomingProcess,
    Receiver,
    logged_errors,
    start_homing,
    stop_homing,
    unique,
)

T = TypeVar("T")

PAYMENT_SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "integer"}, "currency": {"type": "string"}},
    "required": ["amount"],
}


def options(server: HomingProcess) -> SvixOptions:
    # No SDK retries: a 5xx must surface at once, not be masked by a retried success.
    return SvixOptions(server_url=server.base_url, retry_schedule=[], timeout=10.0)


@pytest.fixture
def sdk(server: HomingProcess) -> Iterator[Svix]:
    """The synchronous SDK client with org A's token."""
    client = Svix(server.token, options(server))
    yield client
    client._httpx_client.close()  # the SDK has no close(); do not leak sockets


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """Call ``probe`` until it returns something other than None, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(0.1)


def assert_http_error(call: Callable[[], object], status: int) -> HttpError:
    """``call`` raises the SDK's ``HttpError`` with ``status``; returns it."""
    with pytest.raises(HttpError) as info:
        call()
    assert info.value.status_code == status, (info.value.code, info.value.detail)
    return info.value


def test_application_lifecycle(sdk: Svix) -> None:
    """Applications are created, listed, fetched by id and uid, upserted, patched and deleted."""
    uid = unique("app")
    app = sdk.application.create(ApplicationIn(name="Acme", uid=uid, metadata={"tier": "gold"}))
    assert app.id.startswith("app_")
    assert (app.uid, app.name, app.metadata) == (uid, "Acme", {"tier": "gold"})

    assert sdk.application.get(app.id).id == app.id
    assert sdk.application.get(uid).id == app.id
    listed = sdk.application.list()
    assert app.id in [a.id for a in listed.data]

    renamed = sdk.application.upsert(app.id, ApplicationIn(name="Acme Corp", uid=uid))
    assert (renamed.id, renamed.name) == (app.id, "Acme Corp")
    patched = sdk.application.patch(app.id, ApplicationPatch(metadata={"tier": "silver"}))
    assert (patched.name, patched.metadata) == ("Acme Corp", {"tier": "silver"})

    sdk.application.delete(app.id)
    assert_http_error(lambda: sdk.application.get(app.id), 404)
    assert_http_error(lambda: sdk.application.get(uid), 404)


def test_application_get_or_create_is_idempotent(sdk: Svix) -> None:
    """``get_or_create`` twice with one uid returns the same application both times."""
    uid = unique("goc")
    first = sdk.application.get_or_create(ApplicationIn(name="Once", uid=uid))
    second = sdk.application.get_or_create(ApplicationIn(name="Twice", uid=uid))
    assert second.id == first.id
    assert second.name == "Once"
    assert_http_error(lambda: sdk.application.create(ApplicationIn(name="Dup", uid=uid)), 409)


def test_application_upsert_creates_missing(sdk: Svix) -> None:
    """``upsert`` on an unknown uid creates the application with that uid."""
    uid = unique("ups")
    made = sdk.application.upsert(uid, ApplicationIn(name="Made by PUT"))
    assert made.uid == uid
    assert sdk.application.get(uid).id == made.id


def test_endpoint_lifecycle(sdk: Svix) -> None:
    """Endpoints are created, listed, fetched by id and uid, upserted, patched and deleted."""
    app = sdk.application.create(ApplicationIn(name="Ep owner"))
    uid = unique("ep")
    ep = sdk.endpoint.create(
        app.id,
        EndpointIn(
            url="https://example.com/hook",
            uid=uid,
            description="first",
            event_types=["invoice.paid"],
            channels=["eu"],
            metadata={"k": "v"},
        ),
    )
    assert ep.id.startswith("ep_")
    assert (ep.url, ep.uid, ep.description) == ("https://example.com/hook", uid, "first")
    assert (ep.event_types, ep.channels, ep.disabled) == (["invoice.paid"], ["eu"], False)

    assert [e.id for e in sdk.endpoint.list(app.id).data] == [ep.id]
    assert sdk.endpoint.get(app.id, ep.id).id == ep.id
    assert sdk.endpoint.get(app.id, uid).id == ep.id

    updated = sdk.endpoint.upsert(
        app.id, ep.id, EndpointUpsertIn(url="https://example.com/v2", uid=uid, description="2nd")
    )
    assert (updated.id, updated.url, updated.description) == (
        ep.id,
        "https://example.com/v2",
        "2nd",
    )
    assert updated.event_types is None  # PUT replaces: omitted filters are cleared

    patched = sdk.endpoint.patch(app.id, ep.id, EndpointPatch(disabled=True, channels=["us"]))
    assert (patched.url, patched.disabled, patched.channels) == (
        "https://example.com/v2",
        True,
        ["us"],
    )

    sdk.endpoint.delete(app.id, ep.id)
    assert_http_error(lambda: sdk.endpoint.get(app.id, ep.id), 404)
    assert sdk.endpoint.list(app.id).data == []


def test_endpoint_secret_rotation(sdk: Svix) -> None:
    """``rotate_secret`` returns a new key, which ``get_secret`` returns from then on."""
    app = sdk.application.create(ApplicationIn(name="Secrets"))
    ep = sdk.endpoint.create(app.id, EndpointIn(url="https://example.com/s"))
    old = sdk.endpoint.get_secret(app.id, ep.id).key
    assert old.startswith("whsec_")

    rotated = sdk.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn())
    assert rotated.key.startswith("whsec_") and rotated.key != old
    assert sdk.endpoint.get_secret(app.id, ep.id).key == rotated.key

    chosen = "whsec_" + "A" * 32
    again = sdk.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn(key=chosen))
    assert again.key == chosen
    assert sdk.endpoint.get_secret(app.id, ep.id).key == chosen


def test_endpoint_headers(sdk: Svix) -> None:
    """Custom headers are set, merged, deleted (``deleteHeaders``) and read with secrets hidden."""
    app = sdk.application.create(ApplicationIn(name="Headers"))
    ep = sdk.endpoint.create(app.id, EndpointIn(url="https://example.com/h"))
    assert sdk.endpoint.get_headers(app.id, ep.id).headers == {}

    sdk.endpoint.set_headers(
        app.id, ep.id, EndpointHeadersIn(headers={"X-Team": "blue", "X-Api-Key": "k3y"})
    )
    shown = sdk.endpoint.get_headers(app.id, ep.id)
    assert shown.headers == {"X-Team": "blue"}
    assert shown.sensitive == ["X-Api-Key"]

    sdk.endpoint.patch_headers(app.id, ep.id, EndpointHeadersPatchIn(headers={"X-Region": "eu"}))
    shown = sdk.endpoint.get_headers(app.id, ep.id)
    assert shown.headers == {"X-Team": "blue", "X-Region": "eu"}

    # svix SDK v2 removes headers with ``deleteHeaders`` (the OSS server used null values)
    sdk.endpoint.patch_headers(
        app.id, ep.id, EndpointHeadersPatchIn(headers={}, delete_headers=["X-Team"])
    )
    shown = sdk.endpoint.get_headers(app.id, ep.id)
    assert shown.headers == {"X-Region": "eu"}
    assert shown.sensitive == ["X-Api-Key"]


def test_endpoint_stats(sdk: Svix) -> None:
    """``get_stats`` counts the endpoint's deliveries by state."""
    app = sdk.application.create(ApplicationIn(name="Stats"))
    ep = sdk.endpoint.create(app.id, EndpointIn(url="https://example.com/st"))
    stats = sdk.endpoint.get_stats(app.id, ep.id)
    assert (stats.success, stats.pending, stats.sending, stats.fail, stats.canceled) == (0,) * 5


def test_event_type_lifecycle(sdk: Svix) -> None:
    """Event types carry a JSON schema; deleting archives them (hidden unless include_archived)."""
    name = unique("payment.made").replace("-", ".")
    made = sdk.event_type.create(
        EventTypeIn(name=name, description="A payment", schemas={"1": PAYMENT_SCHEMA})
    )
    assert (made.name, made.description, made.archived) == (name, "A payment", False)
    assert made.schemas == {"1": PAYMENT_SCHEMA}

    listed = sdk.event_type.list(EventTypeListOptions(with_content=True, limit=250))
    assert {e.name: e.schemas for e in listed.data}[name] == {"1": PAYMENT_SCHEMA}
    assert sdk.event_type.get(name).schemas == {"1": PAYMENT_SCHEMA}

    changed = sdk.event_type.upsert(
        name, EventTypeUpsertIn(description="A payment, v2", schemas={"1": PAYMENT_SCHEMA})
    )
    assert changed.description == "A payment, v2"

    sdk.event_type.delete(name)
    assert name not in [e.name for e in sdk.event_type.list(EventTypeListOptions(limit=250)).data]
    archived = sdk.event_type.list(EventTypeListOptions(include_archived=True, limit=250))
    assert {e.name: e.archived for e in archived.data}[name] is True
    assert sdk.event_type.get(name).archived is True


def test_message_create_get_and_duplicate_event_id(sdk: Svix, server: HomingProcess) -> None:
    """A message is accepted with 202 and its data; a repeated eventId is refused with 409."""
    app = sdk.application.create(ApplicationIn(name="Messages"))
    event_id = unique("evt")
    msg = sdk.message.create(
        app.id,
        MessageIn(event_type="order.created", event_id=event_id, payload={"order": 1}),
        MessageCreateOptions(with_content=True),
    )
    assert msg.id.startswith("msg_")
    assert (msg.event_type, msg.event_id, msg.payload) == ("order.created", event_id, {"order": 1})

    fetched = sdk.message.get(app.id, msg.id, MessageGetOptions(with_content=True))
    assert (fetched.id, fetched.payload) == (msg.id, {"order": 1})

    duplicate = MessageIn(event_type="order.created", event_id=event_id, payload={"order": 2})
    error = assert_http_error(lambda: sdk.message.create(app.id, duplicate), 409)
    assert error.code == "conflict"

    raw = httpx.post(
        f"{server.base_url}/api/v1/app/{app.id}/msg",
        json={"eventType": "order.created", "payload": {"order": 3}},
        headers={"authorization": f"Bearer {server.token}"},
    )
    assert raw.status_code == 202, raw.text
    assert raw.json()["payload"] == {"order": 3}


def test_message_list_filters(sdk: Svix) -> None:
    """Message lists filter by event types and by channel, newest first."""
    app = sdk.application.create(ApplicationIn(name="Filters"))
    sent = [
        sdk.message.create(app.id, MessageIn(event_type=et, payload={"i": i}, channels=[ch]))
        for i, (et, ch) in enumerate(
            [("a.one", "red"), ("b.two", "red"), ("a.one", "blue"), ("c.three", "blue")]
        )
    ]
    ids = [m.id for m in sent]

    everything = sdk.message.list(app.id)
    assert [m.id for m in everything.data] == ids[::-1]

    only_a = sdk.message.list(app.id, MessageListOptions(event_types=["a.one"]))
    assert [m.id for m in only_a.data] == [ids[2], ids[0]]
    a_or_c = sdk.message.list(app.id, MessageListOptions(event_types=["a.one", "c.three"]))
    assert [m.id for m in a_or_c.data] == [ids[3], ids[2], ids[0]]

    blue = sdk.message.list(app.id, MessageListOptions(channel="blue", with_content=True))
    assert [m.id for m in blue.data] == [ids[3], ids[2]]
    assert [m.payload for m in blue.data] == [{"i": 3}, {"i": 2}]


def test_message_violating_schema_is_rejected(sdk: Svix) -> None:
    """A payload that breaks its event type's JSON schema is refused with a 422 validation error."""
    name = unique("charge").replace("-", ".")
    sdk.event_type.create(EventTypeIn(name=name, description="x", schemas={"1": PAYMENT_SCHEMA}))
    app = sdk.application.create(ApplicationIn(name="Schema"))

    ok = sdk.message.create(app.id, MessageIn(event_type=name, payload={"amount": 5}))
    assert ok.event_type == name

    bad = MessageIn(event_type=name, payload={"amount": "five"})
    with pytest.raises(HTTPValidationError) as info:
        sdk.message.create(app.id, bad)
    assert info.value.status_code == 422
    assert info.value.detail, "a 422 must say what is wrong"
    assert [m.event_type for m in sdk.message.list(app.id).data] == [name]


def test_attempt_routes(sdk: Svix, receiver: Receiver) -> None:
    """Attempts list by endpoint and by message, destinations show status, resend is accepted."""
    app = sdk.application.create(ApplicationIn(name="Attempts"))
    path = "/" + unique("attempts")
    ep = sdk.endpoint.create(app.id, EndpointIn(url=receiver.url + path))
    msg = sdk.message.create(app.id, MessageIn(event_type="ping", payload={"n": 1}))

    destinations = sdk.message_attempt.list_attempted_destinations(app.id, msg.id)
    assert [d.id for d in destinations.data] == [ep.id]
    assert destinations.data[0].url == receiver.url + path

    by_msg = sdk.message_attempt.list_by_msg(app.id, msg.id)
    by_endpoint = sdk.message_attempt.list_by_endpoint(app.id, ep.id)
    for page in (by_msg, by_endpoint):
        assert all((a.msg_id, a.endpoint_id) == (msg.id, ep.id) for a in page.data)

    sdk.message_attempt.resend(app.id, msg.id, ep.id)
    if not WORKER_EXISTS:
        return  # nothing sends without the worker; the routes above still answered
    eventually(
        lambda: (len(receiver.received(path)) >= 2) or None, "the original and the resent webhook"
    )

    def two_attempts() -> list[MessageAttemptOut] | None:
        found = sdk.message_attempt.list_by_msg(app.id, msg.id).data
        return found if len(found) >= 2 else None

    attempts = eventually(two_attempts, "two recorded attempts")
    assert {a.status for a in attempts} == {MessageStatus.SUCCESS}
    assert {int(a.trigger_type) for a in attempts} == {0, 1}  # scheduled, then manual


@pytest.mark.skipif(not WORKER_EXISTS, reason="homing.delivery.worker does not exist yet")
def test_webhook_is_delivered_and_verifies(sdk: Svix, receiver: Receiver) -> None:
    """A message sent through the SDK reaches the receiver signed with the endpoint's secret."""
    app = sdk.application.create(ApplicationIn(name="Delivery"))
    path = "/" + unique("delivered")
    ep = sdk.endpoint.create(app.id, EndpointIn(url=receiver.url + path))
    secret = sdk.endpoint.get_secret(app.id, ep.id).key
    msg = sdk.message.create(app.id, MessageIn(event_type="user.signup", payload={"user": "ann"}))

    got = receiver.wait_for(path)
    Webhook(secret).verify(got.body, got.headers)  # raises WebhookVerificationError if forged
    assert got.headers["webhook-id"] == msg.id
    assert got.body == b'{"user":"ann"}'

    success = eventually(
        lambda: (
            [
                a
                for a in sdk.message_attempt.list_by_endpoint(
                    app.id, ep.id, MessageAttemptListByEndpointOptions(status=MessageStatus.SUCCESS)
                ).data
            ]
            or None
        ),
        "a successful attempt in list_by_endpoint",
    )
    assert [(a.msg_id, a.response_status_code) for a in success] == [(msg.id, 200)]
    assert sdk.endpoint.get_stats(app.id, ep.id).success == 1


async def test_async_client_flow(server: HomingProcess, receiver: Receiver) -> None:
    """The asyncio SDK client creates an app, endpoint, event type and message and reads them."""
    sdk = SvixAsync(server.token, options(server))
    try:
        uid = unique("async")
        app = await sdk.application.create(ApplicationIn(name="Async", uid=uid))
        assert (await sdk.application.get(uid)).id == app.id
        ep = await sdk.endpoint.create(app.id, EndpointIn(url=receiver.url + "/async"))
        assert (await sdk.endpoint.get_secret(app.id, ep.id)).key.startswith("whsec_")
        name = unique("async.evt").replace("-", ".")
        await sdk.event_type.create(EventTypeIn(name=name, description="async"))
        msg = await sdk.message.create(
            app.id, MessageIn(event_type=name, payload={"a": 1}, event_id=unique("e"))
        )
        listed = await sdk.message.list(app.id, MessageListOptions(with_content=True))
        assert [(m.id, m.payload) for m in listed.data] == [(msg.id, {"a": 1})]
        destinations = await sdk.message_attempt.list_attempted_destinations(app.id, msg.id)
        assert [d.id for d in destinations.data] == [ep.id]
        if WORKER_EXISTS:  # let the delivery finish (deleting mid-flight has its own test)
            for _ in range(100):
                if (await sdk.message_attempt.list_by_msg(app.id, msg.id)).data:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("no attempt was recorded within 10 s", pytrace=False)
        await sdk.application.delete(app.id)
        with pytest.raises(HttpError) as info:
            await sdk.application.get(app.id)
        assert info.value.status_code == 404
    finally:
        await sdk._httpx_client.aclose()  # the SDK has no close(); do not leak sockets


@pytest.mark.skipif(not WORKER_EXISTS, reason="homing.delivery.worker does not exist yet")
def test_deleting_app_during_delivery_is_harmless(
    sdk: Svix, server: HomingProcess, receiver: Receiver
) -> None:
    """Deleting an application while its webhook is in flight logs no error and stalls nothing."""
    app = sdk.application.create(ApplicationIn(name="Vanishing"))
    held = "/held-" + unique("gone")
    sdk.endpoint.create(app.id, EndpointIn(url=receiver.url + held))
    log_before = len(server.stderr())
    sdk.message.create(app.id, MessageIn(event_type="going.away", payload={}))
    receiver.wait_for(held)  # the worker is now waiting for our answer

    sdk.application.delete(app.id)
    receiver.release.set()
    assert receiver.answered_held.wait(timeout=10)

    # the worker must carry on: a later message of another application is still delivered
    other = sdk.application.create(ApplicationIn(name="Survivor"))
    path = "/" + unique("after")
    sdk.endpoint.create(other.id, EndpointIn(url=receiver.url + path))
    sdk.message.create(other.id, MessageIn(event_type="still.here", payload={}))
    receiver.wait_for(path)
    time.sleep(0.3)  # give the worker time to record the vanished delivery's outcome
    new_log = server.stderr()[log_before:]
    assert not logged_errors(new_log), new_log


def test_serve_stops_cleanly_on_sigterm(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """On SIGTERM after a delivery, ``homing serve`` runs its own shutdown and exits with 0."""
    server = start_homing(database_url, tmp_path)
    sdk = Svix(server.token, options(server))
    try:
        app = sdk.application.create(ApplicationIn(name="Shutdown"))
        sdk.endpoint.create(app.id, EndpointIn(url=receiver.url + "/bye"))
        sdk.message.create(app.id, MessageIn(event_type="bye", payload={}))
        if WORKER_EXISTS:
            receiver.wait_for("/bye")
    finally:
        sdk._httpx_client.close()
        code = stop_homing(server)
    # -15 would mean the signal killed the process before ``_serve``'s own clean-up (worker
    # drain, storage close) ran: uvicorn re-raises a captured SIGTERM once it stops serving
    assert code == 0, f"homing {SERVE_COMMAND} exited {code} on SIGTERM:\n{server.stderr()}"
    assert not logged_errors(server.stderr()), server.stderr()
