"""Regressions found in review, over HTTP and through the worker: NUL bytes in a receiver's
answer, read-only portal tokens, idempotency keys never storing secrets, endpoint edits racing
the worker or a rotation, concurrent uid changes, and the texts that reach attempt records or
a receiver's verifier.

The API tests use the ``api``/``any_api`` clients of ``conftest.py``; the worker test runs a
real ``Worker`` on each backend against a local receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from homing.core.models import DeliveryState, Endpoint
from homing.delivery.sender import describe
from homing.delivery.worker import Worker
from homing.storage import Storage
from homing.storage.base import AttemptFilter, PageRequest
from homing.verify import Webhook, WebhookVerificationError

# -- a receiver answering with a NUL byte ----------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A receiver on 127.0.0.1: ``/nul`` answers 200 ``ok\\x00``, ``/fine`` 200 ``fine``;
    yields its base URL and the hits per path."""
    hits = {"/nul": 0, "/fine": 0}

    async def nul(request: web.Request) -> web.Response:
        hits["/nul"] += 1
        return web.Response(status=200, body=b"ok\x00")

    async def fine(request: web.Request) -> web.Response:
        hits["/fine"] += 1
        return web.Response(status=200, text="fine")

    app = web.Application()
    app.router.add_post("/nul", nul)
    app.router.add_post("/fine", fine)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


async def test_nul_in_a_response_body_does_not_jam_the_batch(
    any_api: httpx.AsyncClient, receiver: tuple[str, dict[str, int]]
) -> None:
    """A 200 whose body holds a NUL byte is recorded (NUL replaced) as a success, and another
    endpoint's delivery written in the same batch succeeds too, once each."""
    base, hits = receiver
    storage: Storage = any_api.storage  # type: ignore[attr-defined]
    sent = {}
    for path in ("/nul", "/fine"):
        app = (await any_api.post("/api/v1/app", json={"name": path})).json()["id"]
        ep = await any_api.post(f"/api/v1/app/{app}/endpoint", json={"url": base + path})
        msg = await any_api.post(f"/api/v1/app/{app}/msg", json={"eventType": "x", "payload": {}})
        sent[path] = (msg.json()["id"], ep.json()["id"])
    settings = replace(
        any_api.settings,  # type: ignore[attr-defined]
        allow_networks="127.0.0.0/8",
        request_timeout=2.0,
        retry_schedule=(0, 0),
        retry_jitter=0.0,
    )

    assert await Worker(settings, storage, poll_interval=30.0).run_until_idle() == 2

    assert hits == {"/nul": 1, "/fine": 1}
    bodies = {}
    for path, (msg_id, ep_id) in sent.items():
        delivery = await storage.get_delivery(msg_id, ep_id)
        assert delivery is not None and delivery.state is DeliveryState.SUCCESS, path
        page = await storage.list_attempts("msg_id", msg_id, AttemptFilter(), PageRequest())
        [attempt] = page.items
        bodies[path] = attempt.response_body
    assert bodies == {"/nul": "ok\ufffd", "/fine": "fine"}


# -- read-only portal tokens -----------------------------------------------------------------


async def portal_token(api: httpx.AsyncClient, app: str, read_only: bool) -> dict[str, str]:
    resp = await api.post(f"/api/v1/auth/app-portal-access/{app}", json={"readOnly": read_only})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def app_with_endpoint(api: httpx.AsyncClient) -> tuple[str, str]:
    app = (await api.post("/api/v1/app", json={"name": "A"})).json()["id"]
    resp = await api.post(f"/api/v1/app/{app}/endpoint", json={"url": "https://example.com/"})
    assert resp.status_code == 201, resp.text
    return app, resp.json()["id"]


