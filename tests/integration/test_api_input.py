"""Bad input never gets a 500: every case answers 4xx in the documented JSON shape.

Errors are ``{"code": str, "detail": str}``; validation errors are 422
``{"detail": [{"loc": [...], "msg": str, "type": str}]}``. Every case runs on SQLite and on
PostgreSQL (some bugs, such as NUL characters in TEXT, only show there). The cases share one
database per backend (made once per module from ``pg_template``, the factory behind
``fresh_pg_url``: a fresh database per case would cost a third of a second each) holding one
application, endpoint, event type and message; a case that must create something uses names
of its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP = "known-app"
EP = "known-ep"
ET = "known.type"
EVENT_ID = "known-event"
GOOD_SECRET = "whsec_" + "A" * 40
BAD_SECRET = "whsec_!!!secret-that-must-not-leak!!!"

APP_PATH = f"/api/v1/app/{APP}"
EP_PATH = f"{APP_PATH}/endpoint/{EP}"


@dataclass
class Known:
    """The shared client and the ids of what its database holds."""

    client: httpx.AsyncClient
    msg_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def known(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    api_factory: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> AsyncIterator[Known]:
    """A client on a database (per backend) with one app, endpoint, event type and message."""
    if request.param == "sqlite":
        url = "sqlite:///" + str(tmp_path_factory.mktemp("input") / "homing.db")
        cleanup = None
    else:
        template = request.getfixturevalue("pg_template")
        url = template.copy()
        cleanup = template
    try:
        async with api_factory(url) as client:
            r = await client.post("/api/v1/app", json={"name": "Known", "uid": APP})
            assert r.status_code == 201, r.text
            r = await client.post(
                f"{APP_PATH}/endpoint",
                json={"url": "https://receiver.example/hook", "uid": EP, "secret": GOOD_SECRET},
            )
            assert r.status_code == 201, r.text
            r = await client.post("/api/v1/event-type", json={"name": ET, "description": "d"})
            assert r.status_code == 201, r.text
            r = await client.post(
                f"{APP_PATH}/msg", json={"eventType": ET, "eventId": EVENT_ID, "payload": {}}
            )
            assert r.status_code == 202, r.text
            yield Known(client=client, msg_id=r.json()["id"])
    finally:
        if cleanup is not None:
            cleanup.drop(url)


# -- the documented shapes ---------------------------------------------------------------------


def assert_error_shape(resp: httpx.Response) -> None:
    """422: ``{"detail": [{"loc", "msg", "type"}, ...]}``; other errors ``{"code", "detail"}``."""
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict), body
    if resp.status_code == 422:
        assert set(body) == {"detail"}, f"422 is not the validation shape: {body}"
        assert isinstance(body["detail"], list) and body["detail"], body
        for item in body["detail"]:
            assert set(item) == {"loc", "msg", "type"}, item
            assert isinstance(item["loc"], list), item
            assert isinstance(item["msg"], str) and isinstance(item["type"], str), item
    else:
        assert set(body) == {"code", "detail"}, body
        assert isinstance(body["code"], str) and isinstance(body["detail"], str), body


def check(resp: httpx.Response, expected: int | tuple[int, ...], code: str | None = None) -> None:
    """The status is one of ``expected`` and, for errors, the body has the documented shape."""
    allowed = (expected,) if isinstance(expected, int) else expected
    assert resp.status_code in allowed, (
        f"{resp.request.method} {resp.request.url.raw_path.decode()}: "
        f"expected {allowed}, got {resp.status_code}: {resp.text[:500]}"
    )
    if resp.status_code >= 400:
        assert_error_shape(resp)
        if code is not None:
            assert resp.json()["code"] == code


# -- table-driven cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request and the status (or statuses) it must get."""

    method: str
    path: str
    body: Any = None  # a JSON value, sent with ``json=``
    raw: bytes | None = None  # sent as is, as application/json
    expect: int | tuple[int, ...] = 422

    async def send(self, client: httpx.AsyncClient) -> httpx.Response:
        if self.raw is not None:
            return await client.request(
                self.method,
                self.path,
                content=self.raw,
                headers={"content-type": "application/json"},
            )
        if self.body is None:
            return await client.request(self.method, self.path)
        return await client.request(self.method, self.path, json=self.body)


ROUTES = {
    "app.create": ("POST", "/api/v1/app"),
    "app.update": ("PUT", APP_PATH),
    "app.patch": ("PATCH", APP_PATH),
    "endpoint.create": ("POST", f"{APP_PATH}/endpoint"),
    "endpoint.update": ("PUT", EP_PATH),
    "endpoint.patch": ("PATCH", EP_PATH),
    "event-type.create": ("POST", "/api/v1/event-type"),
    "event-type.update": ("PUT", f"/api/v1/event-type/{ET}"),
    "event-type.patch": ("PATCH", f"/api/v1/event-type/{ET}"),
    "message.create": ("POST", f"{APP_PATH}/msg"),
    "headers.put": ("PUT", f"{EP_PATH}/headers"),
    "headers.patch": ("PATCH", f"{EP_PATH}/headers"),
    "secret.rotate": ("POST", f"{EP_PATH}/secret/rotate"),
    "recover": ("POST", f"{EP_PATH}/recover"),
}

