"""What the API does, end to end over HTTP: idempotency, upserts, paging, filters, schemas,
secrets and the routes around the resources (health, OpenAPI, unknown routes).

Most tests run on SQLite (``api``); the ones where the database matters (idempotency under
concurrency, unique keys) run on both backends (``any_api``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from homing.storage import Storage

MSG_BODY = {"eventType": "user.created", "payload": {"name": "Zo\u00eb", "n": 1}}


# -- helpers -----------------------------------------------------------------------------------


def error_code(resp: httpx.Response) -> str:
    """The ``code`` of an error answer, checking the ``{"code", "detail"}`` shape."""
    body = resp.json()
    assert set(body) == {"code", "detail"}, body
    assert isinstance(body["detail"], str), body
    code: str = body["code"]
    return code


def validation_items(resp: httpx.Response) -> list[dict[str, Any]]:
    """The items of a 422, checking the ``{"detail": [{"loc", "msg", "type"}]}`` shape."""
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], list), (
        f"422 is not the validation shape: {body}"
    )
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["loc"], list) and isinstance(item["msg"], str), item
    items: list[dict[str, Any]] = body["detail"]
    return items


def validation_messages(resp: httpx.Response) -> list[str]:
    """The ``msg``s of a 422 in the validation shape."""
    return [str(item["msg"]) for item in validation_items(resp)]


async def make_app(api: httpx.AsyncClient, uid: str, name: str = "App") -> dict[str, Any]:
    r = await api.post("/api/v1/app", json={"name": name, "uid": uid})
    assert r.status_code == 201, r.text
    found: dict[str, Any] = r.json()
    return found


async def post_message(
    api: httpx.AsyncClient, app: str, body: dict[str, Any] | None = None, **kwargs: Any
) -> httpx.Response:
    return await api.post(f"/api/v1/app/{app}/msg", json=body or MSG_BODY, **kwargs)


async def message_ids(api: httpx.AsyncClient, app: str, **params: Any) -> list[str]:
    r = await api.get(f"/api/v1/app/{app}/msg", params={"limit": 250, **params})
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


# -- Idempotency-Key ---------------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer(any_api: httpx.AsyncClient) -> None:
    """The same key, token and path get the identical status and body, and one message only."""
    await make_app(any_api, "idem")
    key = {"Idempotency-Key": "key-1"}
    first = await post_message(any_api, "idem", headers=key)
    again = await post_message(any_api, "idem", headers=key)
    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again.json()["payload"] == MSG_BODY["payload"]
    assert await message_ids(any_api, "idem") == [first.json()["id"]]


async def test_different_idempotency_keys_create_different_messages(
    api: httpx.AsyncClient,
) -> None:
    """Another key is another request: a second message is created."""
    await make_app(api, "idem")
    one = await post_message(api, "idem", headers={"Idempotency-Key": "key-1"})
    two = await post_message(api, "idem", headers={"Idempotency-Key": "key-2"})
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] != two.json()["id"]
    assert sorted(await message_ids(api, "idem")) == sorted([one.json()["id"], two.json()["id"]])


async def test_requests_without_idempotency_key_are_not_deduplicated(
    api: httpx.AsyncClient,
) -> None:
    """Without the header every POST creates a message."""
    await make_app(api, "idem")
    for _ in range(3):
        assert (await post_message(api, "idem")).status_code == 202
    assert len(await message_ids(api, "idem")) == 3


async def test_same_idempotency_key_on_another_path_is_independent(
    api: httpx.AsyncClient,
) -> None:
    """The key is scoped to the path: the same key on another application creates a message."""
    await make_app(api, "idem-a")
    await make_app(api, "idem-b")
    key = {"Idempotency-Key": "shared"}
    a = await post_message(api, "idem-a", headers=key)
    b = await post_message(api, "idem-b", headers=key)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]
    assert await message_ids(api, "idem-a") == [a.json()["id"]]
    assert await message_ids(api, "idem-b") == [b.json()["id"]]


async def test_same_idempotency_key_with_another_token_is_independent(
    api: httpx.AsyncClient,
) -> None:
    """The key is scoped to the token: another token of the same organisation is not replayed."""
    await make_app(api, "idem")
    storage: Storage = api.storage  # type: ignore[attr-defined]
    await storage.create_token("second-token", "org_default", None, datetime.now(UTC), None)
    key = {"Idempotency-Key": "shared"}
    one = await post_message(api, "idem", headers=key)
    two = await post_message(api, "idem", headers={**key, "Authorization": "Bearer second-token"})
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] != two.json()["id"]
    assert len(await message_ids(api, "idem")) == 2


async def test_concurrent_requests_with_one_idempotency_key_create_one_message(
    any_api: httpx.AsyncClient,
) -> None:
    """Ten simultaneous POSTs with the same key create exactly one message; all answer alike."""
    await make_app(any_api, "idem")
    key = {"Idempotency-Key": "race"}
    answers = await asyncio.gather(*(post_message(any_api, "idem", headers=key) for _ in range(10)))
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
    assert len({r.content for r in answers}) == 1
    assert await message_ids(any_api, "idem") == [answers[0].json()["id"]]


async def test_idempotency_key_replays_an_app_create(api: httpx.AsyncClient) -> None:
    """Idempotency covers every POST: a replayed app create answers 201 and creates one app."""
    key = {"Idempotency-Key": "app-1"}
    first = await api.post("/api/v1/app", json={"name": "Once"}, headers=key)
    again = await api.post("/api/v1/app", json={"name": "Once"}, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    listed = (await api.get("/api/v1/app")).json()["data"]
    assert [a["id"] for a in listed] == [first.json()["id"]]


# -- create-or-get and upserts -----------------------------------------------------------------


async def test_app_create_with_taken_uid_is_409_unless_get_if_exists(
    any_api: httpx.AsyncClient,
) -> None:
    """A taken uid is 409 conflict; with get_if_exists=true the existing app comes back (200)."""
    made = await make_app(any_api, "dup", name="First")
    r = await any_api.post("/api/v1/app", json={"name": "Second", "uid": "dup"})
    assert r.status_code == 409
    assert error_code(r) == "conflict"
    got = await any_api.post(
        "/api/v1/app", params={"get_if_exists": "true"}, json={"name": "Second", "uid": "dup"}
    )
    assert got.status_code == 200, got.text
    assert got.json()["id"] == made["id"]
    assert got.json()["name"] == "First"
    fresh = await any_api.post(
        "/api/v1/app", params={"get_if_exists": "true"}, json={"name": "New", "uid": "new"}
    )
    assert fresh.status_code == 201
    assert fresh.json()["id"] != made["id"]


async def test_app_put_creates_with_201_then_updates_with_200(api: httpx.AsyncClient) -> None:
    """PUT on an unknown app creates it (201, uid = the path), and then replaces it (200)."""
    created = await api.put("/api/v1/app/put-me", json={"name": "One"})
    assert created.status_code == 201, created.text
    assert created.json()["uid"] == "put-me"
    updated = await api.put("/api/v1/app/put-me", json={"name": "Two", "uid": "put-me"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["name"] == "Two"
    assert (await api.get("/api/v1/app/put-me")).json()["name"] == "Two"


async def test_endpoint_put_creates_with_201_then_updates_with_200(api: httpx.AsyncClient) -> None:
    """PUT on an unknown endpoint creates it (201, uid = the path), then replaces it (200)."""
    await make_app(api, "owner")
    path = "/api/v1/app/owner/endpoint/ep-put"
    created = await api.put(path, json={"url": "https://one.example/hook"})
    assert created.status_code == 201, created.text
    assert created.json()["uid"] == "ep-put"
    updated = await api.put(path, json={"url": "https://two.example/hook", "uid": "ep-put"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == created.json()["id"]
    assert (await api.get(path)).json()["url"] == "https://two.example/hook"


async def test_event_type_put_creates_with_201_then_updates_with_200(
    api: httpx.AsyncClient,
) -> None:
    """PUT on an unknown event type creates it (201), then replaces it (200)."""
    created = await api.put("/api/v1/event-type/user.created", json={"description": "one"})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "user.created"
    updated = await api.put("/api/v1/event-type/user.created", json={"description": "two"})
    assert updated.status_code == 200, updated.text
    assert (await api.get("/api/v1/event-type/user.created")).json()["description"] == "two"


# -- pagination --------------------------------------------------------------------------------


async def walk(api: httpx.AsyncClient, path: str, limit: int) -> list[dict[str, Any]]:
    """Every page of ``path``, following ``iterator`` until ``done``."""
    pages: list[dict[str, Any]] = []
    iterator = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if iterator is not None:
            params["iterator"] = iterator
        r = await api.get(path, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"data", "iterator", "prevIterator", "done"}, page
        pages.append(page)
        if page["done"]:
            return pages
        assert len(pages) < 20, "pagination does not end"
        iterator = page["iterator"]


async def test_applications_paginate_forward_and_back(api: httpx.AsyncClient) -> None:
    """limit/iterator walk every app once in id order; prevIterator returns the page before."""
    ids = [(await make_app(api, f"page-{i}"))["id"] for i in range(5)]
    pages = await walk(api, "/api/v1/app", 2)
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert [p["done"] for p in pages] == [False, False, True]
    seen = [a["id"] for p in pages for a in p["data"]]
    assert seen == sorted(ids)
    assert pages[0]["iterator"] == seen[1]
    back = await api.get("/api/v1/app", params={"limit": 2, "iterator": pages[2]["prevIterator"]})
    assert back.status_code == 200
    assert [a["id"] for a in back.json()["data"]] == seen[2:4]


async def test_exact_multiple_of_limit_ends_with_done(api: httpx.AsyncClient) -> None:
    """With 4 apps and limit 2 the second page is already done (no empty third page)."""
    for i in range(4):
        await make_app(api, f"even-{i}")
    pages = await walk(api, "/api/v1/app", 2)
    assert [len(p["data"]) for p in pages] == [2, 2]
    assert pages[-1]["done"] is True


async def test_empty_list_is_done(api: httpx.AsyncClient) -> None:
    """No applications: an empty page that is done."""
    r = await api.get("/api/v1/app")
    assert r.status_code == 200
    assert r.json()["data"] == [] and r.json()["done"] is True


async def test_messages_paginate_newest_first(api: httpx.AsyncClient) -> None:
    """Messages list newest (highest id) first, page by page, and prevIterator goes back."""
    await make_app(api, "pager")
    ids = [(await post_message(api, "pager")).json()["id"] for _ in range(5)]
    pages = await walk(api, "/api/v1/app/pager/msg", 2)
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert [p["done"] for p in pages] == [False, False, True]
    seen = [m["id"] for p in pages for m in p["data"]]
    assert seen == sorted(ids, reverse=True)
    back = await api.get(
        "/api/v1/app/pager/msg", params={"limit": 2, "iterator": pages[1]["prevIterator"]}
    )
    assert [m["id"] for m in back.json()["data"]] == seen[0:2]


# -- message listing filters -------------------------------------------------------------------


async def test_message_list_filters_by_event_types_repeated_and_comma_separated(
    api: httpx.AsyncClient,
) -> None:
    """event_types works as repeated parameters and as one comma-separated value."""
    await make_app(api, "filt")
    ids = {}
    for kind in ("a.one", "b.two", "c.three"):
        r = await post_message(api, "filt", {"eventType": kind, "payload": {}})
        ids[kind] = r.json()["id"]
    want = sorted([ids["a.one"], ids["b.two"]])
    repeated = await api.get(
        "/api/v1/app/filt/msg", params=[("event_types", "a.one"), ("event_types", "b.two")]
    )
    assert sorted(m["id"] for m in repeated.json()["data"]) == want
    comma = await api.get("/api/v1/app/filt/msg", params={"event_types": "a.one,b.two"})
    assert sorted(m["id"] for m in comma.json()["data"]) == want
    single = await message_ids(api, "filt", event_types="c.three")
    assert single == [ids["c.three"]]
    assert await message_ids(api, "filt", event_types="d.none") == []


async def test_message_list_filters_by_channel_exactly(api: httpx.AsyncClient) -> None:
    """channel=X lists the messages sent on channel X, and only an exact match counts."""
    await make_app(api, "chan")
    on_one = (await post_message(api, "chan", {**MSG_BODY, "channels": ["ch1"]})).json()["id"]
    on_both = (await post_message(api, "chan", {**MSG_BODY, "channels": ["ch2", "ch1"]})).json()[
        "id"
    ]
    await post_message(api, "chan", {**MSG_BODY, "channels": ["ch2"]})
    await post_message(api, "chan")
    assert sorted(await message_ids(api, "chan", channel="ch1")) == sorted([on_one, on_both])
    assert await message_ids(api, "chan", channel="ch") == []
    assert len(await message_ids(api, "chan")) == 4


async def test_message_list_filters_by_before_and_after(api: httpx.AsyncClient) -> None:
    """before and after are exclusive bounds on the message timestamp."""
    await make_app(api, "time")
    made = []
    for _ in range(3):
        made.append((await post_message(api, "time")).json())
        await asyncio.sleep(0.002)
    first, second, third = made
    assert await message_ids(api, "time", before=second["timestamp"]) == [first["id"]]
    assert await message_ids(api, "time", after=second["timestamp"]) == [third["id"]]
    both = await message_ids(api, "time", after=first["timestamp"], before=third["timestamp"])
    assert both == [second["id"]]
    assert await message_ids(api, "time", before="2000-01-01T00:00:00Z") == []


async def test_message_get_by_event_id(api: httpx.AsyncClient) -> None:
    """A message can be fetched by its eventId as well as by its id."""
    await make_app(api, "evid")
    made = (await post_message(api, "evid", {**MSG_BODY, "eventId": "evt-42"})).json()
    by_event = await api.get("/api/v1/app/evid/msg/evt-42")
    assert by_event.status_code == 200
    assert by_event.json() == made
    assert (await api.get(f"/api/v1/app/evid/msg/{made['id']}")).json() == made


async def test_with_content_false_hides_the_payload(api: httpx.AsyncClient) -> None:
    """with_content=false answers payload {} on create, get and list; the payload is kept."""
    await make_app(api, "quiet")
    created = await post_message(api, "quiet", params={"with_content": "false"})
    assert created.status_code == 202
    assert created.json()["payload"] == {}
    path = f"/api/v1/app/quiet/msg/{created.json()['id']}"
    assert (await api.get(path, params={"with_content": "false"})).json()["payload"] == {}
    listed = await api.get("/api/v1/app/quiet/msg", params={"with_content": "false"})
    assert [m["payload"] for m in listed.json()["data"]] == [{}]
    assert (await api.get(path)).json()["payload"] == MSG_BODY["payload"]


async def test_message_with_application_creates_the_app_with_the_path_uid(
    api: httpx.AsyncClient,
) -> None:
    """A message to an unknown app that carries ``application`` creates it with uid = path."""
    body = {**MSG_BODY, "application": {"name": "Made on the fly"}}
    r = await post_message(api, "fly-uid", body)
    assert r.status_code == 202, r.text
    app = await api.get("/api/v1/app/fly-uid")
    assert app.status_code == 200
    assert app.json()["uid"] == "fly-uid"
    assert app.json()["name"] == "Made on the fly"
    again = await post_message(api, "fly-uid", body)
    assert again.status_code == 202
    assert len((await api.get("/api/v1/app")).json()["data"]) == 1
    assert len(await message_ids(api, "fly-uid")) == 2


async def test_message_to_unknown_app_without_application_is_404(api: httpx.AsyncClient) -> None:
    """Without ``application`` a message to an unknown app is 404 and creates nothing."""
    r = await post_message(api, "nobody")
    assert r.status_code == 404
    assert error_code(r) == "not_found"
    assert (await api.get("/api/v1/app")).json()["data"] == []


async def test_duplicate_event_id_is_409_conflict(any_api: httpx.AsyncClient) -> None:
    """A second message with the same eventId in the same app is 409 conflict."""
    await make_app(any_api, "dupe")
    await make_app(any_api, "other")
    body = {**MSG_BODY, "eventId": "once"}
    assert (await post_message(any_api, "dupe", body)).status_code == 202
    again = await post_message(any_api, "dupe", body)
    assert again.status_code == 409
    assert error_code(again) == "conflict"
    assert len(await message_ids(any_api, "dupe")) == 1
    assert (await post_message(any_api, "other", body)).status_code == 202


# -- event type schemas ------------------------------------------------------------------------

USER_SCHEMA = {
    "type": "object",
    "properties": {
        "user": {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"],
        }
    },
    "required": ["user"],
}


async def test_payload_violating_the_schema_is_422_naming_the_path(
    api: httpx.AsyncClient,
) -> None:
    """A payload that breaks its event type's schema is a 422 whose message names the path."""
    await make_app(api, "schema")
    r = await api.post(
        "/api/v1/event-type",
        json={"name": "user.created", "description": "d", "schemas": {"1": USER_SCHEMA}},
    )
    assert r.status_code == 201, r.text
    good = await post_message(
        api, "schema", {"eventType": "user.created", "payload": {"user": {"id": 7}}}
    )
    assert good.status_code == 202
    bad = await post_message(
        api, "schema", {"eventType": "user.created", "payload": {"user": {"id": "seven"}}}
    )
    items = validation_items(bad)
    named = [i for i in items if i["loc"][-2:] == ["user", "id"] or "user/id" in i["msg"]]
    assert named, f"no error names the path user/id: {items}"
    assert len(await message_ids(api, "schema")) == 1


