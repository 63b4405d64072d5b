"""Tenant isolation over real HTTP: organisation B can neither see nor touch organisation A's data.

Org A uses the bootstrap token; org B a token minted by ``homing token create --org org_b``.
Every per-object route is tried with B's token on A's objects, addressed by id and by uid.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .conftest import WORKER_EXISTS, HomingProcess, Receiver, unique

ORG_B = "org_b"
SENSITIVE_VALUE = "hdr-secret-value-of-org-a"


@dataclass(frozen=True)
class OrgA:
    """Org A's objects, as ids and as uids (the message's "uid" is its eventId)."""

    app_id: str
    app_uid: str
    ep_id: str
    ep_uid: str
    msg_id: str
    event_id: str
    event_type: str
    secret: str
    ep_url: str

    def keys(self, by: str) -> dict[str, str]:
        if by == "id":
            return {"app": self.app_id, "ep": self.ep_id, "msg": self.msg_id}
        return {"app": self.app_uid, "ep": self.ep_uid, "msg": self.event_id}

    def never_shown(self) -> tuple[str, ...]:
        """Strings that must not appear in any answer given to someone else."""
        return (self.secret, self.secret.removeprefix("whsec_"), SENSITIVE_VALUE)


def _ok(answer: httpx.Response, status: int) -> Any:
    assert answer.status_code == status, (
        f"{answer.request.method} {answer.request.url}: {answer.text}"
    )
    return answer.json() if answer.content else None


@pytest.fixture
def org_a(client: httpx.Client, receiver: Receiver) -> OrgA:
    """A fresh application, endpoint (with a sensitive header), event type and message of A."""
    app_uid, ep_uid, event_id = unique("a-app"), unique("a-ep"), unique("a-evt")
    ep_url = f"{receiver.url}/{ep_uid}"  # local: the worker delivers A's message here
    event_type = unique("a.type").replace("-", ".")
    app = _ok(client.post("/api/v1/app", json={"name": "A's app", "uid": app_uid}), 201)
    ep = _ok(
        client.post(
            f"/api/v1/app/{app['id']}/endpoint",
            json={
                "url": ep_url,
                "uid": ep_uid,
                "headers": {"X-Api-Key": SENSITIVE_VALUE},
            },
        ),
        201,
    )
    secret = _ok(client.get(f"/api/v1/app/{app['id']}/endpoint/{ep['id']}/secret"), 200)["key"]
    _ok(client.post("/api/v1/event-type", json={"name": event_type, "description": "A's"}), 201)
    msg = _ok(
        client.post(
            f"/api/v1/app/{app['id']}/msg",
            json={"eventType": event_type, "eventId": event_id, "payload": {"owner": "a"}},
        ),
        202,
    )
    return OrgA(
        app["id"], app_uid, ep["id"], ep_uid, msg["id"], event_id, event_type, secret, ep_url
    )


@pytest.fixture
def client_b(server: HomingProcess) -> Iterator[httpx.Client]:
    """An httpx client with a token of organisation B."""
    headers = {"authorization": f"Bearer {server.org_token(ORG_B)}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as c:
        yield c


def assert_untouched(client: httpx.Client, a: OrgA) -> None:
    """A still sees every one of its objects exactly as it made them."""
    app = _ok(client.get(f"/api/v1/app/{a.app_id}"), 200)
    assert (app["name"], app["uid"]) == ("A's app", a.app_uid)
    base = f"/api/v1/app/{a.app_id}/endpoint/{a.ep_id}"
    ep = _ok(client.get(base), 200)
    assert (ep["url"], ep["uid"], ep["disabled"]) == (a.ep_url, a.ep_uid, False)
    assert _ok(client.get(base + "/secret"), 200)["key"] == a.secret
    assert _ok(client.get(base + "/headers"), 200)["sensitive"] == ["X-Api-Key"]
    msgs = _ok(client.get(f"/api/v1/app/{a.app_id}/msg"), 200)["data"]
    assert [m["id"] for m in msgs] == [a.msg_id]
    assert _ok(client.get(f"/api/v1/event-type/{a.event_type}"), 200)["archived"] is False


def assert_error_body(answer: httpx.Response, status: int, code: str, a: OrgA) -> None:
    """``answer`` is a ``{"code", "detail"}`` error with ``status`` leaking none of A's secrets."""
    where = f"{answer.request.method} {answer.request.url.path}"
    assert answer.status_code == status, f"{where}: expected {status}, got {answer.text}"
    assert answer.headers["content-type"].startswith("application/json"), where
    body = answer.json()
    assert set(body) == {"code", "detail"}, f"{where}: {body}"
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"], where
    for hidden in a.never_shown():
        assert hidden not in answer.text, f"{where} leaked a secret of org A"


