"""Storage regressions found in review, on every backend: a refused result batch, idempotency
purging, optimistic endpoint edits, the health window on re-enable, recovering canceled
deliveries, claims that neither deadlock nor hide a healthy endpoint behind others' backlogs,
and SQLite transactions cancelled while waiting for the write lock.

Times are fixed; the claims are made at ``NOW`` so the queue order is exact.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from homing.core.models import (
    Application,
    Attempt,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointSecret,
    Message,
    MessageStatus,
    Trigger,
)
from homing.delivery.recorder import Recorder
from homing.errors import StaleWriteError, StorageError
from homing.ids import new_id
from homing.storage import Storage, open_storage
from homing.storage.base import AttemptFilter, PageRequest, StoredResponse

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
ORG = "org_review"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def add_app(storage: Storage) -> Application:
    return await storage.create_application(
        Application(new_id("app", _ms(NOW)), ORG, "Review", None, None, {}, NOW, NOW)
    )


async def add_endpoint(storage: Storage, app: Application) -> Endpoint:
    return await storage.create_endpoint(
        Endpoint(
            id=new_id("ep"),
            org_id=ORG,
            app_id=app.id,
            url="https://r.example/hook",
            uid=None,
            description="",
            rate_limit=None,
            disabled=False,
            event_types=None,
            channels=None,
            secrets=(EndpointSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),),
            headers={},
            metadata={},
            created_at=NOW,
            updated_at=NOW,
        )
    )


async def add_message(storage: Storage, app: Application, at: datetime) -> Message:
    message = Message(
        new_id("msg", _ms(at)), ORG, app.id, "user.created", None, "{}", None, None, at
    )
    await storage.create_message(message)
    return message


async def queue(storage: Storage, app: Application, count: int, first_at: datetime) -> None:
    """``count`` messages of ``app``, 1 ms apart from ``first_at``."""
    for n in range(count):
        await add_message(storage, app, first_at + timedelta(milliseconds=n))


def finished(claimed: Delivery, state: DeliveryState, at: datetime = NOW) -> Delivery:
    """``claimed`` after one attempt that ended in ``state`` (no further retry)."""
    return replace(
        claimed, state=state, attempts=claimed.attempts + 1, next_attempt_at=None, updated_at=at
    )


def attempt_of(delivery: Delivery) -> Attempt:
    return Attempt(
        id=new_id("atmpt"), org_id=delivery.org_id, app_id=delivery.app_id,
        msg_id=delivery.msg_id, endpoint_id=delivery.endpoint_id, delivery_id=delivery.id,
        url="https://r.example/hook", status=MessageStatus.SUCCESS, response_status=200,
        response_body="ok", request_headers={}, failure_class=None, failure_message=None,
        duration_ms=5, trigger=delivery.trigger, created_at=NOW,
    )  # fmt: skip


async def state_of(storage: Storage, delivery: Delivery) -> DeliveryState:
    found = await storage.get_delivery(delivery.msg_id, delivery.endpoint_id)
    assert found is not None
    return found.state


# -- the recorder ----------------------------------------------------------------------------


class RefusingStorage:
    """Passes ``record_attempts`` through, but refuses every batch holding ``marked``."""

    def __init__(self, inner: Storage, marked: str) -> None:
        self.inner = inner
        self.marked = marked
        self.batches: list[list[str]] = []

    async def record_attempts(
        self, results: Sequence[tuple[Attempt | None, Delivery]]
    ) -> list[bool]:
        ids = [d.id for _, d in results]
        self.batches.append(ids)
        if self.marked in ids:
            raise StorageError("refused")
        return await self.inner.record_attempts(results)


async def test_recorder_retries_a_refused_batch_one_result_at_a_time(storage: Storage) -> None:
    """When the storage refuses a whole batch, each result is written alone: the good ones are
    recorded and only the refused one's sender sees the error."""
    app = await add_app(storage)
    for _ in range(3):
        await add_endpoint(storage, app)
    await add_message(storage, app, NOW)
    good_one, bad, good_two = await storage.claim_due(NOW, 10, "w1", LEASE)
    refusing = RefusingStorage(storage, bad.id)
    recorder = Recorder(cast(Storage, refusing), linger=0.05)

    results = await asyncio.gather(
        *(
            recorder.record(attempt_of(d), finished(d, DeliveryState.SUCCESS))
            for d in (good_one, bad, good_two)
        ),
        return_exceptions=True,
    )
    await recorder.close()

    assert results[0] is DeliveryState.SUCCESS and results[2] is DeliveryState.SUCCESS
    assert isinstance(results[1], StorageError)
    assert refusing.batches == [
        [good_one.id, bad.id, good_two.id], [good_one.id], [bad.id], [good_two.id],
    ]  # fmt: skip
    assert await state_of(storage, good_one) is DeliveryState.SUCCESS
    assert await state_of(storage, good_two) is DeliveryState.SUCCESS
    assert await state_of(storage, bad) is DeliveryState.SENDING
    page = await storage.list_attempts("msg_id", bad.msg_id, AttemptFilter(), PageRequest())
    assert sorted(a.delivery_id for a in page.items) == sorted([good_one.id, good_two.id])


