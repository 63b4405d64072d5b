"""Signature options end to end: the GitHub-style ``X-Hub-Signature-256`` header, and secret
rotation with a grace period, configured over the HTTP API and delivered by a real ``Worker``
to a real receiver on 127.0.0.1 (SQLite storage; loopback allow-listed).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from homing import signing
from homing.delivery.worker import Worker
from homing.storage.base import AttemptFilter, PageRequest
from homing.verify import Webhook, WebhookVerificationError, verify_github

from .receiver import Receiver, Seen

APP = "signing"


@pytest.fixture
async def api(
    api_factory: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]], tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API on SQLite, with settings a worker can deliver to 127.0.0.1 with."""
    async with api_factory(
        "sqlite:///" + str(tmp_path / "signing.db"),
        allow_networks="127.0.0.0/8",
        request_timeout=2.0,
        retry_schedule=(),
        retry_jitter=0.0,
    ) as client:
        created = await client.post("/api/v1/app", json={"name": "Signing", "uid": APP})
        assert created.status_code == 201, created.text
        yield client


async def deliver(api: httpx.AsyncClient, at: datetime | None = None) -> int:
    """Run a worker on the API's storage until idle, its clock at ``at`` (default: now)."""
    clock = (lambda: at) if at is not None else (lambda: datetime.now(UTC))
    worker = Worker(
        api.settings,  # type: ignore[attr-defined]
        api.storage,  # type: ignore[attr-defined]
        clock=clock,
        rng=random.Random(0),
        poll_interval=30.0,
    )
    return await worker.run_until_idle()


async def add_endpoint(api: httpx.AsyncClient, url: str, **fields: Any) -> tuple[str, str]:
    """Create an endpoint over the API; its id and its secret."""
    made = await api.post(f"/api/v1/app/{APP}/endpoint", json={"url": url, **fields})
    assert made.status_code == 201, made.text
    endpoint_id: str = made.json()["id"]
    got = await api.get(f"/api/v1/app/{APP}/endpoint/{endpoint_id}/secret")
    assert got.status_code == 200, got.text
    key: str = got.json()["key"]
    return endpoint_id, key


async def send(api: httpx.AsyncClient, payload: dict[str, Any] | None = None) -> str:
    """Post a message to the app; its id."""
    resp = await api.post(
        f"/api/v1/app/{APP}/msg",
        json={"eventType": "order.paid", "payload": payload or {"amount": 12, "ok": True}},
    )
    assert resp.status_code == 202, resp.text
    msg_id: str = resp.json()["id"]
    return msg_id


async def rotate(api: httpx.AsyncClient, endpoint_id: str, **body: Any) -> str:
    """Rotate the endpoint's secret over the API; the new key."""
    resp = await api.post(
        f"/api/v1/app/{APP}/endpoint/{endpoint_id}/secret/rotate", json=body or None
    )
    assert resp.status_code == 200, resp.text
    key: str = resp.json()["key"]
    return key


def v1_entries(seen: Seen) -> list[str]:
    return [e for e in seen.headers["webhook-signature"].split() if e.startswith("v1,")]


def timestamp(seen: Seen) -> int:
    return int(seen.headers["webhook-timestamp"])


# -- X-Hub-Signature-256 -----------------------------------------------------------------------