APP = "/api/v1/app/{app}"
EP = APP + "/endpoint/{ep}"
SINCE = {"since": "2020-01-01T00:00:00Z"}
B_ENDPOINT = {"url": "https://b.example.com/steal"}

# (method, path, JSON body or None): every route that names one of A's objects
APP_ROUTES = [
    ("GET", APP, None),
    ("PATCH", APP, {"name": "B was here"}),
    ("DELETE", APP, None),
    ("GET", APP + "/endpoint", None),
    ("POST", APP + "/endpoint", B_ENDPOINT),
    ("GET", EP, None),
    ("PUT", EP, B_ENDPOINT),
    ("PATCH", EP, {"disabled": True}),
    ("DELETE", EP, None),
    ("GET", EP + "/secret", None),
    ("POST", EP + "/secret/rotate", {}),
    ("GET", EP + "/headers", None),
    ("PUT", EP + "/headers", {"headers": {"X-B": "1"}}),
    ("PATCH", EP + "/headers", {"headers": {"X-B": "1"}}),
    ("GET", EP + "/stats", None),
    ("POST", EP + "/recover", SINCE),
    ("GET", EP + "/msg", None),
    ("GET", APP + "/msg", None),
    ("POST", APP + "/msg", {"eventType": "b.evt", "payload": {"owner": "b"}}),
    ("GET", APP + "/msg/{msg}", None),
    ("GET", APP + "/msg/{msg}/endpoint", None),
    ("GET", APP + "/attempt/msg/{msg}", None),
    ("GET", APP + "/attempt/endpoint/{ep}", None),
    ("POST", APP + "/msg/{msg}/endpoint/{ep}/resend", None),
]