# -- idempotency keys ------------------------------------------------------------------------


async def test_purge_idempotency_forgets_only_keys_reserved_before_the_cutoff(
    storage: Storage,
) -> None:
    """purge_idempotency(before) deletes the keys reserved before ``before`` and keeps newer."""
    answer = StoredResponse(200, "{}")
    for key, at in (("old", NOW - timedelta(hours=25)), ("new", NOW - timedelta(hours=1))):
        assert await storage.idempotency_begin(key, at) is True
        await storage.idempotency_finish(key, answer)

    assert await storage.purge_idempotency(NOW - timedelta(hours=24)) == 1

    assert await storage.idempotency_begin("new", NOW) == answer  # still answers the same
    assert await storage.idempotency_begin("old", NOW) is True  # forgotten: runs again
    assert await storage.purge_idempotency(NOW - timedelta(hours=24)) == 0


# -- optimistic endpoint edits ---------------------------------------------------------------


async def _edit_by_someone_else(storage: Storage, ep: Endpoint, how: str) -> None:
    later = NOW + timedelta(seconds=1)
    if how == "update":
        await storage.update_endpoint(replace(ep, description="theirs", updated_at=later))
    else:
        assert await storage.disable_endpoint(ep.id, later)


@pytest.mark.parametrize("how", ["update", "disable"])
async def test_stale_endpoint_edit_is_refused_and_changes_nothing(
    storage: Storage, how: str
) -> None:
    """An edit made from a version someone else has changed since raises StaleWriteError and
    leaves their change in place; made again from a fresh read, it is written."""
    app = await add_app(storage)
    stale = await add_endpoint(storage, app)
    await _edit_by_someone_else(storage, stale, how)
    theirs = await storage.get_endpoint(app.id, stale.id)
    mine = replace(stale, description="mine", updated_at=NOW + timedelta(seconds=2))

    with pytest.raises(StaleWriteError):
        await storage.update_endpoint(mine, previous=stale)

    assert await storage.get_endpoint(app.id, stale.id) == theirs
    fresh = replace(theirs, description="mine", updated_at=NOW + timedelta(seconds=2))
    assert await storage.update_endpoint(fresh, previous=theirs) == fresh
    now = await storage.get_endpoint(app.id, stale.id)
    assert now.description == "mine"
    assert now.disabled is (how == "disable")


async def test_re_enabling_an_endpoint_clears_failing_since(storage: Storage) -> None:
    """Turning disabled off gives the endpoint a fresh health window; other edits keep it."""
    app = await add_app(storage)
    ep = await add_endpoint(storage, app)
    assert await storage.note_exhausted(ep.id, NOW) == NOW
    edited = replace(ep, description="still failing", updated_at=NOW + timedelta(seconds=1))
    await storage.update_endpoint(edited, previous=ep)
    assert (await storage.get_endpoint(app.id, ep.id)).failing_since == NOW
    assert await storage.disable_endpoint(ep.id, NOW + timedelta(seconds=2))
    disabled = await storage.get_endpoint(app.id, ep.id)

    enabled = replace(disabled, disabled=False, updated_at=NOW + timedelta(seconds=3))
    await storage.update_endpoint(enabled, previous=disabled)

    back = await storage.get_endpoint(app.id, ep.id)
    assert (back.disabled, back.failing_since) == (False, None)


# -- recover ---------------------------------------------------------------------------------


async def test_recover_requeues_canceled_as_well_as_failed(storage: Storage) -> None:
    """recover() queues again the deliveries that were canceled (endpoint disabled) and the
    failed ones, as manual tries; succeeded ones stay done."""
    app = await add_app(storage)
    ep = await add_endpoint(storage, app)
    ends = (DeliveryState.CANCELED, DeliveryState.FAILED, DeliveryState.SUCCESS)
    claimed = []
    for n, state in enumerate(ends):
        await add_message(storage, app, NOW + timedelta(seconds=n))
        (delivery,) = await storage.claim_due(NOW + timedelta(seconds=n), 1, "w1", LEASE)
        assert await storage.record_attempt(None, finished(delivery, state))
        claimed.append(delivery)

    assert await storage.recover(ep.id, NOW - timedelta(hours=1), None, NOW) == 2

    after = [await storage.get_delivery(d.msg_id, ep.id) for d in claimed]
    assert [(d.state, d.trigger) for d in after if d is not None] == [
        (DeliveryState.PENDING, Trigger.MANUAL),
        (DeliveryState.PENDING, Trigger.MANUAL),
        (DeliveryState.SUCCESS, Trigger.SCHEDULED),
    ]