async def test_github_signature_is_sent_only_when_asked_for(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """An endpoint with githubSignature gets an X-Hub-Signature-256 that verify_github accepts
    (and the Standard Webhooks signature still verifies); one without gets no such header."""
    _, gh_key = await add_endpoint(api, receiver.url("/gh"), githubSignature=True)
    _, plain_key = await add_endpoint(api, receiver.url("/plain"))
    msg_id = await send(api)
    assert await deliver(api) == 2

    [gh] = receiver.at("/gh")
    header = gh.headers["x-hub-signature-256"]
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    verify_github(gh_key, gh.body, header)
    assert Webhook(gh_key).verify(gh.body, gh.headers) == {"amount": 12, "ok": True}
    assert gh.headers["webhook-id"] == msg_id
    with pytest.raises(WebhookVerificationError):
        verify_github(plain_key, gh.body, header)
    with pytest.raises(WebhookVerificationError):
        verify_github(gh_key, gh.body + b" ", header)

    [plain] = receiver.at("/plain")
    assert "x-hub-signature-256" not in plain.headers
    assert not any(name.startswith("x-hub-signature") for name in plain.headers)
    Webhook(plain_key).verify(plain.body, plain.headers)


async def test_stored_attempt_redacts_the_signature_headers(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """The attempt records the signature headers as "***", not their values."""
    endpoint_id, key = await add_endpoint(api, receiver.url("/gh"), githubSignature=True)
    msg_id = await send(api)
    assert await deliver(api) == 1
    [seen] = receiver.seen
    page = await api.storage.list_attempts(  # type: ignore[attr-defined]
        "msg_id", msg_id, AttemptFilter(), PageRequest()
    )
    [attempt] = page.items
    assert attempt.endpoint_id == endpoint_id
    stored = {name.lower(): value for name, value in attempt.request_headers.items()}
    assert stored["x-hub-signature-256"] == signing.REDACTED == "***"
    assert stored["webhook-signature"] == "***"
    assert stored["webhook-id"] == msg_id
    text = repr(attempt)
    for value in (seen.headers["x-hub-signature-256"], seen.headers["webhook-signature"], key):
        assert value not in text


async def test_github_signature_uses_the_current_key_during_rotation(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """While an old key is still live, X-Hub-Signature-256 is made with the new one."""
    endpoint_id, old = await add_endpoint(api, receiver.url("/gh"), githubSignature=True)
    new = await rotate(api, endpoint_id, gracePeriodSeconds=3600)
    await send(api)
    assert await deliver(api) == 1
    [seen] = receiver.seen
    verify_github(new, seen.body, seen.headers["x-hub-signature-256"])
    with pytest.raises(WebhookVerificationError):
        verify_github(old, seen.body, seen.headers["x-hub-signature-256"])


async def test_github_signature_field_round_trips(api: httpx.AsyncClient) -> None:
    """githubSignature defaults to false, is returned by create and GET, and PATCH/PUT set it."""
    url = "https://receiver.example/hook"
    default = await api.post(f"/api/v1/app/{APP}/endpoint", json={"url": url})
    assert default.json()["githubSignature"] is False
    made = await api.post(f"/api/v1/app/{APP}/endpoint", json={"url": url, "githubSignature": True})
    assert made.status_code == 201, made.text
    assert made.json()["githubSignature"] is True
    path = f"/api/v1/app/{APP}/endpoint/{made.json()['id']}"
    assert (await api.get(path)).json()["githubSignature"] is True
    patched = await api.patch(path, json={"githubSignature": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["githubSignature"] is False
    assert (await api.get(path)).json()["githubSignature"] is False
    untouched = await api.patch(path, json={"description": "other field"})
    assert untouched.json()["githubSignature"] is False
    put = await api.put(path, json={"url": url, "githubSignature": True})
    assert put.status_code == 200, put.text
    assert (await api.get(path)).json()["githubSignature"] is True
    listed = await api.get(f"/api/v1/app/{APP}/endpoint")
    flags = {e["id"]: e["githubSignature"] for e in listed.json()["data"]}
    assert flags == {default.json()["id"]: False, made.json()["id"]: True}


# -- rotation ----------------------------------------------------------------------------------


async def test_rotation_signs_with_both_keys_during_the_grace_period(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """After a rotation with a grace period a delivery carries two v1 signatures, one per key,
    and after the grace period only the new key's."""
    endpoint_id, old = await add_endpoint(api, receiver.url())
    new = await rotate(api, endpoint_id, gracePeriodSeconds=120)
    assert new != old
    current = await api.get(f"/api/v1/app/{APP}/endpoint/{endpoint_id}/secret")
    assert current.json() == {"key": new}

    first_id = await send(api)
    assert await deliver(api) == 1
    [first] = receiver.seen
    entries = v1_entries(first)
    assert len(entries) == 2
    ts = timestamp(first)
    assert Webhook(old).sign(first_id, ts, first.body) in entries
    assert Webhook(new).sign(first_id, ts, first.body) in entries
    Webhook(old).verify(first.body, first.headers)
    Webhook(new).verify(first.body, first.headers)

    second_id = await send(api)
    later = datetime.now(UTC) + timedelta(seconds=121)
    assert await deliver(api, at=later) == 1
    second = receiver.seen[1]
    assert second.headers["webhook-id"] == second_id
    assert timestamp(second) == int(later.timestamp())
    assert v1_entries(second) == [Webhook(new).sign(second_id, timestamp(second), second.body)]
    Webhook(new).verify(second.body, second.headers, now=timestamp(second))
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(second.body, second.headers, now=timestamp(second))


async def test_rotation_without_grace_drops_the_old_key_at_once(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """gracePeriodSeconds=0 makes the next delivery carry only the new key's signature."""
    endpoint_id, old = await add_endpoint(api, receiver.url())
    new = await rotate(api, endpoint_id, gracePeriodSeconds=0)
    msg_id = await send(api)
    assert await deliver(api) == 1
    [seen] = receiver.seen
    assert v1_entries(seen) == [Webhook(new).sign(msg_id, timestamp(seen), seen.body)]
    Webhook(new).verify(seen.body, seen.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(seen.body, seen.headers)


async def test_rotation_default_grace_is_24_hours(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """Without gracePeriodSeconds the old key signs on for 24 hours, and not after."""
    endpoint_id, old = await add_endpoint(api, receiver.url())
    new = await rotate(api, endpoint_id)
    await send(api)
    almost = datetime.now(UTC) + timedelta(hours=23, minutes=59)
    assert await deliver(api, at=almost) == 1
    assert len(v1_entries(receiver.seen[0])) == 2
    await send(api)
    assert await deliver(api, at=almost + timedelta(minutes=2)) == 1
    last = receiver.seen[1]
    assert len(v1_entries(last)) == 1
    Webhook(new).verify(last.body, last.headers, now=timestamp(last))
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(last.body, last.headers, now=timestamp(last))


async def test_rotating_twice_keeps_every_live_key(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """Two rotations inside the grace period give three signatures, each key verifying."""
    endpoint_id, first = await add_endpoint(api, receiver.url())
    second = await rotate(api, endpoint_id, gracePeriodSeconds=600)
    third = await rotate(api, endpoint_id, gracePeriodSeconds=600)
    await send(api)
    assert await deliver(api) == 1
    [seen] = receiver.seen
    assert len(v1_entries(seen)) == 3
    for key in (first, second, third):
        Webhook(key).verify(seen.body, seen.headers)


@pytest.mark.parametrize("grace", [-1, 604801])
async def test_grace_period_out_of_range_is_422(
    api: httpx.AsyncClient, receiver: Receiver, grace: int
) -> None:
    """The grace period is 0 to 7 days; anything else is refused and nothing rotates."""
    endpoint_id, key = await add_endpoint(api, receiver.url())
    resp = await api.post(
        f"/api/v1/app/{APP}/endpoint/{endpoint_id}/secret/rotate",
        json={"gracePeriodSeconds": grace},
    )
    assert resp.status_code == 422, resp.text
    current = await api.get(f"/api/v1/app/{APP}/endpoint/{endpoint_id}/secret")
    assert current.json() == {"key": key}