async def test_read_only_portal_token_reads_but_cannot_write(api: httpx.AsyncClient) -> None:
    """A readOnly portal token can read its application's endpoints, gets 403 on every write
    (nothing changes), and can still log itself out."""
    app, ep = await app_with_endpoint(api)
    before = (await api.get(f"/api/v1/app/{app}/endpoint/{ep}/secret")).json()["key"]
    reader = await portal_token(api, app, read_only=True)
    url = f"/api/v1/app/{app}/endpoint/{ep}"

    listed = await api.get(f"/api/v1/app/{app}/endpoint", headers=reader)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["data"]] == [ep]
    assert (await api.get(url, headers=reader)).status_code == 200
    writes = [
        api.post(f"{url}/secret/rotate", json={}, headers=reader),
        api.patch(url, json={"url": "https://attacker.example/"}, headers=reader),
        api.put(url, json={"url": "https://attacker.example/"}, headers=reader),
        api.delete(url, headers=reader),
        api.post(f"/api/v1/app/{app}/msg", json={"eventType": "x", "payload": {}}, headers=reader),
    ]
    for write in writes:
        resp = await write
        assert resp.status_code == 403, (resp.request.method, resp.request.url, resp.text)

    now = (await api.get(url)).json()
    assert now["url"] == "https://example.com/"
    assert (await api.get(f"{url}/secret")).json()["key"] == before
    assert (await api.post("/api/v1/auth/logout", headers=reader)).status_code == 204
    assert (await api.get(url, headers=reader)).status_code == 401


async def test_portal_token_without_read_only_can_write(api: httpx.AsyncClient) -> None:
    """The 403s above come from readOnly: a plain portal token may edit its endpoints."""
    app, ep = await app_with_endpoint(api)
    writer = await portal_token(api, app, read_only=False)

    resp = await api.patch(
        f"/api/v1/app/{app}/endpoint/{ep}", json={"description": "mine"}, headers=writer
    )

    assert resp.status_code == 200 and resp.json()["description"] == "mine"


# -- idempotency keys and secrets ------------------------------------------------------------


async def stored_bodies(storage: Storage) -> list[str]:
    async with storage.db.connection() as conn:
        found = await conn.fetch("SELECT body FROM idempotency WHERE body IS NOT NULL")
    return [row["body"] for row in found]


async def test_idempotency_never_stores_secret_answers(any_api: httpx.AsyncClient) -> None:
    """A rotation or a portal token repeated with the same Idempotency-Key runs again (a new
    key, a new token) and neither answer is stored; other POSTs are still replayed."""
    app, ep = await app_with_endpoint(any_api)
    rotate = f"/api/v1/app/{app}/endpoint/{ep}/secret/rotate"
    portal = f"/api/v1/auth/app-portal-access/{app}"
    once = {"Idempotency-Key": "same-key"}

    keys = [(await any_api.post(rotate, json={}, headers=once)).json()["key"] for _ in range(2)]
    tokens = [(await any_api.post(portal, json={}, headers=once)).json()["token"] for _ in "ab"]
    made = [await any_api.post("/api/v1/app", json={"name": "B"}, headers=once) for _ in "ab"]

    assert keys[0] != keys[1]
    assert (await any_api.get(f"/api/v1/app/{app}/endpoint/{ep}/secret")).json()["key"] == keys[1]
    assert tokens[0] != tokens[1]
    for token in tokens:
        headers = {"Authorization": f"Bearer {token}"}
        assert (await any_api.get(f"/api/v1/app/{app}", headers=headers)).status_code == 200
    assert made[0].json()["id"] == made[1].json()["id"]
    assert made[1].headers.get("idempotent-replayed") == "true"
    bodies = await stored_bodies(any_api.storage)  # type: ignore[attr-defined]
    assert any(made[0].json()["id"] in body for body in bodies)  # the table is really used
    for secret in (*keys, *tokens):
        assert not any(secret in body for body in bodies)


# -- endpoint edits racing other writers ------------------------------------------------------


def interfere(
    monkeypatch: pytest.MonkeyPatch, storage: Storage, other: Callable[[Endpoint], Awaitable[Any]]
) -> list[Endpoint]:
    """Make ``other`` change the endpoint just before the API's first write of it, as a
    concurrent writer would between the API's read and its write; returns the API's writes."""
    original = storage.update_endpoint
    writes: list[Endpoint] = []

    async def update_endpoint(ep: Endpoint, previous: Endpoint | None = None) -> Endpoint:
        if previous is None:  # the other writer's own edit
            return await original(ep)
        writes.append(ep)
        if len(writes) == 1:
            await other(ep)
        return await original(ep, previous=previous)

    monkeypatch.setattr(storage, "update_endpoint", update_endpoint)
    return writes


