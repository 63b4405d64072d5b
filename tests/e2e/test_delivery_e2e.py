"""Delivery end to end: a real ``homing serve`` (SQLite and PostgreSQL) sending to a scripted
receiver on 127.0.0.1, checked from the outside (receiver, REST API, /proc).

The server runs with a 1 s request deadline and a fast retry schedule (1 s, 1 s, no jitter), so
a delivery that keeps failing is final after three tries in about two seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import svix.webhooks
from standardwebhooks.webhooks import Webhook

from homing.delivery.sender import RESPONSE_BODY_LIMIT

from .conftest import HomingProcess, stop_homing
from .receiver import (
    Api,
    Reply,
    ScriptedReceiver,
    Seen,
    answer,
    drip,
    eventually,
    flood,
    hang,
    launch,
    missing,
    rss_kib,
)

pytestmark = pytest.mark.e2e

REQUEST_TIMEOUT = 1.0
TRIES = 3  # the first and one per delay of RETRY_SCHEDULE
SETTINGS = {"REQUEST_TIMEOUT": str(REQUEST_TIMEOUT), "RETRY_SCHEDULE": "1,1", "RETRY_JITTER": "0"}
PENDING, SENDING, FAIL, SUCCESS = 1, 3, 2, 0
FLOOD = 100 * 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 50 * 1024


@pytest.fixture(scope="module")
def server(
    database_url_e2e: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomingProcess]:
    """`homing serve` with a 1 s deadline and fast retries, one per module and backend.

    Named like the conftest fixture it replaces, so the conftest's check that the server logs
    no error during a test applies to it too.
    """
    process = launch("serve", database_url_e2e, tmp_path_factory.mktemp("serve-logs"), SETTINGS)
    yield process
    code = stop_homing(process)
    assert code == 0, f"homing serve did not stop cleanly ({code}):\n{process.stderr()}"


@pytest.fixture(scope="module")
def hooks() -> Iterator[ScriptedReceiver]:
    """One scripted receiver for the module; every test uses paths of its own."""
    receiver = ScriptedReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def api(server: HomingProcess) -> Iterator[Api]:
    """A REST client of the server with the bootstrap token."""
    client = Api(server.base_url, server.token)
    yield client
    client.close()


def _path(request: pytest.FixtureRequest, suffix: str = "") -> str:
    """A receiver path unique to the test (and backend)."""
    return f"/{request.node.name}{suffix}".replace("[", "-").replace("]", "")


def _secret(api: Api, app_id: str, ep_id: str) -> str:
    return str(api.call("GET", f"/app/{app_id}/endpoint/{ep_id}/secret", 200)["key"])


def _final(api: Api, app_id: str, msg_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The message's one destination once its delivery is final (neither pending nor sending)."""
    return eventually(
        lambda: next(
            (d for d in api.destinations(app_id, msg_id) if d["status"] not in (PENDING, SENDING)),
            None,
        ),
        f"a final delivery status of {msg_id}",
        timeout,
    )