@pytest.mark.parametrize("by", ["id", "uid"])
@pytest.mark.parametrize(
    ("method", "path", "body"), APP_ROUTES, ids=[f"{m} {p}" for m, p, _ in APP_ROUTES]
)
def test_other_org_gets_404_on_app_routes(
    client: httpx.Client,
    client_b: httpx.Client,
    org_a: OrgA,
    by: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    """Org B gets a 404 without secrets on each route of A's objects, and A's data is unchanged."""
    answer = client_b.request(method, path.format(**org_a.keys(by)), json=body)
    assert_error_body(answer, 404, "not_found", org_a)
    assert_untouched(client, org_a)


def a_attempt_id(client: httpx.Client, a: OrgA, timeout: float = 10.0) -> str:
    """The id of the worker's first attempt to deliver A's message (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _ok(client.get(f"/api/v1/app/{a.app_id}/attempt/msg/{a.msg_id}"), 200)["data"]
        if found:
            attempt_id: str = found[0]["id"]
            return attempt_id
        time.sleep(0.05)
    pytest.fail(f"no attempt for A's message within {timeout} s", pytrace=False)


@pytest.mark.skipif(not WORKER_EXISTS, reason="homing.delivery.worker does not exist yet")
@pytest.mark.parametrize("by", ["id", "uid"])
def test_other_org_gets_404_on_attempt(
    client: httpx.Client, client_b: httpx.Client, org_a: OrgA, by: str
) -> None:
    """Org B gets a 404 on one of A's delivery attempts, which A itself can read."""
    attempt_id = a_attempt_id(client, org_a)
    keys = org_a.keys(by)
    path = APP.format(**keys) + f"/msg/{keys['msg']}/attempt/{attempt_id}"
    assert _ok(client.get(path), 200)["id"] == attempt_id
    assert_error_body(client_b.get(path), 404, "not_found", org_a)


@pytest.mark.parametrize("by", ["id", "uid"])
def test_other_org_put_application_never_touches_a(
    client: httpx.Client, client_b: httpx.Client, org_a: OrgA, by: str
) -> None:
    """Org B's PUT on A's application is a 404 or upserts B's own new application, never A's."""
    answer = client_b.put(APP.format(**org_a.keys(by)), json={"name": "B was here"})
    if answer.status_code == 201:  # Svix upsert: B made an application of its own
        assert answer.json()["id"] != org_a.app_id
        assert org_a.secret not in answer.text
    else:
        assert_error_body(answer, 404, "not_found", org_a)
    assert_untouched(client, org_a)


EVENT_TYPE_ROUTES = [
    ("GET", None),
    ("PATCH", {"description": "B was here"}),
    ("DELETE", None),
]


@pytest.mark.parametrize(
    ("method", "body"), EVENT_TYPE_ROUTES, ids=[m for m, _ in EVENT_TYPE_ROUTES]
)
def test_other_org_gets_404_on_event_type(
    client: httpx.Client,
    client_b: httpx.Client,
    org_a: OrgA,
    method: str,
    body: dict[str, Any] | None,
) -> None:
    """Event types are per organisation: B gets a 404 on A's event type, which stays as it was."""
    answer = client_b.request(method, f"/api/v1/event-type/{org_a.event_type}", json=body)
    assert_error_body(answer, 404, "not_found", org_a)
    assert_untouched(client, org_a)


def test_other_org_put_event_type_makes_its_own(
    client: httpx.Client, client_b: httpx.Client, org_a: OrgA
) -> None:
    """Org B's PUT on A's event type name creates B's own event type and leaves A's alone."""
    answer = client_b.put(
        f"/api/v1/event-type/{org_a.event_type}", json={"description": "B's", "archived": True}
    )
    assert answer.status_code == 201, answer.text
    assert _ok(client_b.get(f"/api/v1/event-type/{org_a.event_type}"), 200)["description"] == "B's"
    a_view = _ok(client.get(f"/api/v1/event-type/{org_a.event_type}"), 200)
    assert (a_view["description"], a_view["archived"]) == ("A's", False)
    assert_untouched(client, org_a)


def test_other_org_lists_do_not_show_a(
    client: httpx.Client, client_b: httpx.Client, org_a: OrgA
) -> None:
    """B's application and event type lists contain none of A's objects."""
    apps = _ok(client_b.get("/api/v1/app", params={"limit": 250}), 200)["data"]
    assert org_a.app_id not in {a["id"] for a in apps}
    assert org_a.app_uid not in {a["uid"] for a in apps}
    types = _ok(
        client_b.get("/api/v1/event-type", params={"include_archived": "true", "limit": 250}), 200
    )["data"]
    assert org_a.event_type not in {t["name"] for t in types}

    a_apps = _ok(client.get("/api/v1/app", params={"limit": 250}), 200)["data"]
    assert org_a.app_id in {a["id"] for a in a_apps}


def test_uids_are_per_org(client: httpx.Client, client_b: httpx.Client, org_a: OrgA) -> None:
    """B may use A's application uid for an application of its own, distinct from A's."""
    mine = _ok(client_b.post("/api/v1/app", json={"name": "B's app", "uid": org_a.app_uid}), 201)
    assert mine["id"] != org_a.app_id
    assert _ok(client_b.get(f"/api/v1/app/{org_a.app_uid}"), 200)["id"] == mine["id"]
    assert _ok(client.get(f"/api/v1/app/{org_a.app_uid}"), 200)["id"] == org_a.app_id


AUTH_ROUTES = [
    ("GET", "/api/v1/app", None),
    ("POST", "/api/v1/app", {"name": "nobody"}),
    ("GET", "/api/v1/event-type", None),
    ("GET", APP, None),
    ("GET", EP + "/secret", None),
    ("POST", APP + "/msg", {"eventType": "x", "payload": {}}),
]
BAD_AUTH = {
    "none": None,
    "wrong-token": "Bearer hsk_not_a_real_token",
    "not-bearer": "Basic dXNlcjpwYXNz",
    "bearer-without-token": "Bearer",
}


@pytest.mark.parametrize("auth", list(BAD_AUTH), ids=list(BAD_AUTH))
@pytest.mark.parametrize(
    ("method", "path", "body"), AUTH_ROUTES, ids=[f"{m} {p}" for m, p, _ in AUTH_ROUTES]
)
def test_missing_or_wrong_token_is_401(
    server: HomingProcess,
    org_a: OrgA,
    auth: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    """Without a valid bearer token every route answers 401 ``{"code", "detail"}``."""
    header = BAD_AUTH[auth]
    headers = {"authorization": header} if header is not None else {}
    with httpx.Client(base_url=server.base_url, timeout=10.0) as anonymous:
        answer = anonymous.request(
            method, path.format(**org_a.keys("id")), json=body, headers=headers
        )
    assert_error_body(answer, 401, "authentication_failed", org_a)
