"""Tokens over HTTP: application-portal tokens and their scope, expiry and logout, org tokens
minted like ``homing token create``, hashed storage, per-token rate limiting, and that no token
or secret leaks into error bodies or logs.

Every test runs on SQLite and PostgreSQL (``database_url`` of ``tests/conftest.py``) against an
app built here with a controllable clock (the shared ``api`` fixtures use the real one).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from homing.api.app import create_app
from homing.config import Secret, Settings
from homing.core.models import DEFAULT_ORG
from homing.delivery.worker import Worker
from homing.signing import generate_secret
from homing.storage import Storage, open_storage
from homing.storage.store import hash_token

BOOTSTRAP = "hsk_boot_" + "b" * 40
PUBLIC_URL = "https://hooks.example.com"
ENDPOINT_URL = "https://receiver.example/hook"


class Clock:
    """A clock that stands still until ``advance`` moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Harness:
    """A client of the ASGI app (with no default token) and what the app was made with."""

    client: httpx.AsyncClient
    clock: Clock
    storage: Storage
    settings: Settings
    limiter_time: list[float]

    async def call(
        self, method: str, path: str, token: str = BOOTSTRAP, **kwargs: Any
    ) -> httpx.Response:
        """``method path`` with ``Authorization: Bearer token``."""
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def make_app(self, uid: str, name: str | None = None) -> dict[str, Any]:
        resp = await self.call("POST", "/api/v1/app", json={"name": name or uid, "uid": uid})
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def portal(self, app: str, token: str = BOOTSTRAP, **body: Any) -> dict[str, Any]:
        """A portal token for ``app`` (id or uid), checking the answer's status."""
        resp = await self.call(
            "POST", f"/api/v1/auth/app-portal-access/{app}", token, json=body or None
        )
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        return answer

    async def org_token(self, org: str = DEFAULT_ORG) -> str:
        """An organisation token made the way ``homing token create`` makes one."""
        token = "hsk_" + secrets.token_urlsafe(32)
        await self.storage.create_token(token, org, None, self.clock(), None)
        return token


@contextlib.asynccontextmanager
async def open_harness(database_url: str, **settings: Any) -> AsyncIterator[Harness]:
    """The API over a migrated storage at ``database_url``, with a frozen clock (also for the
    rate limiter, whose clock ``create_app`` does not take: it is pinned after the fact)."""
    storage = await open_storage(database_url)
    try:
        await storage.migrate()
        config = Settings(
            database_url=database_url,
            bootstrap_token=Secret(BOOTSTRAP),
            public_url=PUBLIC_URL,
            **settings,
        )
        clock = Clock()
        app = create_app(config, storage, clock=clock)
        limiter_time = [0.0]
        app.state.services.limiter._clock = lambda: limiter_time[0]
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://homing.test") as client:
            yield Harness(client, clock, storage, config, limiter_time)
    finally:
        await storage.close()


Opener = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
def open_api(database_url: str) -> Opener:
    """``open_harness`` on this test's database, for tests that choose the settings."""
    return functools.partial(open_harness, database_url)


@pytest.fixture
async def api(open_api: Opener) -> AsyncIterator[Harness]:
    """The API with default settings on a fresh database of each backend."""
    async with open_api() as harness:
        yield harness


# -- app-portal-access ------------------------------------------------------------------------


async def test_portal_access_returns_a_url_carrying_the_token(api: Harness) -> None:
    """The answer is {url, token}; the URL is the portal on base_url, with app id and token in
    the fragment (the app's id even when the path named it by uid)."""
    app = await api.make_app("shop", "Shop")
    answer = await api.portal("shop")
    assert set(answer) == {"url", "token"}
    token = answer["token"]
    assert isinstance(token, str) and len(token) >= 32
    assert answer["url"] == f"{PUBLIC_URL}/portal#app={app['id']}&token={token}"
    assert answer["url"].startswith(api.settings.base_url + "/portal#")
    assert (await api.portal(app["id"]))["token"] != token