# bodies that are wrong for every route (rotate's body is optional: empty or null is fine)
BAD_BODIES: dict[str, tuple[bytes, int | tuple[int, ...]]] = {
    "malformed": (b'{"name": ', 422),
    "trailing-garbage": (b"{} x", 422),
    "single-quotes": (b"{'name': 'x'}", 422),
    "raw-control-char": (b'{"name": "a\x01b"}', 422),
    "invalid-utf8": (b'{"name": "\xff\xfe"}', (400, 422)),
    "empty": (b"", 422),
    "array": (b"[]", 422),
    "array-of-object": (b'[{"name": "x"}]', 422),
    "string": (b'"x"', 422),
    "number": (b"1", 422),
    "null": (b"null", 422),
    "nested-10000": (b"[" * 10_000 + b"]" * 10_000, (400, 422)),
}
OPTIONAL_BODY = {("secret.rotate", "empty"): 200, ("secret.rotate", "null"): 200}


def _generic_cases() -> Iterator[Any]:
    for route, (method, path) in ROUTES.items():
        for name, (raw, expect) in BAD_BODIES.items():
            expect = OPTIONAL_BODY.get((route, name), expect)
            yield pytest.param(Case(method, path, raw=raw, expect=expect), id=f"{route}-{name}")


@pytest.mark.parametrize("case", list(_generic_cases()))
async def test_unusable_body_is_refused(known: Known, case: Case) -> None:
    """A body that is not a JSON object of the route's shape gets a 4xx, never a 500."""
    check(await case.send(known.client), case.expect)