def _attempt(api: Api, app_id: str, msg_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The message's first attempt, once it is recorded."""
    return eventually(
        lambda: next(iter(api.attempts(app_id, msg_id)), None),
        f"an attempt of {msg_id}",
        timeout,
    )


def _verify_both(secret: str, seen: Seen) -> None:
    """The request verifies with the standardwebhooks library and with the svix SDK."""
    headers = {k: seen.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    Webhook(secret).verify(seen.body, headers)
    svix.webhooks.Webhook(secret).verify(seen.body, headers)


def test_delivery_is_signed_and_verifies_with_standard_libraries(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest
) -> None:
    """A message arrives once, byte for byte, signed so that both the `standardwebhooks` and
    the `svix` verifiers accept it, and its status becomes success."""
    path = _path(request)
    app_id, ep_id = api.app_with_endpoint(hooks.url(path))
    msg_id = api.send(app_id, {"order": 42, "text": "café ✓"})
    [seen] = hooks.wait_for(path)
    assert seen.webhook_id == msg_id
    assert seen.headers["content-type"] == "application/json"
    _verify_both(_secret(api, app_id, ep_id), seen)
    assert Webhook(_secret(api, app_id, ep_id)).verify(seen.body, seen.headers) == {
        "order": 42,
        "text": "café ✓",
    }
    final = _final(api, app_id, msg_id)
    assert (final["status"], final["statusText"]) == (SUCCESS, "success")
    assert len(hooks.seen(path)) == 1


def test_failed_try_is_retried_with_same_id_fresh_timestamp_and_valid_signature(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest
) -> None:
    """After a 500 the retry carries the same webhook-id, a later timestamp and a signature
    that verifies, and the message ends as success."""
    path = _path(request)
    hooks.script(path, answer(500), answer(200))
    app_id, ep_id = api.app_with_endpoint(hooks.url(path))
    msg_id = api.send(app_id, {"n": 1})
    first, second = hooks.wait_for(path, 2)
    secret = _secret(api, app_id, ep_id)
    for seen in (first, second):
        assert seen.webhook_id == msg_id
        _verify_both(secret, seen)
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert second.headers["webhook-signature"] != first.headers["webhook-signature"]
    assert second.body == first.body
    assert second.at - first.at >= 0.9  # the schedule's 1 s
    assert _final(api, app_id, msg_id)["status"] == SUCCESS
    assert [a["responseStatusCode"] for a in api.attempts(app_id, msg_id)] == [500, 200]


def test_exhausted_retries_mark_the_message_failed_for_the_endpoint(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest
) -> None:
    """A receiver that always answers 500 gets every scheduled try, then the message's status
    for the endpoint is fail (2, "fail")."""
    path = _path(request)
    hooks.script(path, answer(500))
    app_id, _ = api.app_with_endpoint(hooks.url(path))
    msg_id = api.send(app_id, {"n": 1})
    final = _final(api, app_id, msg_id)
    assert (final["status"], final["statusText"]) == (FAIL, "fail")
    assert len(hooks.seen(path)) == TRIES
    attempts = api.attempts(app_id, msg_id)
    assert [a["responseStatusCode"] for a in attempts] == [500] * TRIES
    assert {a["statusText"] for a in attempts} == {"fail"}


def test_redirect_is_not_followed(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest
) -> None:
    """A 302 counts as a failed try and its Location is never requested."""
    path, target = _path(request), _path(request, "-target")
    hooks.script(path, answer(302, {"Location": hooks.url(target)}))
    app_id, _ = api.app_with_endpoint(hooks.url(path))
    msg_id = api.send(app_id, {"n": 1})
    assert _final(api, app_id, msg_id)["status"] == FAIL
    attempts = api.attempts(app_id, msg_id)
    assert [(a["responseStatusCode"], a["failureClass"]) for a in attempts] == [
        (302, "redirect")
    ] * TRIES
    assert hooks.seen(target) == []


def test_410_gone_disables_the_endpoint(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest
) -> None:
    """A 410 Gone disables the endpoint, ends the delivery at once (no retry) as fail."""
    path = _path(request)
    hooks.script(path, answer(410))
    app_id, ep_id = api.app_with_endpoint(hooks.url(path))
    msg_id = api.send(app_id, {"n": 1})
    eventually(
        lambda: (
            True if api.call("GET", f"/app/{app_id}/endpoint/{ep_id}", 200)["disabled"] else None
        ),
        "the endpoint to be disabled",
        10,
    )
    assert _final(api, app_id, msg_id)["status"] == FAIL
    assert len(hooks.seen(path)) == 1


def test_retry_after_on_429_delays_the_retry(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest
) -> None:
    """After a 429 with Retry-After: 2 the next try is scheduled, and comes, no sooner than
    2 s later, although the schedule says 1 s."""
    path = _path(request)
    hooks.script(path, answer(429, {"Retry-After": "2"}), answer(200))
    app_id, _ = api.app_with_endpoint(hooks.url(path))
    msg_id = api.send(app_id, {"n": 1})
    [first] = hooks.wait_for(path)
    attempt = _attempt(api, app_id, msg_id)
    assert attempt["responseStatusCode"] == 429
    [destination] = api.destinations(app_id, msg_id)
    assert destination["status"] == PENDING
    tried_at = datetime.fromisoformat(attempt["timestamp"])
    next_at = datetime.fromisoformat(destination["nextAttempt"])
    assert (next_at - tried_at).total_seconds() >= 2.0 - 0.01
    time.sleep(max(0.0, first.at + 1.9 - time.monotonic()))
    assert len(hooks.seen(path)) == 1, "the retry came sooner than Retry-After allows"


@pytest.mark.parametrize("reply", [hang(), drip(interval=1.0)], ids=["hanging", "dripping"])
def test_slow_receiver_is_cut_at_the_deadline(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest, reply: Reply
) -> None:
    """A receiver that never answers, or sends its headers and then one byte a second, is cut
    at the 1 s deadline and the attempt is recorded as a timeout."""
    path = _path(request)
    hooks.script(path, reply)
    app_id, _ = api.app_with_endpoint(hooks.url(path))
    msg_id = api.send(app_id, {"n": 1})
    started = time.monotonic()
    attempt = _attempt(api, app_id, msg_id)
    assert time.monotonic() - started < REQUEST_TIMEOUT + 3
    assert attempt["failureClass"] == "timeout", attempt
    assert attempt["responseStatusCode"] in (0, 200)
    assert attempt["statusText"] == "fail"
    assert REQUEST_TIMEOUT * 1000 * 0.9 <= attempt["responseDurationMs"] < REQUEST_TIMEOUT * 2000
    assert len(hooks.seen(path)) >= 1


def test_huge_response_is_read_only_up_to_the_cap(
    api: Api, hooks: ScriptedReceiver, server: HomingProcess, request: pytest.FixtureRequest
) -> None:
    """A 100 MiB answer costs Homing at most 64 KiB of stored body and no memory growth: it
    hangs up instead of reading it."""
    assert server.proc is not None
    path = _path(request)
    hooks.script(path, flood(FLOOD))
    app_id, _ = api.app_with_endpoint(hooks.url(path))
    before = rss_kib(server.proc.pid)
    msg_id = api.send(app_id, {"n": 1})
    attempt = _attempt(api, app_id, msg_id)
    grown = rss_kib(server.proc.pid) - before
    assert attempt["responseStatusCode"] == 200
    assert 0 < len(attempt["response"].encode()) <= RESPONSE_BODY_LIMIT
    assert grown <= RSS_GROWTH_LIMIT_KIB, f"RSS grew by {grown} KiB"
    sent = eventually(lambda: next(iter(hooks.flood_sent), None), "the flood to end", 10)
    assert sent < FLOOD, "Homing read the whole 100 MiB answer"


def test_backlog_for_one_endpoint_drains_at_its_concurrency(
    api: Api, hooks: ScriptedReceiver, request: pytest.FixtureRequest
) -> None:
    """A backlog for one endpoint whose answers take 200 ms goes out with many requests in
    flight (16 per endpoint by default): 160 messages in well under 10 s, not a batch per poll
    interval."""
    total = 160  # 10 rounds of 16 at 200 ms: about 2 s at the endpoint's concurrency
    path = _path(request)
    hooks.script(path, answer(200, delay=0.2))
    app_id, _ = api.app_with_endpoint(hooks.url(path))
    started = time.monotonic()
    sent = [api.send(app_id, {"n": n}) for n in range(total)]
    limit = 10.0
    while missing(sent, hooks.webhook_ids()):
        if time.monotonic() - started > limit:
            pytest.fail(
                f"only {total - len(missing(sent, hooks.webhook_ids()))} of {total} messages "
                f"reached a 200 ms endpoint within {limit} s",
                pytrace=False,
            )
        time.sleep(0.05)