async def test_newest_schema_version_is_the_one_enforced(api: httpx.AsyncClient) -> None:
    """With schema versions 1 and 2, a payload is checked against version 2."""
    await make_app(api, "versions")
    v2 = {"type": "object", "required": ["email"]}
    await api.post(
        "/api/v1/event-type",
        json={"name": "user.created", "description": "d", "schemas": {"1": USER_SCHEMA, "2": v2}},
    )
    ok = await post_message(
        api, "versions", {"eventType": "user.created", "payload": {"email": "x"}}
    )
    assert ok.status_code == 202, ok.text
    bad = await post_message(
        api, "versions", {"eventType": "user.created", "payload": {"user": {"id": 1}}}
    )
    assert bad.status_code == 422


async def test_archived_event_type_still_accepts_messages(api: httpx.AsyncClient) -> None:
    """DELETE archives an event type; messages of it are still accepted (and still checked)."""
    await make_app(api, "arch")
    await api.post(
        "/api/v1/event-type",
        json={"name": "user.created", "description": "d", "schemas": {"1": USER_SCHEMA}},
    )
    assert (await api.delete("/api/v1/event-type/user.created")).status_code == 204
    got = await api.get("/api/v1/event-type/user.created")
    assert got.json()["archived"] is True
    listed = await api.get("/api/v1/event-type")
    assert listed.json()["data"] == []
    with_archived = await api.get("/api/v1/event-type", params={"include_archived": "true"})
    assert [e["name"] for e in with_archived.json()["data"]] == ["user.created"]
    ok = await post_message(
        api, "arch", {"eventType": "user.created", "payload": {"user": {"id": 1}}}
    )
    assert ok.status_code == 202, ok.text
    bad = await post_message(api, "arch", {"eventType": "user.created", "payload": {}})
    assert bad.status_code == 422