def _nest(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


URL = "https://receiver.example/hook"
MSG = f"{APP_PATH}/msg"
EPS = f"{APP_PATH}/endpoint"
ETS = "/api/v1/event-type"

FIELD_CASES: dict[str, Case] = {
    # wrong types
    "app-name-int": Case("POST", "/api/v1/app", {"name": 123}),
    "app-name-null": Case("POST", "/api/v1/app", {"name": None}),
    "app-name-missing": Case("POST", "/api/v1/app", {"uid": "x"}),
    "app-name-empty": Case("POST", "/api/v1/app", {"name": ""}),
    "app-uid-int": Case("POST", "/api/v1/app", {"name": "n", "uid": 5}),
    "app-metadata-list": Case("POST", "/api/v1/app", {"name": "n", "metadata": ["a"]}),
    "app-metadata-int-value": Case("POST", "/api/v1/app", {"name": "n", "metadata": {"k": 1}}),
    "app-throttle-string": Case("POST", "/api/v1/app", {"name": "n", "throttleRate": "fast"}),
    "app-throttle-zero": Case("POST", "/api/v1/app", {"name": "n", "throttleRate": 0}),
    "app-throttle-1e400": Case("POST", "/api/v1/app", raw=b'{"name": "n", "throttleRate": 1e400}'),
    "app-patch-name-int": Case("PATCH", APP_PATH, {"name": 1}),
    "endpoint-url-true": Case("POST", EPS, {"url": True}),
    "endpoint-url-missing": Case("POST", EPS, {"description": "d"}),
    "endpoint-event-types-string": Case("POST", EPS, {"url": URL, "eventTypes": "a"}),
    "endpoint-channels-too-many": Case("POST", EPS, {"url": URL, "channels": list("abcdefghijk")}),
    "endpoint-disabled-string": Case("POST", EPS, {"url": URL, "disabled": "maybe"}),
    "endpoint-headers-list": Case("POST", EPS, {"url": URL, "headers": ["X-A"]}),
    "endpoint-put-url-int": Case("PUT", EP_PATH, {"url": 1}),
    "endpoint-patch-url-true": Case("PATCH", EP_PATH, {"url": True}),
    "event-type-description-int": Case("POST", ETS, {"name": "a.b", "description": 5}),
    "event-type-name-list": Case("POST", ETS, {"name": ["a"], "description": "d"}),
    "event-type-schemas-list": Case(
        "POST", ETS, {"name": "a.c", "description": "d", "schemas": []}
    ),
    "event-type-schema-not-object": Case(
        "POST", ETS, {"name": "a.d", "description": "d", "schemas": {"1": "string"}}
    ),
    "event-type-schema-invalid": Case(
        "POST", ETS, {"name": "a.e", "description": "d", "schemas": {"1": {"type": "bogus"}}}
    ),
    "event-type-put-description-missing": Case("PUT", f"{ETS}/{ET}", {"archived": True}),
    "message-event-type-int": Case("POST", MSG, {"eventType": 1, "payload": {}}),
    "message-event-type-missing": Case("POST", MSG, {"payload": {}}),
    "message-payload-missing": Case("POST", MSG, {"eventType": ET}),
    "message-channels-string": Case("POST", MSG, {"eventType": ET, "payload": {}, "channels": "c"}),
    "message-channels-empty": Case("POST", MSG, {"eventType": ET, "payload": {}, "channels": []}),
    "message-application-string": Case(
        "POST", MSG, {"eventType": ET, "payload": {}, "application": "x"}
    ),
    "headers-list": Case("PUT", f"{EP_PATH}/headers", {"headers": ["a"]}),
    "headers-int-value": Case("PUT", f"{EP_PATH}/headers", {"headers": {"X-A": 1}}),
    "headers-missing": Case("PUT", f"{EP_PATH}/headers", {}),
    "rotate-key-int": Case("POST", f"{EP_PATH}/secret/rotate", {"key": 5}),
    "rotate-grace-negative": Case("POST", f"{EP_PATH}/secret/rotate", {"gracePeriodSeconds": -1}),
    "recover-since-missing": Case("POST", f"{EP_PATH}/recover", {}),
    "recover-since-bool": Case("POST", f"{EP_PATH}/recover", {"since": True}),
    "recover-since-notadate": Case("POST", f"{EP_PATH}/recover", {"since": "notadate"}),
    "recover-since-huge-number": Case("POST", f"{EP_PATH}/recover", {"since": 10**30}),
    "recover-until-notadate": Case(
        "POST", f"{EP_PATH}/recover", {"since": "2024-01-01T00:00:00Z", "until": "x"}
    ),
    # non-object payloads
    "payload-list": Case("POST", MSG, {"eventType": ET, "payload": [1, 2]}),
    "payload-string": Case("POST", MSG, {"eventType": ET, "payload": "text"}),
    "payload-number": Case("POST", MSG, {"eventType": ET, "payload": 42}),
    "payload-null": Case("POST", MSG, {"eventType": ET, "payload": None}),
    "payload-bool": Case("POST", MSG, {"eventType": ET, "payload": True}),
    # deep nesting
    "payload-nested-10000": Case(
        "POST",
        MSG,
        raw=f'{{"eventType": "{ET}", "payload": {_nest(10_000)}}}'.encode(),
        expect=(400, 422),
    ),
    "payload-nested-1000": Case(
        "POST",
        MSG,
        raw=f'{{"eventType": "{ET}", "payload": {_nest(1_000)}}}'.encode(),
        expect=(400, 422),
    ),
    "metadata-nested-10000": Case(
        "POST",
        "/api/v1/app",
        raw=f'{{"name": "n", "metadata": {_nest(10_000)}}}'.encode(),
        expect=(400, 422),
    ),
    "schema-nested-10000": Case(
        "POST",
        ETS,
        raw=f'{{"name": "deep", "description": "d", "schemas": {{"1": {_nest(10_000)}}}}}'.encode(),
        expect=(400, 422),
    ),
    # numbers json.loads reads but JSON cannot carry
    "payload-1e400": Case(
        "POST", MSG, raw=f'{{"eventType": "{ET}", "payload": {{"n": 1e400}}}}'.encode()
    ),
    "payload-minus-1e400": Case(
        "POST", MSG, raw=f'{{"eventType": "{ET}", "payload": {{"n": -1e400}}}}'.encode()
    ),
    "payload-NaN": Case(
        "POST", MSG, raw=f'{{"eventType": "{ET}", "payload": {{"n": NaN}}}}'.encode()
    ),
    "payload-Infinity": Case(
        "POST", MSG, raw=f'{{"eventType": "{ET}", "payload": {{"n": Infinity}}}}'.encode()
    ),
    "payload-5000-digit-int": Case(
        "POST",
        MSG,
        raw=f'{{"eventType": "{ET}", "payload": {{"n": {"9" * 5000}}}}}'.encode(),
        expect=(400, 422),
    ),
    # invalid uid / name patterns
    "app-uid-space": Case("POST", "/api/v1/app", {"name": "n", "uid": "has space"}),
    "app-uid-slash": Case("POST", "/api/v1/app", {"name": "n", "uid": "a/b"}),
    "app-uid-empty": Case("POST", "/api/v1/app", {"name": "n", "uid": ""}),
    "app-uid-too-long": Case("POST", "/api/v1/app", {"name": "n", "uid": "u" * 257}),
    "app-uid-unicode": Case("POST", "/api/v1/app", {"name": "n", "uid": "caf\u00e9"}),
    "endpoint-uid-space": Case("POST", EPS, {"url": URL, "uid": "a b"}),
    "event-type-name-space": Case("POST", ETS, {"name": "a b", "description": "d"}),
    "event-type-feature-flag-space": Case(
        "POST", ETS, {"name": "a.f", "description": "d", "featureFlag": "a b"}
    ),
    "message-event-type-space": Case("POST", MSG, {"eventType": "a b", "payload": {}}),
    "message-event-id-space": Case("POST", MSG, {"eventType": ET, "eventId": "a b", "payload": {}}),
    "message-channel-space": Case(
        "POST", MSG, {"eventType": ET, "payload": {}, "channels": ["a b"]}
    ),
    "message-application-uid-space": Case(
        "POST", MSG, {"eventType": ET, "payload": {}, "application": {"name": "n", "uid": "a b"}}
    ),
    # the uid comes from the path on upsert and auto-create: it must obey the same pattern
    "app-upsert-path-uid-space": Case("PUT", "/api/v1/app/bad%20uid", {"name": "n"}),
    "endpoint-upsert-path-uid-space": Case("PUT", f"{EPS}/bad%20uid", {"url": URL}),
    "event-type-upsert-path-name-space": Case("PUT", f"{ETS}/bad%20name", {"description": "d"}),
    "message-autocreate-path-uid-space": Case(
        "POST",
        "/api/v1/app/bad%20auto%20uid/msg",
        {"eventType": ET, "payload": {}, "application": {"name": "n"}},
    ),
    # URLs
    "url-no-scheme": Case("POST", EPS, {"url": "receiver.example/hook"}),
    "url-ftp": Case("POST", EPS, {"url": "ftp://receiver.example/hook"}),
    "url-javascript": Case("POST", EPS, {"url": "javascript:alert(1)"}),
    "url-space": Case("POST", EPS, {"url": "https://receiver example/hook"}),
    "url-trailing-space": Case("POST", EPS, {"url": "https://receiver.example/hook "}),
    "url-port-0": Case("POST", EPS, {"url": "https://receiver.example:0/hook"}),
    "url-port-70000": Case("POST", EPS, {"url": "https://receiver.example:70000/hook"}),
    "url-port-negative": Case("POST", EPS, {"url": "https://receiver.example:-1/hook"}),
    "url-port-letters": Case("POST", EPS, {"url": "https://receiver.example:http/hook"}),
    "url-crlf": Case("POST", EPS, {"url": "https://receiver.example/hook\r\nX-Evil: 1"}),
    "url-no-host": Case("POST", EPS, {"url": "https:///hook"}),
    "url-bad-ipv6": Case("POST", EPS, {"url": "http://[::1/hook"}),
    "url-backslash": Case("POST", EPS, {"url": "https://receiver.example\\@evil.example/"}),
    "url-empty": Case("POST", EPS, {"url": ""}),
    "url-put-port-0": Case("PUT", EP_PATH, {"url": "https://receiver.example:0/"}),
    "url-patch-ftp": Case("PATCH", EP_PATH, {"url": "ftp://receiver.example/"}),
    # secrets
    "endpoint-secret-invalid": Case("POST", EPS, {"url": URL, "secret": BAD_SECRET}),
    "endpoint-secret-short": Case("POST", EPS, {"url": URL, "secret": "whsec_abc"}),
    "endpoint-patch-secret-invalid": Case("PATCH", EP_PATH, {"secret": BAD_SECRET}),
    "rotate-key-invalid": Case("POST", f"{EP_PATH}/secret/rotate", {"key": BAD_SECRET}),
}

CONTROL_TARGETS: dict[str, tuple[str, str, Any]] = {
    # name: (method, path, body builder with the bad text in place of "{}")
    "app-name": ("POST", "/api/v1/app", lambda s: {"name": s}),
    "app-uid": ("POST", "/api/v1/app", lambda s: {"name": "n", "uid": s}),
    "app-metadata-value": ("POST", "/api/v1/app", lambda s: {"name": "n", "metadata": {"k": s}}),
    "app-metadata-key": ("POST", "/api/v1/app", lambda s: {"name": "n", "metadata": {s: "v"}}),
    "app-put-name": ("PUT", APP_PATH, lambda s: {"name": s}),
    "app-patch-name": ("PATCH", APP_PATH, lambda s: {"name": s}),
    "endpoint-url": ("POST", EPS, lambda s: {"url": URL + s}),
    "endpoint-description": ("POST", EPS, lambda s: {"url": URL, "description": s}),
    "endpoint-uid": ("POST", EPS, lambda s: {"url": URL, "uid": s}),
    "endpoint-metadata-value": ("POST", EPS, lambda s: {"url": URL, "metadata": {"k": s}}),
    "endpoint-event-types": ("POST", EPS, lambda s: {"url": URL, "eventTypes": [s]}),
    "endpoint-header-value": ("POST", EPS, lambda s: {"url": URL, "headers": {"X-A": s}}),
    "endpoint-patch-description": ("PATCH", EP_PATH, lambda s: {"description": s}),
    "event-type-name": ("POST", ETS, lambda s: {"name": s, "description": "d"}),
    "event-type-description": ("POST", ETS, lambda s: {"name": "ctl.type", "description": s}),
    "event-type-patch-description": ("PATCH", f"{ETS}/{ET}", lambda s: {"description": s}),
    "message-event-type": ("POST", MSG, lambda s: {"eventType": s, "payload": {}}),
    "message-event-id": ("POST", MSG, lambda s: {"eventType": ET, "eventId": s, "payload": {}}),
    "message-channel": ("POST", MSG, lambda s: {"eventType": ET, "payload": {}, "channels": [s]}),
    "message-tag": ("POST", MSG, lambda s: {"eventType": ET, "payload": {}, "tags": [s]}),
    "message-application-name": (
        "POST",
        "/api/v1/app/ctl-auto/msg",
        lambda s: {"eventType": ET, "payload": {}, "application": {"name": s}},
    ),
    "headers-value": ("PUT", f"{EP_PATH}/headers", lambda s: {"headers": {"X-A": s}}),
    "headers-patch-value": ("PATCH", f"{EP_PATH}/headers", lambda s: {"headers": {"X-A": s}}),
}
CONTROL_TEXTS = {"nul": "a\u0000b", "bel": "a\u0007b", "surrogate": "a\ud800b"}


def _control_raw(body: Any) -> bytes:
    # json.dumps escapes \u0000, \u0007 and a lone \ud800 as JSON escapes (ASCII output)
    return json.dumps(body).encode()


def _field_cases() -> Iterator[Any]:
    for name, case in FIELD_CASES.items():
        yield pytest.param(case, id=name)
    for target, (method, path, build) in CONTROL_TARGETS.items():
        for label, text in CONTROL_TEXTS.items():
            case = Case(method, path, raw=_control_raw(build(text)))
            yield pytest.param(case, id=f"{label}-in-{target}")


@pytest.mark.parametrize("case", list(_field_cases()))
async def test_invalid_field_is_refused(known: Known, case: Case) -> None:
    """A well-formed body with a bad field value gets the documented 4xx, never a 500."""
    check(await case.send(known.client), case.expect)


# -- payload strings: valid JSON, stored and delivered as sent ---------------------------------


@pytest.mark.parametrize(
    ("label", "text"),
    [("nul", "a\u0000b"), ("bel", "a\u0007b"), ("newline", "a\nb"), ("emoji", "\U0001f600")],
)
async def test_payload_control_characters_round_trip(known: Known, label: str, text: str) -> None:
    """Escaped control characters in payload strings and keys are valid JSON: kept, not a 500."""
    payload = {"value": text, text: "key", "list": [text]}
    r = await known.client.post(MSG, json={"eventType": ET, "payload": payload})
    check(r, 202)
    got = await known.client.get(f"{MSG}/{r.json()['id']}")
    check(got, 200)
    assert got.json()["payload"] == payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param('{"s": "a\\ud800b"}', id="value"),
        pytest.param('{"a\\udfffb": 1}', id="key"),
        pytest.param('{"deep": [{"s": "\\ud83d"}]}', id="nested"),
    ],
)
async def test_payload_unpaired_surrogate_is_refused(known: Known, payload: str) -> None:
    """An unpaired surrogate in the payload cannot be UTF-8 on the wire: 422, not a 500."""
    raw = f'{{"eventType": "{ET}", "payload": {payload}}}'.encode()
    check(await Case("POST", MSG, raw=raw).send(known.client), 422)