async def test_portal_token_works_on_its_application(api: Harness) -> None:
    """The token reads its application (by id and uid), its endpoints and its messages, and
    can add endpoints and messages to it."""
    app = await api.make_app("shop")
    endpoint = await api.call(
        "POST", "/api/v1/app/shop/endpoint", json={"url": ENDPOINT_URL, "uid": "main"}
    )
    assert endpoint.status_code == 201, endpoint.text
    message = await api.call(
        "POST", "/api/v1/app/shop/msg", json={"eventType": "order.paid", "payload": {"n": 1}}
    )
    assert message.status_code == 202, message.text
    token = (await api.portal("shop"))["token"]

    for ref in (app["id"], "shop"):
        got = await api.call("GET", f"/api/v1/app/{ref}", token)
        assert (got.status_code, got.json()["id"]) == (200, app["id"])
    listed = await api.call("GET", "/api/v1/app/shop/endpoint", token)
    assert [e["id"] for e in listed.json()["data"]] == [endpoint.json()["id"]]
    one = await api.call("GET", "/api/v1/app/shop/endpoint/main", token)
    assert one.status_code == 200, one.text
    secret = await api.call("GET", "/api/v1/app/shop/endpoint/main/secret", token)
    assert secret.status_code == 200 and secret.json()["key"].startswith("whsec_")
    msgs = await api.call("GET", "/api/v1/app/shop/msg", token)
    assert [m["id"] for m in msgs.json()["data"]] == [message.json()["id"]]
    msg = await api.call("GET", f"/api/v1/app/shop/msg/{message.json()['id']}", token)
    assert msg.status_code == 200, msg.text

    added = await api.call("POST", "/api/v1/app/shop/endpoint", token, json={"url": ENDPOINT_URL})
    assert added.status_code == 201, added.text
    sent = await api.call(
        "POST", "/api/v1/app/shop/msg", token, json={"eventType": "a.b", "payload": {}}
    )
    assert sent.status_code == 202, sent.text


async def test_portal_token_gets_404_on_other_applications(api: Harness) -> None:
    """Another application of the same organisation is invisible to the token, by id or uid,
    with everything under it."""
    await api.make_app("mine")
    other = await api.make_app("theirs")
    ep = await api.call("POST", "/api/v1/app/theirs/endpoint", json={"url": ENDPOINT_URL})
    msg = await api.call("POST", "/api/v1/app/theirs/msg", json={"eventType": "a.b", "payload": {}})
    token = (await api.portal("mine"))["token"]
    ep_id, msg_id = ep.json()["id"], msg.json()["id"]
    for ref in (other["id"], "theirs"):
        for method, path in [
            ("GET", f"/api/v1/app/{ref}"),
            ("PATCH", f"/api/v1/app/{ref}"),
            ("DELETE", f"/api/v1/app/{ref}"),
            ("GET", f"/api/v1/app/{ref}/endpoint"),
            ("POST", f"/api/v1/app/{ref}/endpoint"),
            ("GET", f"/api/v1/app/{ref}/endpoint/{ep_id}"),
            ("GET", f"/api/v1/app/{ref}/endpoint/{ep_id}/secret"),
            ("POST", f"/api/v1/app/{ref}/endpoint/{ep_id}/secret/rotate"),
            ("GET", f"/api/v1/app/{ref}/msg"),
            ("POST", f"/api/v1/app/{ref}/msg"),
            ("GET", f"/api/v1/app/{ref}/msg/{msg_id}"),
        ]:
            body = {"url": ENDPOINT_URL, "eventType": "a.b", "payload": {}, "name": "x"}
            resp = await api.call(method, path, token, json=body if method != "GET" else None)
            assert resp.status_code == 404, f"{method} {path}: {resp.status_code} {resp.text}"
            assert resp.json()["code"] == "not_found"
    crossed = await api.call("GET", f"/api/v1/app/mine/endpoint/{ep_id}", token)
    assert crossed.status_code == 404
    still = await api.call("GET", "/api/v1/app/theirs/endpoint")
    assert [e["id"] for e in still.json()["data"]] == [ep_id]