# -- claims ----------------------------------------------------------------------------------


async def test_four_claimers_with_cap_one_never_deadlock_or_share(fresh_pg_url: str) -> None:
    """Four storages on one PostgreSQL database claiming at once (cap 1) over 40 endpoints,
    most of them busy, raise no StorageError (no deadlock) and never claim a delivery twice."""
    stores = [await open_storage(fresh_pg_url) for _ in range(4)]
    try:
        app = await add_app(stores[0])
        for _ in range(40):
            await add_endpoint(stores[0], app)
        for _ in range(25):  # 1000 deliveries, all due at the same moment
            await add_message(stores[0], app, NOW - timedelta(seconds=10))

        async def claimer(store: Storage, worker: str) -> list[str]:
            taken: list[str] = []
            for n in range(25):
                got = await store.claim_due(NOW, 8, worker, LEASE, cap=1)
                taken += [d.id for d in got]
                if n % 2:  # finish every other batch: some endpoints free up, most stay busy
                    done = [(None, finished(d, DeliveryState.SUCCESS)) for d in got]
                    assert all(await store.record_attempts(done))
            return taken

        claims = await asyncio.gather(*(claimer(s, f"w{n}") for n, s in enumerate(stores)))
    finally:
        for store in stores:
            await store.close()

    everything = [d for taken in claims for d in taken]
    assert len(everything) == len(set(everything))
    # how many more than one round of 40 get claimed depends on the interleaving; that a
    # finished endpoint is claimable again is asserted in test_fairness.py
    assert len(everything) >= 40


async def test_healthy_endpoint_is_claimed_behind_large_backlogs(storage: Storage) -> None:
    """With five endpoints' 300-delivery backlogs due first and a cap of 2, claims (each
    reading a bounded part of the queue, continuing where the last one stopped) reach the
    healthy endpoint's delivery queued after them all within a few claims."""
    for k in range(5):
        slow = await add_app(storage)
        await add_endpoint(storage, slow)
        await queue(storage, slow, 300, NOW - timedelta(minutes=10 - k))
    healthy_app = await add_app(storage)
    healthy = await add_endpoint(storage, healthy_app)
    await add_message(storage, healthy_app, NOW - timedelta(seconds=1))

    claimed = await storage.claim_due(NOW, 20, "w1", LEASE, cap=2)
    for _ in range(6):  # 1,500 rows ahead; a claim reads 64 rows, then 256 further on
        if healthy.id in [d.endpoint_id for d in claimed]:
            break
        claimed += await storage.claim_due(NOW, 20, "w1", LEASE, cap=2)

    assert [d.endpoint_id for d in claimed].count(healthy.id) == 1
    assert len(claimed) == 5 * 2 + 1


async def test_endpoints_at_their_cap_are_passed_over_from_the_first_window(
    storage: Storage,
) -> None:
    """Endpoints already at their cap are skipped before reading the queue, so even more of
    them than a claim reads windows cannot hide the delivery of another endpoint."""
    for k in range(10):  # more than a claim reads windows, one window's worth of backlog each
        busy = await add_app(storage)
        await add_endpoint(storage, busy)
        await queue(storage, busy, 2 + 6, NOW - timedelta(minutes=20 - k))
    assert len(await storage.claim_due(NOW, 20, "w1", LEASE, cap=2)) == 20  # all at cap
    healthy_app = await add_app(storage)
    healthy = await add_endpoint(storage, healthy_app)
    await add_message(storage, healthy_app, NOW - timedelta(seconds=1))

    claimed = await storage.claim_due(NOW, 1, "w2", LEASE, cap=2)

    assert [d.endpoint_id for d in claimed] == [healthy.id]


# -- SQLite ----------------------------------------------------------------------------------


async def test_sqlite_write_cancelled_while_waiting_for_the_lock_leaves_it_usable(
    tmp_path: Path,
) -> None:
    """A write cancelled while BEGIN IMMEDIATE waits on another connection's lock is rolled
    back cleanly: the connection is out of the transaction and the next writes work."""
    path = tmp_path / "homing.db"
    storage = await open_storage(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await storage.migrate()
        other.execute("BEGIN IMMEDIATE")  # e.g. `homing token create` in another process

        def release() -> None:
            other.execute("COMMIT")

        asyncio.get_running_loop().call_later(0.3, release)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(storage.create_token("t1", ORG, None, NOW, None), 0.1)

        for token in ("t2", "t3"):
            await storage.create_token(token, ORG, None, NOW, None)
        assert await storage.find_token("t1", NOW) is None
        assert await storage.find_token("t2", NOW) is not None
        assert await storage.find_token("t3", NOW) is not None
    finally:
        other.close()
        await storage.close()