@pytest.mark.parametrize(
    "schemas",
    [
        pytest.param('{"1": {"description": "a\\ud800b"}}', id="surrogate"),
        pytest.param('{"1": {"description": "a\\u0000b"}}', id="nul"),
    ],
)
async def test_event_type_schema_odd_strings(known: Known, schemas: str) -> None:
    """A schema holding a lone surrogate is refused (422); one holding NUL is stored (201)."""
    name = "schema.surrogate" if "ud800" in schemas else "schema.nul"
    raw = f'{{"name": "{name}", "description": "d", "schemas": {schemas}}}'.encode()
    expect = 422 if "ud800" in schemas else 201
    check(await Case("POST", ETS, raw=raw).send(known.client), expect)


@pytest.mark.parametrize("depth", [64, 255, 256, 300, 900, 1_000, 10_000])
async def test_deep_payload_is_refused_or_kept_readable(known: Known, depth: int) -> None:
    """A deeply nested payload is refused with a 4xx, or accepted and readable back: no 500,
    and never a stored message that the API cannot show (which would break the whole list)."""
    app = f"deep-{depth}"
    check(await known.client.post("/api/v1/app", json={"name": "deep", "uid": app}), 201)
    raw = f'{{"eventType": "{ET}", "payload": {_nest(depth)}}}'.encode()
    r = await Case("POST", f"/api/v1/app/{app}/msg", raw=raw).send(known.client)
    check(r, (202, 400, 413, 422))
    listed = await known.client.get(f"/api/v1/app/{app}/msg")
    check(listed, 200)
    if r.status_code == 202:
        got = await known.client.get(f"/api/v1/app/{app}/msg/{r.json()['id']}")
        check(got, 200)
        assert got.json()["payload"] == json.loads(_nest(depth))
    else:
        assert listed.json()["data"] == [], "a refused message was stored"