async def test_portal_token_cannot_create_applications_through_messages(api: Harness) -> None:
    """A message with an ``application`` body for a missing app is 404 for an app token, and
    creates nothing."""
    await api.make_app("mine")
    token = (await api.portal("mine"))["token"]
    body = {"eventType": "a.b", "payload": {}, "application": {"name": "New", "uid": "new"}}
    resp = await api.call("POST", "/api/v1/app/new/msg", token, json=body)
    assert resp.status_code == 404, resp.text
    assert (await api.call("GET", "/api/v1/app/new")).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/app", None),
        ("POST", "/api/v1/app", {"name": "New", "uid": "new"}),
        ("PUT", "/api/v1/app/mine", {"name": "Renamed"}),
        ("DELETE", "/api/v1/app/mine", None),
        ("GET", "/api/v1/event-type", None),
        ("POST", "/api/v1/event-type", {"name": "a.b", "description": "x"}),
        ("GET", "/api/v1/event-type/a.b", None),
        ("POST", "/api/v1/auth/app-portal-access/mine", None),
        ("POST", "/api/v1/auth/app-portal-access/other", None),
    ],
)
async def test_portal_token_gets_403_on_org_routes(
    api: Harness, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Organisation-level routes refuse an application-scoped token with 403 and do nothing."""
    await api.make_app("mine", "Mine")
    await api.make_app("other")
    token = (await api.portal("mine"))["token"]
    resp = await api.call(method, path, token, json=body)
    assert resp.status_code == 403, resp.text
    assert resp.json()["code"] == "forbidden"
    assert (await api.call("GET", "/api/v1/app/mine")).json()["name"] == "Mine"
    assert (await api.call("GET", "/api/v1/app/new")).status_code == 404
    assert (await api.call("GET", "/api/v1/event-type/a.b")).status_code == 404


async def test_portal_token_expires(api: Harness) -> None:
    """A token made with {"expiry": 60} works until 60 s have passed and is 401 after."""
    await api.make_app("shop")
    token = (await api.portal("shop", expiry=60))["token"]
    assert (await api.call("GET", "/api/v1/app/shop", token)).status_code == 200
    api.clock.advance(59)
    assert (await api.call("GET", "/api/v1/app/shop", token)).status_code == 200
    api.clock.advance(1.5)
    expired = await api.call("GET", "/api/v1/app/shop", token)
    assert expired.status_code == 401
    assert expired.json()["code"] == "authentication_failed"
    assert (await api.call("GET", "/api/v1/app/shop")).status_code == 200


async def test_portal_token_default_lifetime_is_the_setting(open_api: Opener) -> None:
    """Without ``expiry`` the token lives HOMING_PORTAL_TOKEN_TTL seconds."""
    async with open_api(portal_token_ttl=3600) as api:
        await api.make_app("shop")
        token = (await api.portal("shop"))["token"]
        api.clock.advance(3599)
        assert (await api.call("GET", "/api/v1/app/shop", token)).status_code == 200
        api.clock.advance(2)
        assert (await api.call("GET", "/api/v1/app/shop", token)).status_code == 401


@pytest.mark.parametrize("expiry", [0, 59, 7 * 24 * 3600 + 1, -1])
async def test_portal_expiry_out_of_range_is_422(api: Harness, expiry: int) -> None:
    """``expiry`` must be from 60 s to 7 days."""
    await api.make_app("shop")
    resp = await api.call("POST", "/api/v1/auth/app-portal-access/shop", json={"expiry": expiry})
    assert resp.status_code == 422, resp.text


async def test_portal_access_creates_a_missing_application_from_the_body(api: Harness) -> None:
    """A missing app is created from ``application`` (uid = the path), and the token sees it."""
    answer = await api.portal("fresh", application={"name": "Fresh shop"})
    got = await api.call("GET", "/api/v1/app/fresh")
    assert got.status_code == 200, got.text
    assert (got.json()["name"], got.json()["uid"]) == ("Fresh shop", "fresh")
    assert answer["url"].startswith(f"{PUBLIC_URL}/portal#app={got.json()['id']}&token=")
    seen = await api.call("GET", "/api/v1/app/fresh", answer["token"])
    assert seen.status_code == 200
    again = await api.portal("fresh", application={"name": "Ignored"})
    assert again["url"].startswith(f"{PUBLIC_URL}/portal#app={got.json()['id']}&")
    listed = await api.call("GET", "/api/v1/app")
    assert [a["uid"] for a in listed.json()["data"]] == ["fresh"]


@pytest.mark.parametrize("body", [None, {}, {"expiry": 120}])
async def test_portal_access_for_a_missing_application_is_404(
    api: Harness, body: dict[str, Any] | None
) -> None:
    """Without an ``application`` body a missing app is 404, and nothing is created."""
    resp = await api.call("POST", "/api/v1/auth/app-portal-access/nope", json=body)
    assert resp.status_code == 404, resp.text
    assert resp.json()["code"] == "not_found"
    assert (await api.call("GET", "/api/v1/app")).json()["data"] == []


# -- logout and other tokens ------------------------------------------------------------------


async def test_logout_revokes_the_portal_token(api: Harness) -> None:
    """Logout with a portal token is 204 and that token is 401 from then on; others live on."""
    await api.make_app("shop")
    token = (await api.portal("shop"))["token"]
    sibling = (await api.portal("shop"))["token"]
    resp = await api.call("POST", "/api/v1/auth/logout", token)
    assert resp.status_code == 204
    assert resp.content == b""
    assert (await api.call("GET", "/api/v1/app/shop", token)).status_code == 401
    assert (await api.call("POST", "/api/v1/auth/logout", token)).status_code == 401
    assert (await api.call("GET", "/api/v1/app/shop", sibling)).status_code == 200


async def test_logout_with_the_bootstrap_token_keeps_it(api: Harness) -> None:
    """The bootstrap token cannot be revoked: logout is 204 and it keeps working."""
    assert (await api.call("POST", "/api/v1/auth/logout")).status_code == 204
    assert (await api.call("GET", "/api/v1/app")).status_code == 200
    assert (await api.call("POST", "/api/v1/auth/logout")).status_code == 204


async def test_logout_without_a_token_is_401(api: Harness) -> None:
    """Logout needs a valid token like any route."""
    assert (await api.client.post("/api/v1/auth/logout")).status_code == 401
    assert (await api.call("POST", "/api/v1/auth/logout", "hpt_" + "z" * 43)).status_code == 401


async def test_created_org_token_works_like_the_bootstrap_token(api: Harness) -> None:
    """A token with no application (``homing token create``) is an org token: org routes work,
    and logout revokes it."""
    token = await api.org_token()
    made = await api.call("POST", "/api/v1/app", token, json={"name": "Shop", "uid": "shop"})
    assert made.status_code == 201, made.text
    assert [a["uid"] for a in (await api.call("GET", "/api/v1/app", token)).json()["data"]] == [
        "shop"
    ]
    created = await api.call(
        "POST", "/api/v1/event-type", token, json={"name": "a.b", "description": "x"}
    )
    assert created.status_code == 201, created.text
    portal = await api.portal("shop", token)
    assert (await api.call("GET", "/api/v1/app/shop", portal["token"])).status_code == 200
    assert (await api.call("POST", "/api/v1/auth/logout", token)).status_code == 204
    assert (await api.call("GET", "/api/v1/app", token)).status_code == 401


async def test_org_token_of_another_organisation_sees_nothing(api: Harness) -> None:
    """Another organisation's token gets 404 for this one's application and an empty list."""
    app = await api.make_app("shop")
    stranger = await api.org_token("org_stranger")
    for ref in (app["id"], "shop"):
        assert (await api.call("GET", f"/api/v1/app/{ref}", stranger)).status_code == 404
        portal = await api.call("POST", f"/api/v1/auth/app-portal-access/{ref}", stranger)
        assert portal.status_code == 404
    assert (await api.call("GET", "/api/v1/app", stranger)).json()["data"] == []


async def test_tokens_are_stored_hashed(api: Harness) -> None:
    """The api_token table holds SHA-256 hashes: no column of any row contains a token."""
    await api.make_app("shop")
    tokens = [(await api.portal("shop"))["token"], await api.org_token()]
    async with api.storage.db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM api_token")
    assert len(rows) == 2
    columns = ("id", "org_id", "app_id", "token_hash", "created_at", "expires_at", "revoked")
    dumped = repr([[row[c] for c in columns] for row in rows])
    for token in tokens:
        assert token not in dumped
        assert token[4:] not in dumped
    assert sorted(row["token_hash"] for row in rows) == sorted(hash_token(t) for t in tokens)


# -- rate limiting -----------------------------------------------------------------------------


async def test_rate_limit_refuses_the_eleventh_rapid_request(open_api: Opener) -> None:
    """At 5 requests/s a token gets a burst of 10; the 11th is 429 rate_limited with a
    Retry-After of at least 1 s, and the token is served again once that has passed."""
    async with open_api(api_rate_limit=5) as api:
        for n in range(10):
            resp = await api.call("GET", "/api/v1/app")
            assert resp.status_code == 200, f"request {n + 1}: {resp.text}"
        refused = await api.call("GET", "/api/v1/app")
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"
        retry_after = refused.headers["Retry-After"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        api.limiter_time[0] += int(retry_after)
        assert (await api.call("GET", "/api/v1/app")).status_code == 200


async def test_rate_limit_is_per_token(open_api: Opener) -> None:
    """A token that ran dry does not limit another token (org or portal)."""
    async with open_api(api_rate_limit=5) as api:
        await api.make_app("shop")
        other = await api.org_token()
        portal = (await api.portal("shop"))["token"]
        while (await api.call("GET", "/api/v1/app")).status_code != 429:
            pass
        for _ in range(10):
            assert (await api.call("GET", "/api/v1/app", other)).status_code == 200
            assert (await api.call("GET", "/api/v1/app/shop", portal)).status_code == 200


async def test_rate_limit_zero_disables_limiting(open_api: Opener) -> None:
    """With api_rate_limit=0 many rapid requests are all served."""
    async with open_api(api_rate_limit=0) as api:
        for _ in range(60):
            assert (await api.call("GET", "/api/v1/app")).status_code == 200


# -- no leaks ----------------------------------------------------------------------------------


async def test_error_bodies_never_contain_tokens_or_secrets(open_api: Opener) -> None:
    """401, 403, 404, 422 and 429 answers provoked with tokens and secrets in the request echo
    none of them, in the body or the headers."""
    secret = generate_secret()
    bad_token = "hpt_" + secrets.token_urlsafe(32)
    async with open_api(api_rate_limit=5) as api:
        await api.make_app("mine")
        await api.make_app("theirs")
        made = await api.call("POST", "/api/v1/app/mine/endpoint", json={"url": ENDPOINT_URL})
        rotate = f"/api/v1/app/mine/endpoint/{made.json()['id']}/secret/rotate"
        portal = (await api.portal("mine"))["token"]
        answers = [
            (401, await api.call("GET", "/api/v1/app", bad_token)),
            (401, await api.call("GET", "/api/v1/app", f"{bad_token} {secret}")),
            (403, await api.call("GET", "/api/v1/app", portal)),
            (404, await api.call("GET", "/api/v1/app/theirs", portal)),
            (
                422,
                await api.call(
                    "POST", "/api/v1/app/mine/endpoint", json={"url": "nope", "secret": secret}
                ),
            ),
            (
                422,
                await api.call(
                    "POST",
                    "/api/v1/app/mine/endpoint",
                    json={"url": ENDPOINT_URL, "secret": secret + "!"},
                ),
            ),
            (
                422,
                await api.call(
                    "POST",
                    "/api/v1/app/mine/endpoint",
                    json={"url": ENDPOINT_URL, "headers": {"Authorization": f"x\r\n{secret}"}},
                ),
            ),
            (
                422,
                await api.call("POST", rotate, json={"key": bad_token}),
            ),
        ]
        while (resp := await api.call("GET", "/api/v1/app/mine", portal)).status_code != 429:
            pass
        answers.append((429, resp))
    for status, resp in answers:
        assert resp.status_code == status, resp.text
        shown = resp.text + repr(resp.headers.multi_items())
        for value in (secret, secret.removeprefix("whsec_"), bad_token, portal, BOOTSTRAP):
            assert value not in shown, f"{status} answer leaks a credential: {shown}"


async def test_logs_never_contain_tokens_or_secrets(
    open_api: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    """Across a flow with secrets, rotation, portal tokens, failed auth, logout and a delivery
    attempt, no secret or token text reaches the logs, even at DEBUG."""
    caplog.set_level(logging.DEBUG)
    secret, rotated = generate_secret(), generate_secret()
    header_token = "sk_live_" + secrets.token_urlsafe(24)
    async with open_api() as api:
        org = await api.org_token()
        await api.make_app("shop")
        made = await api.call(
            "POST",
            "/api/v1/app/shop/endpoint",
            org,
            # blocked at send time (loopback is not allow-listed): an attempt without network
            json={
                "url": "http://127.0.0.1:9/hook",
                "secret": secret,
                "headers": {"Authorization": f"Bearer {header_token}"},
            },
        )
        assert made.status_code == 201, made.text
        ep = made.json()["id"]
        assert (await api.call("GET", f"/api/v1/app/shop/endpoint/{ep}/secret")).json() == {
            "key": secret
        }
        rotate = await api.call(
            "POST", f"/api/v1/app/shop/endpoint/{ep}/secret/rotate", json={"key": rotated}
        )
        assert rotate.status_code == 200, rotate.text
        portal = (await api.portal("shop", org))["token"]
        assert (await api.call("GET", "/api/v1/app/shop/endpoint", portal)).status_code == 200
        sent = await api.call(
            "POST", "/api/v1/app/shop/msg", portal, json={"eventType": "a.b", "payload": {}}
        )
        assert sent.status_code == 202, sent.text
        assert (await api.call("GET", "/api/v1/app", portal)).status_code == 403
        assert (await api.call("GET", "/api/v1/app", portal + "x")).status_code == 401
        worker = Worker(api.settings, api.storage, clock=api.clock, rng=random.Random(0))
        assert await worker.run_until_idle() == 1
        assert (await api.call("POST", "/api/v1/auth/logout", portal)).status_code == 204
        assert (await api.call("POST", "/api/v1/auth/logout", org)).status_code == 204
    assert caplog.records, "the flow logged nothing: the check would be vacuous"
    credentials = [secret, rotated, header_token, org, portal, BOOTSTRAP]
    credentials += [c.removeprefix("whsec_") for c in (secret, rotated)]
    leaking = sorted(
        {
            record.name
            for record in caplog.records
            if any(c in record.getMessage() for c in credentials)
        }
    )
    assert leaking == [], f"credentials logged by: {leaking}"
    assert not any(c in caplog.text for c in credentials)
