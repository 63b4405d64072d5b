"""The worker end to end: real SQLite storage, real HTTP to a scripted receiver on 127.0.0.1.

The ``storage`` fixture here is SQLite only (it overrides the backend-parametrized one in
``conftest.py``); the worker talks to storage through the same verbs on every backend.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook

from homing import signing, verify
from homing.config import Settings
from homing.core.models import (
    Application,
    Attempt,
    DeliveryState,
    Endpoint,
    EndpointSecret,
    Message,
    MessageStatus,
)
from homing.delivery.sender import (
    RESPONSE_BODY_LIMIT,
    BlockedAddressError,
    Request,
    Sender,
    default_connector,
    parse_retry_after,
)
from homing.delivery.worker import Worker
from homing.errors import StorageError
from homing.ids import new_id
from homing.storage import Storage, open_storage
from homing.storage.base import AttemptFilter, PageRequest

from .receiver import Receiver, after, hang, status, stream

ORG = "org_worker_test"
SECRET = signing.generate_secret()


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    """A migrated SQLite storage in a temporary file."""
    opened = await open_storage("sqlite:///" + str(tmp_path / "worker.db"))
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Fast settings: a 2 s deadline and two immediate retries."""
    return Settings(
        database_url="sqlite:///" + str(tmp_path / "worker.db"),
        request_timeout=2.0,
        retry_schedule=(0, 0),
        retry_jitter=0.0,
        allow_networks="127.0.0.0/8",  # the receivers listen on loopback
    )


@pytest.fixture
async def app(storage: Storage) -> Application:
    now = datetime.now(UTC)
    return await storage.create_application(
        Application(new_id("app"), ORG, "Test app", None, None, {}, now, now)
    )


async def add_endpoint(storage: Storage, app: Application, url: str, **changes: object) -> Endpoint:
    now = datetime.now(UTC)
    endpoint = Endpoint(
        id=new_id("ep"), org_id=ORG, app_id=app.id, url=url, uid=None, description="",
        rate_limit=None, disabled=False, event_types=None, channels=None,
        secrets=(EndpointSecret(SECRET),), headers={}, metadata={}, created_at=now, updated_at=now,
    )  # fmt: skip
    return await storage.create_endpoint(replace(endpoint, **changes))  # type: ignore[arg-type]


async def add_message(
    storage: Storage, app: Application, payload: str = '{"n": 1}', event_type: str = "user.created"
) -> Message:
    message = Message(
        new_id("msg"), ORG, app.id, event_type, None, payload, None, None, datetime.now(UTC)
    )
    await storage.create_message(message)
    return message


async def attempts_of(storage: Storage, message: Message) -> list[Attempt]:
    """The message's attempts, oldest first."""
    page = await storage.list_attempts("msg_id", message.id, AttemptFilter(), PageRequest())
    return list(reversed(page.items))


async def state_of(storage: Storage, message: Message, endpoint: Endpoint) -> DeliveryState:
    delivery = await storage.get_delivery(message.id, endpoint.id)
    assert delivery is not None
    return delivery.state


def worker(settings: Settings, storage: Storage, **kwargs: object) -> Worker:
    """A worker with a seeded random source and a 30 s poll (tests must not rely on polling)."""
    options: dict[str, object] = {"poll_interval": 30.0, **kwargs}
    return Worker(settings, storage, rng=random.Random(0), **options)  # type: ignore[arg-type]