BROKEN_REFS = [
    pytest.param({"$ref": "#/definitions/missing"}, id="dangling-local-ref"),
    pytest.param({"$ref": "https://schemas.invalid/user.json"}, id="remote-ref"),
    pytest.param(
        {"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}}, id="nested-relative-ref"
    ),
]


@pytest.mark.parametrize("schema", BROKEN_REFS)
async def test_schema_with_unresolvable_ref_is_refused_when_saved(
    api: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    """A schema whose $ref cannot be resolved (Homing never fetches) is refused with 422."""
    r = await api.post(
        "/api/v1/event-type",
        json={"name": "ref.type", "description": "d", "schemas": {"1": schema}},
    )
    assert r.status_code == 422, f"a schema with an unresolvable $ref was stored: {r.status_code}"
    validation_messages(r)


@pytest.mark.parametrize("schema", BROKEN_REFS)
async def test_message_of_a_type_with_a_broken_ref_is_never_a_500(
    api: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    """If such a schema is stored anyway (by PUT or PATCH too), its messages get a 4xx, not 500."""
    await make_app(api, "refs")
    await api.put("/api/v1/event-type/ref.type", json={"description": "d"})
    await api.patch("/api/v1/event-type/ref.type", json={"schemas": {"1": schema}})
    r = await post_message(api, "refs", {"eventType": "ref.type", "payload": {"a": 1}})
    assert r.status_code in (202, 422), r.text
    if r.status_code == 422:
        validation_messages(r)


# -- deletes and secrets -----------------------------------------------------------------------


async def test_deleted_app_takes_its_messages_with_it(api: httpx.AsyncClient) -> None:
    """After DELETE of an app, the app, its messages and its endpoints answer 404."""
    await make_app(api, "doomed")
    msg = (await post_message(api, "doomed")).json()
    await api.post("/api/v1/app/doomed/endpoint", json={"url": "https://x.example/", "uid": "ep"})
    assert (await api.delete("/api/v1/app/doomed")).status_code == 204
    for path in (
        "/api/v1/app/doomed",
        f"/api/v1/app/doomed/msg/{msg['id']}",
        "/api/v1/app/doomed/msg",
        "/api/v1/app/doomed/endpoint/ep",
    ):
        r = await api.get(path)
        assert r.status_code == 404, (path, r.text)
        assert error_code(r) == "not_found"
    again = await make_app(api, "doomed")
    assert await message_ids(api, again["id"]) == []


async def test_secret_rotation_returns_a_new_key_each_time(api: httpx.AsyncClient) -> None:
    """Each rotation returns a fresh whsec_ key that GET secret then shows."""
    await make_app(api, "keys")
    base = "/api/v1/app/keys/endpoint/ep"
    await api.post("/api/v1/app/keys/endpoint", json={"url": "https://x.example/", "uid": "ep"})
    original = (await api.get(f"{base}/secret")).json()["key"]
    keys = [original]
    for _ in range(3):
        r = await api.post(f"{base}/secret/rotate")
        assert r.status_code == 200, r.text
        key = r.json()["key"]
        assert key.startswith("whsec_")
        assert key not in keys
        keys.append(key)
        assert (await api.get(f"{base}/secret")).json()["key"] == key
    chosen = "whsec_" + "C" * 32
    r = await api.post(f"{base}/secret/rotate", json={"key": chosen})
    assert r.json() == {"key": chosen}
    assert (await api.get(f"{base}/secret")).json()["key"] == chosen


# -- the routes around the resources -----------------------------------------------------------


async def test_openapi_document_lists_the_api(api: httpx.AsyncClient) -> None:
    """GET /api/v1/openapi.json is a valid OpenAPI document listing /api/v1/app."""
    r = await api.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = json.loads(r.text)
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/app" in doc["paths"]
    assert "post" in doc["paths"]["/api/v1/app/{app_id}/msg"]


async def test_health_is_204(api: httpx.AsyncClient) -> None:
    """GET /api/v1/health answers 204 No Content when the database answers."""
    r = await api.get("/api/v1/health")
    assert r.status_code == 204
    assert r.content == b""


async def test_unknown_route_is_404_json(api: httpx.AsyncClient) -> None:
    """A route that does not exist answers 404 in the error shape."""
    for path in ("/api/v1/nothing", "/api/v2/app", "/api/v1/app/x/y/z/w"):
        r = await api.get(path)
        assert r.status_code == 404, path
        assert error_code(r) == "not_found"


async def test_wrong_method_is_405_json(api: httpx.AsyncClient) -> None:
    """A known route called with a method it does not take answers 405 in the error shape."""
    for method, path in (
        ("DELETE", "/api/v1/app"),
        ("PUT", "/api/v1/app/x/msg"),
        ("POST", "/api/v1/health"),
    ):
        r = await api.request(method, path)
        assert r.status_code == 405, (method, path, r.status_code)
        assert error_code(r) == "method_not_allowed"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Basic dG9rOg==", "Bearer ", "tok"],
    ids=["missing", "wrong-token", "basic", "empty-bearer", "no-scheme"],
)
async def test_bad_credentials_are_401(api: httpx.AsyncClient, authorization: str | None) -> None:
    """A missing, wrong or malformed Authorization header is 401 authentication_failed."""
    headers = {} if authorization is None else {"Authorization": authorization}
    transport = httpx.ASGITransport(app=api.app)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url=api.base_url) as bare:
        r = await bare.get("/api/v1/app", headers=headers)
    assert r.status_code == 401
    assert error_code(r) == "authentication_failed"


async def test_ed25519_endpoint_shows_only_its_public_key(api) -> None:
    """An endpoint created with keyType ed25519 hands out a whpk_ public key, never the
    signing key, and rotation keeps the kind."""
    app = (await api.post("/api/v1/app", json={"name": "ed"})).json()
    ep = await api.post(
        f"/api/v1/app/{app['id']}/endpoint",
        json={"url": "https://receiver.example/hook", "keyType": "ed25519"},
    )
    assert ep.status_code == 201, ep.text
    path = f"/api/v1/app/{app['id']}/endpoint/{ep.json()['id']}/secret"
    first = (await api.get(path)).json()["key"]
    assert first.startswith("whpk_")
    rotated = (await api.post(path + "/rotate", json={})).json()["key"]
    assert rotated.startswith("whpk_") and rotated != first
    assert (await api.get(path)).json()["key"] == rotated
    stored = await api.storage.get_endpoint(app["id"], ep.json()["id"])
    assert stored.secrets[0].key.startswith("whsk_")


async def test_invalid_secret_is_refused_without_echo(api) -> None:
    """A secret that cannot sign (wrong length) is a 422 that does not repeat it."""
    app = (await api.post("/api/v1/app", json={"name": "bad-secret"})).json()
    thirty = "whsec_" + "A" * 40  # 30 key bytes
    minimum = "whsec_" + "QUFB" * 8  # 24 key bytes, the least a secret may hold
    too_long = "whsec_" + "QUFB" * 26  # 78 key bytes, more than the 75 allowed
    for good in (thirty, minimum):
        ok = await api.post(
            f"/api/v1/app/{app['id']}/endpoint",
            json={"url": "https://receiver.example/hook", "secret": good},
        )
        assert ok.status_code == 201, ok.text
    bad = await api.post(
        f"/api/v1/app/{app['id']}/endpoint",
        json={"url": "https://receiver.example/hook", "secret": too_long},
    )
    assert bad.status_code == 422
    assert too_long not in bad.text


async def test_catastrophic_pattern_is_matched_in_linear_time(api) -> None:
    """A schema pattern that makes backtracking engines explode (^(a+)+$) is checked quickly,
    so no tenant can stall the process through its event types."""
    import time

    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
    made = await api.post(
        "/api/v1/event-type", json={"name": "redos", "description": "d", "schemas": {"1": schema}}
    )
    assert made.status_code == 201, made.text
    app = (await api.post("/api/v1/app", json={"name": "redos"})).json()
    started = time.monotonic()
    refused = await api.post(
        f"/api/v1/app/{app['id']}/msg",
        json={"eventType": "redos", "payload": {"s": "a" * 5000 + "!"}},
    )
    assert refused.status_code == 422
    assert time.monotonic() - started < 2.0
    accepted = await api.post(
        f"/api/v1/app/{app['id']}/msg", json={"eventType": "redos", "payload": {"s": "aaa"}}
    )
    assert accepted.status_code == 202


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string", "pattern": "(a)\\1"}, "backreferences"),
        ({"properties": {"x": {"pattern": "(?=a)a"}}}, "lookaround"),
        ({"$ref": "#"}, "itself"),
    ],
)
async def test_schemas_that_cannot_run_safely_are_refused(api, schema, words) -> None:
    """Patterns RE2 cannot run and $ref loops are refused when the event type is saved."""
    response = await api.post(
        "/api/v1/event-type", json={"name": "unsafe", "description": "d", "schemas": {"1": schema}}
    )
    assert response.status_code == 422, response.text
    assert words in response.text