def _nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("depth", [20, 100, 300])
async def test_deep_event_type_schema_is_refused_or_kept(known: Known, depth: int) -> None:
    """A deeply nested (valid) JSON Schema is refused with 422 or stored and readable: no 500."""
    name = f"deep.schema.{depth}"
    body = {"name": name, "description": "d", "schemas": {"1": _nested_schema(depth)}}
    r = await known.client.post(ETS, json=body)
    check(r, (201, 422))
    if r.status_code == 201:
        got = await known.client.get(f"{ETS}/{name}")
        check(got, 200)
        assert got.json()["schemas"] == body["schemas"]


# -- body size ---------------------------------------------------------------------------------


def _oversize(client: httpx.AsyncClient) -> bytes:
    limit: int = client.settings.max_body_bytes  # type: ignore[attr-defined]
    filler = "x" * (limit + 1)
    return json.dumps({"eventType": ET, "payload": {"filler": filler}}).encode()


@pytest.mark.parametrize("path", [MSG, "/api/v1/app", EPS, f"{EP_PATH}/headers"])
async def test_oversize_body_with_content_length_is_413(known: Known, path: str) -> None:
    """A body over ``max_body_bytes`` with a Content-Length header gets 413 payload_too_large."""
    method = "PUT" if path.endswith("/headers") else "POST"
    r = await known.client.request(
        method, path, content=_oversize(known.client), headers={"content-type": "application/json"}
    )
    assert "content-length" in {k.lower() for k in r.request.headers}
    check(r, 413, "payload_too_large")


