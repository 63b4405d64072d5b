"""The worker's own queues: endpoints that answer quickly are leased ahead, yet never get more
than their cap of requests at once; queued deliveries are handed back unsent when the worker
stops, or when their lease could run out during the try. SQLite storage, real HTTP on
127.0.0.1 (the claim rules themselves are tested on every backend in
``tests/contract/test_fairness.py``)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from homing.config import Settings
from homing.core.models import Application, Attempt, Delivery, DeliveryState, Endpoint
from homing.storage import Storage

from . import test_worker as worker_tests
from .receiver import Receiver, hang, status
from .test_worker import add_endpoint, add_message, state_of, worker

# the SQLite storage and the application of the worker tests
storage = worker_tests.storage
app = worker_tests.app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url="sqlite:///" + str(tmp_path / "worker.db"),
        request_timeout=2.0,
        retry_schedule=(0, 0),
        retry_jitter=0.0,
        allow_networks="127.0.0.0/8",
        endpoint_concurrency=3,
    )


async def sending(storage: Storage, endpoint: Endpoint) -> int:
    return (await storage.endpoint_stats(endpoint.id, None, None))[DeliveryState.SENDING]


async def test_quick_endpoint_is_leased_ahead_but_never_gets_more_than_its_cap_at_once(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """60 messages to an endpoint answering in 20 ms, cap 3: the worker holds more than 3
    leases of it at some point (leased ahead), the receiver never sees more than 3 requests at
    once, and every message arrives exactly once."""
    now_open = 0
    most_open = 0

    async def counted(request: web.Request) -> web.StreamResponse:
        nonlocal now_open, most_open
        now_open += 1
        most_open = max(most_open, now_open)
        try:
            await asyncio.sleep(0.02)
        finally:
            now_open -= 1
        return web.Response(status=200)

    receiver.reply("/quick", counted)
    endpoint = await add_endpoint(storage, app, receiver.url("/quick"))
    messages = [await add_message(storage, app) for _ in range(60)]
    stop = asyncio.Event()
    task = asyncio.create_task(worker(settings, storage).run(stop))
    most_leased = 0
    try:
        async with asyncio.timeout(20):
            while len(receiver.at("/quick")) < 60 or await sending(storage, endpoint):
                most_leased = max(most_leased, await sending(storage, endpoint))
                await asyncio.sleep(0.005)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert most_open == settings.endpoint_concurrency
    assert most_leased > settings.endpoint_concurrency
    ids = [seen.headers["webhook-id"] for seen in receiver.at("/quick")]
    assert sorted(ids) == sorted(m.id for m in messages)
    for message in messages:
        assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS


async def test_slow_endpoint_is_not_leased_ahead(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """An endpoint that has not answered quickly holds only its cap of leases: what waits
    stays pending (and shows so), free for any worker."""
    receiver.reply("/stuck", hang(receiver))
    endpoint = await add_endpoint(storage, app, receiver.url("/stuck"))
    for _ in range(20):
        await add_message(storage, app)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(settings, storage).run(stop))
    try:
        async with asyncio.timeout(5):
            while len(receiver.at("/stuck")) < 3:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # room for more claims, which must not lease ahead
        assert await sending(storage, endpoint) == 3
    finally:
        receiver.release.set()
        stop.set()
        async with asyncio.timeout(10):
            await task


async def test_stopping_hands_back_queued_deliveries_unsent(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """The endpoint answers its first 3 requests at once (so it is leased ahead), then hangs.
    On stop the worker starts nothing more, hands back what it had queued (pending, no try
    counted, no lease) and ends after the hanging sends: nothing is left ``sending``."""
    receiver.reply("/turns", status(200), status(200), status(200), hang(receiver))
    endpoint = await add_endpoint(storage, app, receiver.url("/turns"))
    messages = [await add_message(storage, app) for _ in range(30)]
    stop = asyncio.Event()
    task = asyncio.create_task(worker(settings, storage).run(stop))
    try:
        async with asyncio.timeout(5):
            while len(receiver.at("/turns")) < 6 or await sending(storage, endpoint) <= 3:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.sleep(0.05)
        receiver.release.set()
        async with asyncio.timeout(10):
            await task
    assert len(receiver.at("/turns")) == 6  # nothing started after the stop
    deliveries = [await storage.get_delivery(m.id, endpoint.id) for m in messages]
    states = [d.state for d in deliveries if d is not None]
    assert states.count(DeliveryState.SUCCESS) == 6
    assert states.count(DeliveryState.PENDING) == 24
    for delivery in deliveries:
        assert delivery is not None
        if delivery.state is DeliveryState.PENDING:
            assert (delivery.attempts, delivery.leased_by) == (0, None)


async def test_delivery_whose_lease_ran_short_in_the_queue_is_handed_back_unsent(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """Between the claim and the start the clock moves on 20 s, so a 2 s try could outlive
    the 32 s lease by then: the delivery goes back to the queue without a try, then is claimed
    again and sent once."""
    endpoint = await add_endpoint(storage, app, receiver.url("/late"))
    message = await add_message(storage, app)
    start = datetime.now(UTC)
    calls = 0

    def clock() -> datetime:
        nonlocal calls
        calls += 1
        return start if calls == 1 else start + timedelta(seconds=20)

    recorded: list[tuple[Attempt | None, Delivery]] = []
    record = storage.record_attempts

    async def spy(
        results: Sequence[tuple[Attempt | None, Delivery]],
    ) -> list[DeliveryState | None]:
        recorded.extend(results)
        return await record(results)

    storage.record_attempts = spy  # type: ignore[method-assign]
    await worker(settings, storage, clock=clock).run_until_idle()

    assert [(a is None, d.state, d.attempts) for a, d in recorded] == [
        (True, DeliveryState.PENDING, 0),
        (False, DeliveryState.SUCCESS, 1),
    ]
    assert len(receiver.at("/late")) == 1
    assert await state_of(storage, message, endpoint) is DeliveryState.SUCCESS


async def test_busy_quick_endpoint_does_not_starve_another_when_the_worker_is_full(
    settings: Settings, storage: Storage, app: Application, receiver: Receiver
) -> None:
    """A worker whose every send slot goes to a quick endpoint with a long backlog still
    claims and sends another endpoint's newer deliveries early, not after that backlog."""
    await add_endpoint(storage, app, receiver.url("/busy"), event_types=("busy",))
    other = await add_endpoint(storage, app, receiver.url("/other"), event_types=("other",))
    for _ in range(200):  # several read windows of backlog before the other endpoint's
        await add_message(storage, app, event_type="busy")
    late = [await add_message(storage, app, event_type="other") for _ in range(3)]
    tight = replace(settings, worker_concurrency=2, endpoint_concurrency=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker(tight, storage).run(stop))
    try:
        async with asyncio.timeout(20):
            while len(receiver.at("/busy")) < 200 or len(receiver.at("/other")) < 3:
                await asyncio.sleep(0.005)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    order = [seen.path for seen in receiver.seen]
    assert order.index("/other") < 30, order  # well before the busy backlog is through
    assert order[: order.index("/other")].count("/busy") < 30
    for message in late:
        assert await state_of(storage, message, other) is DeliveryState.SUCCESS


def test_claim_budget_for_other_endpoints_follows_what_can_start(
    settings: Settings, storage: Storage
) -> None:
    """What a worker may claim of endpoints it does not lease ahead (``plain``), from what
    its queues hold: send slots not taken by sends or by queued deliveries able to start; and
    a cap's worth while an endpoint has more queued than its cap lets start, whether or not it
    still answers quickly."""
    tight = replace(settings, worker_concurrency=8, endpoint_concurrency=2)
    w = worker(tight, storage)
    job = (None, None, None)
    assert w._free_slots() == 8
    w._queued["slow"] = deque([job])  # type: ignore[list-item]
    assert w._free_slots() == 7  # one queued delivery can start
    w._sending["q"], w._n_sending = 2, 2
    w._queued["q"] = deque([job] * 30)  # type: ignore[list-item]
    assert w._free_slots() == 5  # q is at its cap: its queue takes no slot yet
    w._quick.add("q")
    assert w._free_slots() == 5  # the same whether q is still quick or not
    w._n_sending = 8  # every slot busy: a cap's worth, less what is ready
    assert w._free_slots() == 1