async def test_patch_racing_the_worker_keeps_the_endpoint_disabled(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A description PATCH whose write loses to the worker disabling the endpoint is applied
    to the fresh endpoint: the description changes and the endpoint stays disabled."""
    app, ep = await app_with_endpoint(api)
    storage: Storage = api.storage  # type: ignore[attr-defined]

    async def worker_disables(current: Endpoint) -> None:
        assert await storage.disable_endpoint(current.id, datetime.now(UTC) + timedelta(seconds=1))

    writes = interfere(monkeypatch, storage, worker_disables)

    resp = await api.patch(f"/api/v1/app/{app}/endpoint/{ep}", json={"description": "new"})

    assert resp.status_code == 200, resp.text
    assert len(writes) == 2  # the stale write was refused and made again
    now = (await api.get(f"/api/v1/app/{app}/endpoint/{ep}")).json()
    assert (now["disabled"], now["description"]) == (True, "new")


async def test_rotation_racing_a_patch_keeps_both(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation whose write loses to a concurrent edit is made again on top of it: the key
    it returns is the stored current key and the other edit stays."""
    app, ep = await app_with_endpoint(api)
    storage: Storage = api.storage  # type: ignore[attr-defined]

    async def someone_patches(current: Endpoint) -> None:
        fresh = await storage.get_endpoint(current.app_id, current.id)
        later = datetime.now(UTC) + timedelta(seconds=1)
        await storage.update_endpoint(replace(fresh, description="theirs", updated_at=later))

    writes = interfere(monkeypatch, storage, someone_patches)

    resp = await api.post(f"/api/v1/app/{app}/endpoint/{ep}/secret/rotate", json={})

    assert resp.status_code == 200, resp.text
    assert len(writes) == 2
    current = (await api.get(f"/api/v1/app/{app}/endpoint/{ep}/secret")).json()["key"]
    assert current == resp.json()["key"]
    assert (await api.get(f"/api/v1/app/{app}/endpoint/{ep}")).json()["description"] == "theirs"


# -- unique keys under concurrency -----------------------------------------------------------


async def test_concurrent_uid_changes_one_wins_one_conflicts(any_api: httpx.AsyncClient) -> None:
    """Two applications taking the same uid at once: one gets 200, the other 409, never 500."""
    for n in range(8):
        one = (await any_api.post("/api/v1/app", json={"name": "A"})).json()["id"]
        two = (await any_api.post("/api/v1/app", json={"name": "B"})).json()["id"]

        answers = await asyncio.gather(
            any_api.patch(f"/api/v1/app/{one}", json={"uid": f"same-{n}"}),
            any_api.patch(f"/api/v1/app/{two}", json={"uid": f"same-{n}"}),
        )

        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]


# -- texts that reach records and receivers --------------------------------------------------

LEAKY_URL = "http://127.0.0.1:9/hook?access_token=SUPERSECRET"


def _response_error() -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(
        URL(LEAKY_URL), "POST", CIMultiDictProxy(CIMultiDict()), URL(LEAKY_URL)
    )
    return aiohttp.ClientResponseError(info, (), status=400, message="Bad Request")


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientOSError(None, f"Can not write request body for {LEAKY_URL}"),
        aiohttp.ClientPayloadError(f"Response payload is not completed: {LEAKY_URL}"),
        _response_error(),
    ],
    ids=["os-error", "payload-error", "response-error"],
)
def test_failure_message_keeps_the_url_query_out(error: Exception) -> None:
    """An aiohttp error naming the URL is described without its path and query (a token)."""
    text = describe(error, 2.0)

    assert "SUPERSECRET" not in text and "access_token" not in text and "/hook" not in text
    assert text.startswith(type(error).__name__)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_lone_surrogate_in_a_header_is_a_verification_error(header: str) -> None:
    """A header holding a lone surrogate (a server's decoding of a non-UTF-8 byte) makes
    verify raise WebhookVerificationError, never UnicodeError."""
    hook = Webhook("whsec_" + "A" * 32)
    now = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": "v1,AAAA"}
    headers[header] += "\udcff"

    with pytest.raises(WebhookVerificationError):
        hook.verify(b"{}", headers)


def test_verify_accepts_a_signed_id_with_a_lone_surrogate() -> None:
    """A webhook-id with a lone surrogate is signed and checked over its raw bytes, so a
    correct signature of it verifies."""
    hook = Webhook("whsec_" + "A" * 32)
    now = int(time.time())
    headers = {
        "webhook-id": "msg_\udcff",
        "webhook-timestamp": str(now),
        "webhook-signature": hook.sign("msg_\udcff", now, b'{"a": 1}'),
    }

    assert hook.verify(b'{"a": 1}', headers) == {"a": 1}