async def test_oversize_streamed_body_is_413(known: Known) -> None:
    """A chunked body (no Content-Length) that grows over ``max_body_bytes`` gets 413."""
    data = _oversize(known.client)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    r = await known.client.post(MSG, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    check(r, 413, "payload_too_large")


async def test_streamed_body_under_the_limit_is_accepted(known: Known) -> None:
    """A chunked body under the limit is read whole and accepted (control for the 413 tests)."""
    data = json.dumps({"eventType": ET, "payload": {"filler": "y" * 100_000}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 10_000):
            yield data[start : start + 10_000]

    r = await known.client.post(MSG, content=chunks(), headers={"content-type": "application/json"})
    check(r, 202)
    assert len(r.json()["payload"]["filler"]) == 100_000


# -- unknown ids -------------------------------------------------------------------------------

UNKNOWN_IDS = ["nope", "app_2ZzZzZzZzZzZzZzZzZzZzZzZzZz", "x" * 2000, "a%00b", "caf%C3%A9"]


def _get_routes(known: Known, missing: str) -> list[str]:
    m = known.msg_id
    return [
        f"/api/v1/app/{missing}",
        f"/api/v1/app/{missing}/endpoint",
        f"/api/v1/app/{missing}/msg",
        f"/api/v1/app/{missing}/msg/{m}",
        f"{APP_PATH}/endpoint/{missing}",
        f"{APP_PATH}/endpoint/{missing}/secret",
        f"{APP_PATH}/endpoint/{missing}/headers",
        f"{APP_PATH}/endpoint/{missing}/stats",
        f"{APP_PATH}/endpoint/{missing}/msg",
        f"/api/v1/event-type/{missing}",
        f"{APP_PATH}/msg/{missing}",
        f"{APP_PATH}/msg/{missing}/endpoint",
        f"{APP_PATH}/msg/{m}/attempt/{missing}",
        f"{APP_PATH}/attempt/endpoint/{missing}",
        f"{APP_PATH}/attempt/msg/{missing}",
        f"{APP_PATH}/attempt/msg/{m}?endpoint_id={missing}",
    ]


@pytest.mark.parametrize("missing", UNKNOWN_IDS, ids=["word", "id-like", "long", "nul", "utf8"])
async def test_unknown_ids_are_404_on_every_get_route(known: Known, missing: str) -> None:
    """Every GET route answers 404 not_found for an id that does not exist (even a NUL one);
    an id passed as a query parameter may instead be refused as malformed (422)."""
    failures = []
    for path in _get_routes(known, missing):
        r = await known.client.get(path)
        not_found = r.status_code == 404 and r.json().get("code") == "not_found"
        malformed_query = f"={missing}" in path and r.status_code == 422
        if not (not_found or malformed_query):
            failures.append(f"GET {path[:120]} -> {r.status_code} {r.text[:200]}")
        else:
            assert_error_shape(r)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/api/v1/app/nope", None),
        ("PATCH", "/api/v1/app/nope", {"name": "n"}),
        ("DELETE", f"{EPS}/nope", None),
        ("PATCH", f"{EPS}/nope", {"description": "d"}),
        ("POST", f"{EPS}/nope/secret/rotate", None),
        ("POST", f"{EPS}/nope/recover", {"since": "2024-01-01T00:00:00Z"}),
        ("PUT", f"{EPS}/nope/headers", {"headers": {}}),
        ("DELETE", f"{ETS}/nope", None),
        ("PATCH", f"{ETS}/nope", {"description": "d"}),
        ("POST", "/api/v1/app/nope/msg", {"eventType": ET, "payload": {}}),
        ("POST", f"{MSG}/nope/endpoint/{EP}/resend", None),
        ("POST", f"{MSG}/KNOWN/endpoint/nope/resend", None),
        ("DELETE", "/api/v1/app/a%00b", None),
        ("POST", "/api/v1/app/a%00b/msg", {"eventType": ET, "payload": {}}),
    ],
)
async def test_unknown_ids_are_404_on_write_routes(
    known: Known, method: str, path: str, body: Any
) -> None:
    """Writes to an object that does not exist answer 404 not_found."""
    path = path.replace("KNOWN", known.msg_id)
    r = (
        await known.client.request(method, path, json=body)
        if body
        else await known.client.request(method, path)
    )
    check(r, 404, "not_found")


