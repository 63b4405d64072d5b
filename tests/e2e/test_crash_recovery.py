"""Crash and shutdown behaviour of real ``homing`` processes: a worker killed with SIGKILL
mid-send loses nothing (its leases run out and another worker redelivers), two workers on one
PostgreSQL deliver each message exactly once, and SIGTERM ends a worker cleanly.

The lease of a claimed delivery is ``request_timeout + lease_margin`` (30 s by default); the
processes here run with ``HOMING_LEASE_MARGIN=3`` so a dead worker's leases run out in 4 s and
the redelivery tests stay short. PostgreSQL tests use ``fresh_pg_url`` (skipped loudly
without ``HOMING_TEST_POSTGRES_DSN``, mandatory under ``CI=true``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import HomingProcess, stop_homing
from .receiver import (
    Api,
    Reply,
    ScriptedReceiver,
    answer,
    attempt_count,
    delivery_states,
    eventually,
    gated,
    hang,
    kill_hard,
    launch,
    missing,
    new_token,
)

pytestmark = pytest.mark.e2e

MESSAGES = 200
# The worker is killed once the receiver has this many requests; each is held 200 ms, so the
# latest ones are still in flight.
KILL_AFTER = 40
REQUEST_TIMEOUT = 1
LEASE_MARGIN = 3
LEASE = REQUEST_TIMEOUT + LEASE_MARGIN
REDELIVERY_WITHIN = 60.0
FAST_RETRIES = {"RETRY_SCHEDULE": "1,1,1,1,1", "RETRY_JITTER": "0"}


@pytest.fixture
def hooks() -> Iterator[ScriptedReceiver]:
    """A running scripted receiver on 127.0.0.1."""
    receiver = ScriptedReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def running() -> Iterator[list[HomingProcess]]:
    """Processes a test started; each is stopped (SIGTERM, then SIGKILL) after the test."""
    processes: list[HomingProcess] = []
    yield processes
    for process in processes:
        stop_homing(process)


def _settings(timeout: float, token: str, **more: str) -> dict[str, str]:
    return {
        "REQUEST_TIMEOUT": str(timeout),
        "LEASE_MARGIN": str(LEASE_MARGIN),
        "BOOTSTRAP_TOKEN": token,
        **FAST_RETRIES,
        **more,
    }


def _post_through_a_crash(
    api: Api, app_id: str, hooks: ScriptedReceiver, crash: Callable[[], Api]
) -> list[str]:
    """Post ``MESSAGES`` messages; once ``KILL_AFTER`` requests arrived call ``crash`` (which
    returns the API to go on with). Returns the ids of the acknowledged (202) messages."""
    acked: list[str] = []
    crashed = False
    for n in range(MESSAGES):
        acked.append(api.send(app_id, {"n": n, "pad": "x" * 64}))
        if not crashed and len(hooks.seen()) >= KILL_AFTER:
            api = crash()
            crashed = True
    if not crashed:
        eventually(
            lambda: True if len(hooks.seen()) >= KILL_AFTER else None,
            f"{KILL_AFTER} deliveries before the crash",
            10,
        )
        crash()
    return acked


def _assert_all_redelivered(
    database_url: str, hooks: ScriptedReceiver, acked: list[str], killed_at: float
) -> None:
    """Every acknowledged message reached the receiver within ``REDELIVERY_WITHIN`` s of the
    kill, and every delivery row ends in 'success' (none left 'sending')."""
    while True:
        lost = missing(acked, hooks.webhook_ids())
        if not lost:
            break
        if time.monotonic() - killed_at > REDELIVERY_WITHIN:
            pytest.fail(
                f"{len(lost)} of {len(acked)} acknowledged messages never reached the "
                f"receiver within {REDELIVERY_WITHIN} s of the SIGKILL (lease {LEASE} s); "
                f"delivery states now: {dict(delivery_states(database_url))}",
                pytrace=False,
            )
        time.sleep(0.2)
    states = eventually(
        lambda: (lambda s: s if s == {"success": len(acked)} else None)(
            delivery_states(database_url)
        ),
        f"all {len(acked)} deliveries to be 'success' (now {dict(delivery_states(database_url))})",
        10,
    )
    assert states["sending"] == 0
    # duplicates are allowed (at-least-once), but each carries the message's own webhook-id
    assert set(hooks.webhook_ids()) == set(acked)


def test_worker_killed_mid_send_redelivers_everything_postgres(
    fresh_pg_url: str, hooks: ScriptedReceiver, running: list[HomingProcess], tmp_path: Path
) -> None:
    """After SIGKILL of a `homing worker` mid-send, a new worker delivers every acknowledged
    message once the dead worker's leases expire, and no delivery is left 'sending'."""
    hooks.script("/slow", answer(200, delay=0.2))
    settings = _settings(REQUEST_TIMEOUT, new_token())
    running.append(launch("api", fresh_pg_url, tmp_path, settings))
    worker = launch("worker", fresh_pg_url, tmp_path, settings)
    running.append(worker)
    api = Api(running[0].base_url, settings["BOOTSTRAP_TOKEN"])
    killed_at: list[float] = []

    def crash() -> Api:
        kill_hard(worker)
        killed_at.append(time.monotonic())
        orphaned = delivery_states(fresh_pg_url)["sending"]
        assert orphaned > 0, "no delivery was in flight at the SIGKILL: the test proves nothing"
        running.append(launch("worker", fresh_pg_url, tmp_path, settings))
        return api

    try:
        app_id, _ = api.app_with_endpoint(hooks.url("/slow"))
        acked = _post_through_a_crash(api, app_id, hooks, crash)
    finally:
        api.close()
    _assert_all_redelivered(fresh_pg_url, hooks, acked, killed_at[0])
    assert "expired leases returned to the queue" in running[-1].stderr()