async def test_success_is_signed_and_recorded(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A 200 finishes the delivery with one attempt, and both verifiers accept the signature."""
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app, '{"exact":  "bytes"}')
    assert await worker(settings, storage).run_until_idle() == 1
    [request] = receiver.seen
    assert request.body == b'{"exact":  "bytes"}'
    assert request.headers["webhook-id"] == message.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Homing/")
    verify.Webhook(SECRET).verify(request.body, request.headers)
    Webhook(SECRET).verify(request.body, request.headers)
    assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS
    [attempt] = await attempts_of(storage, message)
    assert (attempt.status, attempt.response_status, attempt.failure_class) == (
        MessageStatus.SUCCESS, 200, None,
    )  # fmt: skip
    assert attempt.request_headers["webhook-signature"] == signing.REDACTED


async def test_failure_then_success_retries_with_the_same_id(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A 500 is retried at once under a zero schedule, same webhook-id, freshly signed."""
    receiver.reply("/hook", status(500, text="boom"), status(200))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    assert await worker(settings, storage).run_until_idle() == 2
    first, second = receiver.seen
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == message.id
    for request in (first, second):
        verify.Webhook(SECRET).verify(request.body, request.headers)
    assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS
    failed, succeeded = await attempts_of(storage, message)
    assert (failed.response_status, failed.response_body, failed.failure_class) == (
        500, "boom", "http_status",
    )  # fmt: skip
    assert succeeded.response_status == 200


async def test_exhausted_schedule_fails_the_delivery(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A receiver that always fails gets the first try plus one per delay, then FAILED."""
    receiver.reply("/hook", status(503))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    assert await worker(settings, storage).run_until_idle() == 3
    assert len(receiver.seen) == 3
    assert await state_of(storage, message, endpoint) is DeliveryState.FAILED
    assert [a.status for a in await attempts_of(storage, message)] == [MessageStatus.FAIL] * 3


async def test_redirect_is_not_followed(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A 302 is a failure of class redirect and its target receives nothing."""
    receiver.reply("/hook", status(302, headers={"Location": receiver.url("/target")}))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    await worker(replace(settings, retry_schedule=()), storage).run_until_idle()
    assert receiver.at("/target") == []
    [attempt] = await attempts_of(storage, message)
    assert (attempt.response_status, attempt.failure_class) == (302, "redirect")
    assert await state_of(storage, message, endpoint) is DeliveryState.FAILED


async def test_gone_disables_the_endpoint(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A 410 fails the delivery without retries and disables the endpoint."""
    receiver.reply("/hook", status(410))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    assert await worker(settings, storage).run_until_idle() == 1
    assert await state_of(storage, message, endpoint) is DeliveryState.FAILED
    assert (await storage.get_endpoint(app.id, endpoint.id)).disabled


async def test_hanging_receiver_is_cut_at_the_deadline(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A receiver that never answers is cut at request_timeout; the retry waits the 30 s floor."""
    receiver.reply("/hook", hang(receiver))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    started = time.monotonic()
    assert await worker(replace(settings, request_timeout=0.5), storage).run_until_idle() == 1
    assert time.monotonic() - started < 2.0
    [attempt] = await attempts_of(storage, message)
    assert (attempt.response_status, attempt.failure_class) == (0, "timeout")
    assert 400 <= attempt.duration_ms < 2000
    delivery = await storage.get_delivery(message.id, endpoint.id)
    assert delivery is not None and delivery.state is DeliveryState.PENDING
    assert delivery.next_attempt_at is not None
    assert (delivery.next_attempt_at - attempt.created_at).total_seconds() >= 30


@pytest.mark.parametrize(
    "retry_after",
    ["120", lambda: format_datetime(datetime.now(UTC) + timedelta(seconds=125), True)],
)
async def test_retry_after_postpones_the_retry(
    settings: Settings,
    storage: Storage,
    app: Application,
    receiver: Receiver,
    retry_after: str | Callable[[], str],
) -> None:
    """A 503 with Retry-After (seconds or an HTTP date) is retried no sooner than asked."""
    value = retry_after if isinstance(retry_after, str) else retry_after()
    receiver.reply("/hook", status(503, headers={"Retry-After": value}))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    assert await worker(settings, storage).run_until_idle() == 1
    delivery = await storage.get_delivery(message.id, endpoint.id)
    assert delivery is not None and delivery.next_attempt_at is not None
    wait = (delivery.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert 110 <= wait <= 126


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        (" 90 ", 90.0),
        ("0000000000000000000030", 30.0),
        ("9" * 40, 1e12),
        ("Wed, 01 May 2024 12:02:00 GMT", 120.0),
        ("Wed, 01 May 2024 12:02:00 -0000", 120.0),
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        ("-5", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    """Retry-After is read as delta-seconds or an HTTP date; anything else is ignored."""
    assert parse_retry_after(value, NOW) == seconds


async def test_huge_response_body_is_capped(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """Of a 10 MB answer at most 64 KiB is read and stored."""
    receiver.reply("/hook", stream(receiver, 10 * 1024 * 1024))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    assert await worker(settings, storage).run_until_idle() == 1
    [attempt] = await attempts_of(storage, message)
    assert attempt.response_status == 200
    assert 0 < len(attempt.response_body.encode()) <= RESPONSE_BODY_LIMIT
    async with asyncio.timeout(2):  # the rest was never read: the connection was closed
        await receiver.hung_up.wait()
    assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS


async def test_custom_headers_are_sent_but_cannot_replace_ours(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """Endpoint headers go out (credentials redacted in storage); webhook-* stay Homing's."""
    headers = {"X-Tenant": "acme", "Authorization": "Bearer s3cr3t", "webhook-id": "forged"}
    await add_endpoint(storage, app, receiver.url(), headers=headers)
    message = await add_message(storage, app)
    await worker(settings, storage).run_until_idle()
    [request] = receiver.seen
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["authorization"] == "Bearer s3cr3t"
    assert request.headers["webhook-id"] == message.id
    [attempt] = await attempts_of(storage, message)
    assert attempt.request_headers["X-Tenant"] == "acme"
    assert attempt.request_headers["Authorization"] == signing.REDACTED


async def test_disabled_endpoint_is_canceled_not_sent(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A delivery whose endpoint was disabled after queuing is canceled without a request."""
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    await storage.update_endpoint(replace(endpoint, disabled=True))
    assert await worker(settings, storage).run_until_idle() == 1
    assert receiver.seen == []
    assert await state_of(storage, message, endpoint) is DeliveryState.CANCELED
    assert await attempts_of(storage, message) == []


async def test_deleted_endpoint_is_not_sent(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """Deleting an endpoint takes its queued deliveries with it: nothing is sent."""
    endpoint = await add_endpoint(storage, app, receiver.url())
    await add_message(storage, app)
    await storage.delete_endpoint(endpoint.id)
    assert await worker(settings, storage).run_until_idle() == 0
    assert receiver.seen == []


async def test_endpoint_without_keys_fails_without_sending(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """An endpoint that cannot sign is recorded as a signing failure and never contacted."""
    await add_endpoint(storage, app, receiver.url(), secrets=())
    message = await add_message(storage, app)
    await worker(replace(settings, retry_schedule=()), storage).run_until_idle()
    assert receiver.seen == []
    [attempt] = await attempts_of(storage, message)
    assert (attempt.response_status, attempt.failure_class) == (0, "signing")


async def test_run_sends_a_new_message_at_once_and_stops_gracefully(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """An idle run() wakes on a new message, and stop lets the send in flight finish."""
    receiver.reply("/hook", after(0.3, status(200)))
    endpoint = await add_endpoint(storage, app, receiver.url())
    stop = asyncio.Event()
    task = asyncio.create_task(worker(settings, storage).run(stop))
    await asyncio.sleep(0.1)  # let it go idle, waiting for work
    message = await add_message(storage, app)
    async with asyncio.timeout(3):
        while not receiver.seen:
            await asyncio.sleep(0.01)
    stop.set()  # the 0.3 s answer is still on its way
    async with asyncio.timeout(3):
        await task
    assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS


class _FixedResolver(AbstractResolver):
    """A stand-in for the SSRF guard: raises ``error`` for every name."""

    def __init__(self, error: OSError) -> None:
        self.error = error

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise self.error

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("error", "expected"),
    [(BlockedAddressError("10.0.0.1 is private"), "blocked"), (OSError("no such host"), "dns")],
)
async def test_resolver_seam_classifies_failures(
    settings: Settings, error: OSError, expected: str
) -> None:
    """A resolver passed through the connector factory decides; its refusal is a value."""

    def connector() -> aiohttp.BaseConnector:
        return default_connector(_FixedResolver(error))

    async with Sender(settings, connector_factory=connector) as sender:
        outcome = await sender.send(Request("http://hooks.example/x", b"{}", {"a": "b"}))
    assert (outcome.status, outcome.failure_class) == (0, expected)
    assert outcome.request_headers == {"a": "b"}


async def test_refused_connection_is_a_connect_failure(settings: Settings) -> None:
    """Nothing listening on the port gives the failure class connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Sender(settings) as sender:
        outcome = await sender.send(Request(f"http://127.0.0.1:{port}/", b"{}", {}))
    assert (outcome.status, outcome.failure_class) == (0, "connect")


async def test_tls_to_a_plain_http_port_is_a_tls_failure(
    settings: Settings, receiver: Receiver
) -> None:
    """A TLS handshake that fails is the failure class tls."""
    async with Sender(settings) as sender:
        outcome = await sender.send(Request(receiver.url().replace("http:", "https:"), b"{}", {}))
    assert (outcome.status, outcome.failure_class) == (0, "tls")
    assert receiver.seen == []


async def test_garbage_answer_is_an_invalid_response(settings: Settings) -> None:
    """A reply that is not HTTP is the failure class invalid_response."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Sender(settings) as sender:
            outcome = await sender.send(Request(f"http://127.0.0.1:{port}/", b"{}", {}))
    finally:
        server.close()
        await server.wait_closed()
    assert (outcome.status, outcome.failure_class) == (0, "invalid_response")
    assert "127.0.0.1" not in outcome.message  # messages never carry the URL


async def test_invalid_url_is_reported_without_echoing_it(settings: Settings) -> None:
    """An unusable URL is a failure value whose message does not repeat the URL."""
    async with Sender(settings) as sender:
        outcome = await sender.send(Request("http://[::1/?token=s3cr3t", b"{}", {}))
    assert (outcome.status, outcome.failure_class) == (0, "connect")
    assert outcome.message == "invalid URL"


async def test_expired_lease_is_reclaimed_and_delivered(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A delivery claimed by a worker that died is returned to the queue and sent."""
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    [dead] = await storage.claim_due(datetime.now(UTC), 10, "dead-worker", timedelta(0))
    assert dead.state is DeliveryState.SENDING
    assert await worker(settings, storage).run_until_idle() == 1
    assert len(receiver.seen) == 1
    assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS


async def test_run_wakes_for_its_own_retry_and_respects_concurrency(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """With one slot run() sends two messages in turn, and retries a failure 1 s later unpolled."""
    receiver.reply("/slow", after(0.2, status(200)))
    receiver.reply("/flaky", status(500), status(200))
    slow = await add_endpoint(storage, app, receiver.url("/slow"), event_types=("slow",))
    flaky = await add_endpoint(storage, app, receiver.url("/flaky"), event_types=("flaky",))
    to_slow = await add_message(storage, app, event_type="slow")
    to_flaky = await add_message(storage, app, event_type="flaky")
    stop = asyncio.Event()
    one_slot = worker(replace(settings, retry_schedule=(1,)), storage, concurrency=1)
    task = asyncio.create_task(one_slot.run(stop))
    try:
        async with asyncio.timeout(4):  # far below the 30 s poll interval
            while len(receiver.at("/flaky")) < 2:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    [slow_request] = receiver.at("/slow")
    flaky_first, flaky_retry = receiver.at("/flaky")
    assert flaky_first.at - slow_request.at >= 0.15  # waited for the one slot
    assert flaky_retry.at - flaky_first.at >= 0.9  # the 1 s schedule, not sooner
    assert await state_of(storage, to_slow, slow) is DeliveryState.SUCCESS
    assert await state_of(storage, to_flaky, flaky) is DeliveryState.SUCCESS


class _Flaky:
    """Wraps a storage (and its db) so that each named verb fails once, then works."""

    def __init__(self, inner: object, failing: set[str]) -> None:
        self._inner = inner
        self._failing = failing
        self.db = _Flaky(inner.db, failing) if hasattr(inner, "db") else None

    def __getattr__(self, name: str) -> object:
        real = getattr(self._inner, name)
        if name not in self._failing:
            return real

        async def fail_once(*args: object, **kwargs: object) -> object:
            self._failing.discard(name)
            raise StorageError(f"{name} is down")

        return fail_once


async def test_run_survives_storage_errors(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A failing claim or wait is logged and retried after the poll interval; run() goes on."""
    endpoint = await add_endpoint(storage, app, receiver.url())
    flaky = _Flaky(storage, {"claim_due", "wait_for_work"})
    stop = asyncio.Event()
    shaky = worker(settings, flaky, poll_interval=0.05)  # type: ignore[arg-type]
    task = asyncio.create_task(shaky.run(stop))
    try:
        async with asyncio.timeout(3):
            while flaky._failing:  # both failures have happened
                await asyncio.sleep(0.01)
            message = await add_message(storage, app)
            while not receiver.seen:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS


async def test_ed25519_endpoint_is_signed_v1a(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """An endpoint with an ed25519 key gets a v1a signature that its public key verifies."""
    from homing import asymmetric

    key = asymmetric.generate_signing_key()
    await add_endpoint(storage, app, receiver.url(), secrets=(EndpointSecret(key),))
    message = await add_message(storage, app)
    assert await worker(settings, storage).run_until_idle() == 1
    [request] = receiver.seen
    header = request.headers["webhook-signature"]
    assert header.startswith("v1a,")
    stamp = int(request.headers["webhook-timestamp"])
    public = asymmetric.public_key(key)
    assert asymmetric.verify(public, message.id, stamp, request.body, header)
    assert not asymmetric.verify(public, message.id, stamp, request.body + b" ", header)


async def test_hanging_endpoint_does_not_delay_a_healthy_one(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """With a backlog for a hanging endpoint queued first, a healthy endpoint's messages are
    still delivered at once: the hanging one only ever holds its own in-flight cap."""
    receiver.reply("/stuck", hang(receiver))
    stuck = await add_endpoint(storage, app, receiver.url("/stuck"), event_types=("stuck",))
    healthy = await add_endpoint(storage, app, receiver.url("/ok"), event_types=("ok",))
    for _ in range(40):
        await add_message(storage, app, event_type="stuck")
    fine = [await add_message(storage, app, event_type="ok") for _ in range(5)]
    tuned = replace(settings, request_timeout=30.0, endpoint_concurrency=4)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(tuned, storage).run(stop))
    try:
        async with asyncio.timeout(3):
            while len(receiver.at("/ok")) < 5:
                await asyncio.sleep(0.01)
            # the answers arrive before they are recorded: wait for the records too
            while any(
                [await state_of(storage, m, healthy) is not DeliveryState.SUCCESS for m in fine]
            ):
                await asyncio.sleep(0.01)
        assert len(receiver.at("/stuck")) == 4  # its cap, hanging; the rest wait their turn
        stats = await storage.endpoint_stats(stuck.id, None, None)
        assert stats[DeliveryState.SENDING] == 4
    finally:
        receiver.release.set()  # let the hanging answers through so the worker can stop
        stop.set()
        async with asyncio.timeout(10):
            await task


async def test_resend_during_the_last_try_is_not_reported_as_exhausted(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """When a resend arrives during a delivery's last try and that try fails, the delivery is
    tried again instead of ending: it is not counted as exhausted against the endpoint."""
    receiver.reply("/hook", after(0.3, status(500)), hang(receiver))
    endpoint = await add_endpoint(storage, app, receiver.url())
    message = await add_message(storage, app)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(replace(settings, retry_schedule=()), storage).run(stop))
    try:
        async with asyncio.timeout(3):
            while not receiver.seen:
                await asyncio.sleep(0.01)
        await storage.resend(message, endpoint, datetime.now(UTC))
        async with asyncio.timeout(3):
            while len(receiver.seen) < 2:  # the resend's try, which hangs
                await asyncio.sleep(0.01)
        assert [a.response_status for a in await attempts_of(storage, message)] == [500]
        assert (await storage.get_endpoint(app.id, endpoint.id)).failing_since is None
        assert await state_of(storage, message, endpoint) is DeliveryState.SENDING
    finally:
        receiver.release.set()
        stop.set()
        async with asyncio.timeout(10):
            await task