# -- query parameters --------------------------------------------------------------------------

LISTS = {
    "apps": "/api/v1/app",
    "endpoints": EPS,
    "event-types": ETS,
    "messages": MSG,
    "attempts": f"{APP_PATH}/attempt/endpoint/{EP}",
    "endpoint-msgs": f"{EP_PATH}/msg",
}
BAD_QUERIES = {
    "limit-0": "limit=0",
    "limit-1000": "limit=1000",
    "limit-abc": "limit=abc",
    "limit-negative": "limit=-1",
    "limit-float": "limit=1.5",
    "limit-huge": "limit=" + "9" * 50,
    "order-sideways": "order=sideways",
    "iterator-too-long": "iterator=" + "i" * 400,
}
DATE_QUERIES = {
    "before-notadate": "before=notadate",
    "after-notadate": "after=notadate",
    "before-empty": "before=",
}
DATED = ("messages", "attempts", "endpoint-msgs")
WITH_CONTENT = ("messages", "endpoint-msgs", "event-types")


def _query_cases() -> Iterator[Any]:
    for route, path in LISTS.items():
        for label, query in BAD_QUERIES.items():
            yield pytest.param(f"{path}?{query}", id=f"{route}-{label}")
        if route in DATED:
            for label, query in DATE_QUERIES.items():
                yield pytest.param(f"{path}?{query}", id=f"{route}-{label}")
        if route in WITH_CONTENT:
            yield pytest.param(f"{path}?with_content=maybe", id=f"{route}-with-content-maybe")
    yield pytest.param(f"{APP_PATH}/attempt/endpoint/{EP}?status=9", id="attempts-status-9")
    yield pytest.param(
        f"{APP_PATH}/attempt/endpoint/{EP}?status_code_class=250", id="attempts-class-250"
    )
    yield pytest.param(f"{EP_PATH}/stats?since=notadate", id="stats-since-notadate")
    yield pytest.param(f"{ETS}?include_archived=perhaps", id="event-types-include-archived")
    yield pytest.param(f"{MSG}/KNOWN?with_content=perhaps", id="message-get-with-content")


@pytest.mark.parametrize("url", list(_query_cases()))
async def test_invalid_query_parameter_is_422(known: Known, url: str) -> None:
    """An out-of-range or unparseable query parameter gets a 422 in the validation shape."""
    check(await known.client.get(url.replace("KNOWN", known.msg_id)), 422)


@pytest.mark.parametrize("route", list(LISTS))
async def test_unknown_query_parameters_are_ignored(known: Known, route: str) -> None:
    """Query parameters the route does not know are ignored: 200 with a list."""
    r = await known.client.get(LISTS[route], params={"frobnicate": "1", "limit": "5", "x[]": "y"})
    check(r, 200)
    assert isinstance(r.json()["data"], list)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"event_types": "a\x00b"}, id="event-types-nul"),
        pytest.param({"event_types": "\u00e9t\u00e9"}, id="event-types-unicode"),
        pytest.param({"channel": "a\x00b"}, id="channel-nul"),
        pytest.param({"tag": "a\x00b"}, id="tag-nul"),
        pytest.param({"channel": "%_*"}, id="channel-wildcards"),
    ],
)
async def test_filter_no_message_matches_gives_an_empty_page(
    known: Known, query: dict[str, str]
) -> None:
    """A filter value no message can match (NUL included) gives an empty page (or a 422 for a
    value no event type, channel or tag may hold), never a 500."""
    r = await known.client.get(MSG, params=query)
    check(r, (200, 422))
    if r.status_code == 200:
        assert r.json()["data"] == []