def test_serve_killed_mid_send_redelivers_everything_sqlite(
    hooks: ScriptedReceiver, running: list[HomingProcess], tmp_path: Path
) -> None:
    """After SIGKILL of `homing serve` on SQLite mid-send, the restarted process delivers every
    acknowledged message once the leases expire, and no delivery is left 'sending'."""
    hooks.script("/slow", answer(200, delay=0.2))
    url = "sqlite:///" + str(tmp_path / "crash.db")
    settings = _settings(REQUEST_TIMEOUT, new_token())
    first = launch("serve", url, tmp_path, settings)
    running.append(first)
    apis = [Api(first.base_url, settings["BOOTSTRAP_TOKEN"])]
    killed_at: list[float] = []

    def crash() -> Api:
        kill_hard(first)
        killed_at.append(time.monotonic())
        orphaned = delivery_states(url)["sending"]
        assert orphaned > 0, "no delivery was in flight at the SIGKILL: the test proves nothing"
        running.append(launch("serve", url, tmp_path, settings))  # same file, same token
        apis.append(Api(running[-1].base_url, settings["BOOTSTRAP_TOKEN"]))
        return apis[-1]

    try:
        app_id, _ = apis[0].app_with_endpoint(hooks.url("/slow"))
        acked = _post_through_a_crash(apis[0], app_id, hooks, crash)
    finally:
        for api in apis:
            api.close()
    _assert_all_redelivered(url, hooks, acked, killed_at[0])
    assert "expired leases returned to the queue" in running[-1].stderr()


PER_WORKER = 64  # sends in flight per worker here: two workers hold 128 of the 300 at once


def test_two_workers_deliver_each_message_exactly_once(
    fresh_pg_url: str, hooks: ScriptedReceiver, running: list[HomingProcess], tmp_path: Path
) -> None:
    """Two `homing worker` processes on one PostgreSQL share a backlog and deliver each
    message exactly once."""
    total = 300
    hooks.script("/gated", gated())
    token = new_token()
    # a timeout far longer than any request is held; no per-endpoint cap below what two
    # workers send at once (the cap counts across workers)
    settings = _settings(10, token, ENDPOINT_CONCURRENCY="1000", WORKER_CONCURRENCY=str(PER_WORKER))
    api_process = launch("api", fresh_pg_url, tmp_path, settings)
    running.append(api_process)
    api = Api(api_process.base_url, token)
    try:
        app_id, _ = api.app_with_endpoint(hooks.url("/gated"))
        acked = [api.send(app_id, {"n": n}) for n in range(total)]
    finally:
        api.close()
    started = time.monotonic()
    running.append(launch("worker", fresh_pg_url, tmp_path, settings))
    # the receiver holds every request, so the first worker fills its slots and stops there
    hooks.wait_for("/gated", PER_WORKER, timeout=15)
    running.append(launch("worker", fresh_pg_url, tmp_path, settings))
    # more requests in flight than one worker ever sends at once: the second one works too
    hooks.wait_for("/gated", 2 * PER_WORKER, timeout=15)
    hooks.open_gate()
    eventually(
        lambda: True if not missing(acked, hooks.webhook_ids()) else None,
        f"all {total} messages at the receiver",
        30,
    )
    eventually(
        lambda: True if delivery_states(fresh_pg_url) == {"success": total} else None,
        f"all {total} deliveries 'success'",
        10,
    )
    received = hooks.webhook_ids()
    assert {i: n for i, n in received.items() if n != 1} == {}
    assert sorted(received) == sorted(acked)
    assert attempt_count(fresh_pg_url) == total
    assert time.monotonic() - started < 45


@pytest.mark.parametrize(
    ("reply", "final"),
    [
        pytest.param(answer(200, delay=1.5), "success", id="slow-receiver-finishes"),
        pytest.param(hang(), "pending", id="hanging-receiver-released"),
    ],
)
def test_sigterm_ends_worker_within_deadline_and_leaves_nothing_sending(
    fresh_pg_url: str,
    hooks: ScriptedReceiver,
    running: list[HomingProcess],
    tmp_path: Path,
    reply: Reply,
    final: str,
) -> None:
    """SIGTERM to a worker with sends in flight ends it (exit 0) within request_timeout + 5 s,
    each send finished or released and recorded, and no delivery left 'sending'."""
    in_flight, timeout = 10, 2.0
    hooks.script("/slow", reply)
    token = new_token()
    api_process = launch("api", fresh_pg_url, tmp_path, _settings(timeout, token))
    running.append(api_process)
    worker = launch("worker", fresh_pg_url, tmp_path, _settings(timeout, token))
    running.append(worker)
    api = Api(api_process.base_url, token)
    try:
        app_id, _ = api.app_with_endpoint(hooks.url("/slow"))
        for n in range(in_flight):
            api.send(app_id, {"n": n})
    finally:
        api.close()
    hooks.wait_for("/slow", in_flight, timeout=10)
    assert worker.proc is not None
    stopped_at = time.monotonic()
    worker.proc.terminate()
    code = worker.proc.wait(timeout=timeout + 10)
    took = time.monotonic() - stopped_at
    assert code == 0, worker.stderr()
    assert took <= timeout + 5, f"the worker took {took:.1f} s to stop"
    assert delivery_states(fresh_pg_url) == {final: in_flight}
    assert attempt_count(fresh_pg_url) == in_flight
    assert len(hooks.seen("/slow")) == in_flight