@pytest.mark.parametrize("route", list(LISTS))
@pytest.mark.parametrize("iterator", ["a\x00b", "-a\x00b", "nope", "-", "\u00e9"])
async def test_odd_iterator_is_not_a_500(known: Known, route: str, iterator: str) -> None:
    """An iterator the server never made (NUL included) is a cursor like any other (200) or is
    refused as malformed (422), never a 500."""
    r = await known.client.get(LISTS[route], params={"iterator": iterator})
    check(r, (200, 422))
    if r.status_code == 200:
        assert isinstance(r.json()["data"], list)


# -- custom endpoint headers -------------------------------------------------------------------

BAD_HEADERS = {
    "crlf-value": {"X-Custom": "a\r\nX-Injected: 1"},
    "lf-value": {"X-Custom": "a\nb"},
    "nul-value": {"X-Custom": "a\u0000b"},
    "del-value": {"X-Custom": "a\u007fb"},
    "surrogate-value": {"X-Custom": "a\ud800b"},
    "long-value": {"X-Custom": "v" * 5000},
    "host": {"Host": "evil.example"},
    "content-length": {"Content-Length": "0"},
    "transfer-encoding": {"Transfer-Encoding": "chunked"},
    "webhook-signature": {"webhook-signature": "v1,forged"},
    "webhook-id-upper": {"Webhook-Id": "msg_x"},
    "svix-signature": {"svix-signature": "v1,forged"},
    "name-space": {"Bad Header": "v"},
    "name-colon": {"X:Y": "v"},
    "name-empty": {"": "v"},
    "name-crlf": {"X-A\r\nX-B": "v"},
    "name-unicode": {"X-\u00dc": "v"},
    "name-too-long": {"X" * 300: "v"},
}


def _header_cases() -> Iterator[Any]:
    for label, headers in BAD_HEADERS.items():
        yield pytest.param("PUT", f"{EP_PATH}/headers", {"headers": headers}, id=f"put-{label}")
        yield pytest.param("PATCH", f"{EP_PATH}/headers", {"headers": headers}, id=f"patch-{label}")
        yield pytest.param(
            "POST", EPS, {"url": URL, "headers": headers}, id=f"endpoint-create-{label}"
        )


@pytest.mark.parametrize(("method", "path", "body"), list(_header_cases()))
async def test_bad_custom_header_is_422(known: Known, method: str, path: str, body: Any) -> None:
    """Custom headers with CRLF, reserved or invalid names are refused with 422."""
    raw = json.dumps(body).encode()
    check(await Case(method, path, raw=raw).send(known.client), 422)


async def test_good_custom_headers_are_kept(known: Known) -> None:
    """Valid custom headers are stored, and sensitive ones are listed but not shown."""
    r = await known.client.put(
        f"{EP_PATH}/headers", json={"headers": {"X-Team": "core", "Authorization": "Bearer s3"}}
    )
    check(r, 204)
    got = await known.client.get(f"{EP_PATH}/headers")
    check(got, 200)
    assert got.json() == {"headers": {"X-Team": "core"}, "sensitive": ["Authorization"]}


# -- secrets never echo ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", EPS, {"url": URL, "secret": BAD_SECRET}),
        ("POST", EPS, {"url": "ftp://x", "secret": GOOD_SECRET.replace("A", "S")}),
        ("PATCH", EP_PATH, {"secret": BAD_SECRET}),
        ("POST", f"{EP_PATH}/secret/rotate", {"key": BAD_SECRET}),
        (
            "PUT",
            f"{EP_PATH}/headers",
            {"headers": {"Authorization": "secret-that-must-not\r\nleak"}},
        ),
    ],
    ids=["create-bad-secret", "create-good-secret-bad-url", "patch", "rotate", "header-value"],
)
async def test_validation_error_does_not_echo_the_secret(
    known: Known, method: str, path: str, body: dict[str, Any]
) -> None:
    """A 422 caused by (or next to) a secret never repeats the secret in its body."""
    r = await known.client.request(method, path, json=body)
    check(r, 422)
    for secret in (BAD_SECRET, GOOD_SECRET.replace("A", "S"), "secret-that-must-not"):
        assert secret not in r.text
        assert secret.split("_", 1)[-1] not in r.text


async def test_malformed_body_does_not_echo_the_secret(known: Known) -> None:
    """A JSON syntax error in a body holding a secret does not echo the body back."""
    raw = ('{"url": "' + URL + '", "secret": "' + BAD_SECRET + '",').encode()
    r = await Case("POST", EPS, raw=raw).send(known.client)
    check(r, 422)
    assert BAD_SECRET not in r.text
