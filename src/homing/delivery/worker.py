"""The delivery worker: claim due deliveries, send each, record the attempt and the next state.

A thin loop around pure decisions: ``core.retry.next_attempt_at`` says when to try again,
``core.states.transition`` says where the delivery goes; storage owns leases and transactions.

- **Claiming**: ``claim_due`` leases due deliveries into per-endpoint queues in this process,
  up to ``LEASES_PER_SLOT`` leases per send slot in all. An endpoint that answered its last
  request from this worker within ``QUICK_ANSWER``, and that no other worker serves right now,
  may be leased up to ``PREFETCH`` times its in-flight cap (``endpoint_concurrency``) ahead, so
  its next delivery is at hand when a send ends; the worker itself never sends more than the
  cap to one endpoint at once (see ``core.pacing``). Any other endpoint is leased only as far
  as its cap and the free send slots allow, so a slow endpoint's deliveries are never held up
  in a queue while another worker could send them. A queued delivery whose lease could run
  out during its try is handed back unsent (``states.release``).
- **Waking**: when nothing is due, the worker waits on ``storage.db.wait_for_work`` (PostgreSQL
  LISTEN/NOTIFY, or SQLite's in-process event), so a new message goes out at once; otherwise it
  polls every ``poll_interval`` seconds, sooner when a retry it scheduled itself falls due.
- **Recovery**: every ``RECLAIM_INTERVAL`` it returns deliveries whose worker died (lease ran
  out) to the queue.
- **Stopping**: once ``stop`` is set nothing new is claimed or started, the queued deliveries are
  handed back, and ``run`` returns after the sends in flight end (each is bounded by the request
  deadline).

Logs name deliveries and endpoints by id only: never URLs (their query may hold a token),
header values or keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from homing.config import Settings
from homing.core.models import Attempt, Delivery, DeliveryState, Endpoint, Message, MessageStatus
from homing.core.retry import RetryPolicy, Rng, next_attempt_at
from homing.core.states import Outcome, cancel, is_success, release, transition
from homing.delivery.health import Health
from homing.delivery.recorder import Recorder
from homing.delivery.sender import Sender, build_request
from homing.ids import new_id
from homing.operational import Operational
from homing.signing import InvalidSecretError
from homing.storage import Storage

log = logging.getLogger("homing.worker")

RECLAIM_INTERVAL = timedelta(seconds=5)
PURGE_INTERVAL = timedelta(minutes=10)
IDEMPOTENCY_TTL = timedelta(hours=24)  # how long an Idempotency-Key answers the same
DEFAULT_POLL_INTERVAL = 2.0
# deliveries asked for per claim: asking for many more than can be queued (endpoints at their
# allowance) would only make each claim read rows for nothing; the next claim is a moment away
CLAIM_BATCH = 256
CLAIM_LINGER = 0.001  # seconds to wait after a wake-up so that one claim serves several slots
PREFETCH = 16  # leases one worker may hold of an endpoint it alone serves, in endpoint caps
LEASES_PER_SLOT = 4  # leases held at most (queued, sending or recording), per send slot
QUICK_ANSWER = 1000  # ms: an endpoint answering faster is leased ahead (PREFETCH)
QUICK_MEMORY = 10_000  # endpoints remembered as quick at most

Job = tuple[Delivery, Message | None, Endpoint | None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_worker_id() -> str:
    """``host-pid-random``: unique per process, and readable in the delivery table."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def attempt_record(delivery: Delivery, url: str, outcome: Outcome, at: datetime) -> Attempt:
    """The stored ``Attempt`` for ``outcome``, a try of ``delivery`` to ``url`` ending ``at``."""
    return Attempt(
        id=new_id("atmpt"),
        org_id=delivery.org_id,
        app_id=delivery.app_id,
        msg_id=delivery.msg_id,
        endpoint_id=delivery.endpoint_id,
        delivery_id=delivery.id,
        url=url,
        status=MessageStatus.SUCCESS if is_success(outcome) else MessageStatus.FAIL,
        response_status=outcome.status,
        response_body=outcome.body,
        request_headers=outcome.request_headers,
        failure_class=outcome.failure_class,
        failure_message=outcome.message.replace("\x00", "\ufffd") or None,
        duration_ms=outcome.duration_ms,
        trigger=delivery.trigger,
        created_at=at,
    )


class Worker:
    """Delivers due messages from ``storage`` until stopped (``run``) or idle (``run_until_idle``).

    ``sender`` (default: a ``Sender`` made from ``settings`` and closed by the worker), ``clock``
    and ``rng`` are injectable for tests; a sender passed in stays the caller's to close.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        sender: Sender | None = None,
        clock: Callable[[], datetime] | None = None,
        rng: Rng | None = None,
        worker_id: str | None = None,
        *,
        concurrency: int | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.worker_id = worker_id or default_worker_id()
        self._storage = storage
        self._sender = sender if sender is not None else Sender(settings)
        self._owns_sender = sender is None
        self._clock = clock or _utcnow
        self._rng: Rng = rng if rng is not None else random.Random()
        self._policy = RetryPolicy(schedule=settings.retry_schedule, jitter=settings.retry_jitter)
        self._schedules = ScheduleCache(storage)
        self._recorder = Recorder(storage)
        self._lease = timedelta(seconds=settings.request_timeout + settings.lease_margin)
        self._cap = settings.endpoint_concurrency
        self._health = Health(
            storage,
            Operational(settings.operational_app, storage, self._clock),
            timedelta(seconds=settings.disable_after),
        )
        self._concurrency = concurrency or settings.worker_concurrency
        self._poll_interval = poll_interval
        # a queued delivery starts only while its lease outlasts a try by half the margin
        self._start_by = timedelta(seconds=settings.request_timeout + settings.lease_margin / 2)
        self._queued: dict[str, deque[Job]] = {}  # claimed, not started, per endpoint
        self._sending: dict[str, int] = {}  # sends in flight per endpoint
        self._n_sending = 0
        self._quick: set[str] = set()  # endpoints whose last answer was quick
        self._tasks: set[asyncio.Task[None]] = set()  # one per started delivery, until recorded
        self._starting = True  # False once stopping: nothing new starts
        self._slot_freed = asyncio.Event()
        self._reclaimed_at: datetime | None = None
        self._purged_at: datetime | None = None
        self._soonest: datetime | None = None

    # -- the loops ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then hand back what is queued, finish the sends in
        flight and return.

        Storage errors are logged and retried after ``poll_interval``; nothing is raised but
        cancellation (which cancels the sends in flight).
        """
        log.info("worker %s started", self.worker_id)
        try:
            while not stop.is_set():
                await self._step(stop)
            await self._wind_down()
        finally:
            await self._abandon()
            await self._close()
            log.info("worker %s stopped", self.worker_id)

    async def _step(self, stop: asyncio.Event) -> None:
        """Claim what the lease budget allows and start what the caps allow; or wait for a
        slot, work or stop."""
        self._slot_freed.clear()
        room = min(self._concurrency * LEASES_PER_SLOT - self._held(), CLAIM_BATCH)
        if room <= 0:
            await self._pause(stop, self._poll_interval, self._slot_freed.wait())
            await asyncio.sleep(CLAIM_LINGER)  # let a few more finish: fewer, larger claims
            return
        try:
            claimed = await self._claim(room)
        except Exception:
            log.exception("worker %s: claiming failed; retrying soon", self.worker_id)
            await self._pause(stop, self._poll_interval, None)
            return
        self._dispatch()
        if claimed < room:  # nothing more may be leased now: sleep until that changes
            timeout = self._idle_timeout()
            await self._pause(stop, timeout, self._more_work(timeout))
            await asyncio.sleep(CLAIM_LINGER)

    async def _more_work(self, timeout: float) -> None:
        """Return when new work is announced, or when one of our deliveries is recorded (its
        lease is free again: an endpoint at its allowance may take the next one now)."""
        waits = [
            asyncio.ensure_future(self._storage.db.wait_for_work(timeout)),
            asyncio.ensure_future(self._slot_freed.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run_until_idle(self) -> int:
        """Deliver until nothing is due now; return how many deliveries were processed.

        For tests and one-shot jobs. Storage errors propagate.
        """
        processed = 0
        try:
            while True:
                claimed = await self._claim(self._concurrency)
                if not claimed:
                    return processed
                processed += claimed
                self._dispatch()
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        finally:
            await self._abandon()
            await self._close()

    def _free_slots(self) -> int:
        """How many deliveries of endpoints not leased ahead may be claimed now: the send
        slots not taken by sends or by queued deliveries that could start (more would wait
        here, leased, while another worker might send them); but while an endpoint has more
        queued than its cap lets start, at least a cap's worth, so that a backlog keeping
        every send slot busy cannot keep the other endpoints out."""
        ready = backlog = 0
        for endpoint_id, queue in self._queued.items():
            room = max(0, self._cap - self._sending.get(endpoint_id, 0))
            ready += min(len(queue), room)
            backlog += max(0, len(queue) - room)
        free = self._concurrency - self._n_sending - ready
        if backlog:
            free = max(free, self._cap - ready)
        return max(0, free)

    def _held(self) -> int:
        """Leases this worker holds: queued, sending or being recorded."""
        return sum(map(len, self._queued.values())) + len(self._tasks)

    def _dispatch(self) -> None:
        """Start queued deliveries while the worker is under its concurrency: one per endpoint
        in turn (round robin), each endpoint under its cap, oldest claim first."""
        started = True
        while started and self._n_sending < self._concurrency:
            started = False
            for endpoint_id in list(self._queued):
                if self._n_sending >= self._concurrency:
                    return
                started |= self._start_one(endpoint_id)

    def _start_queued(self, endpoint_id: str) -> None:
        """Start what ``endpoint_id``'s cap allows of its queue."""
        while self._start_one(endpoint_id):
            pass

    def _start_one(self, endpoint_id: str) -> bool:
        """Start the endpoint's oldest queued delivery if its cap and the worker allow; its
        queue then goes to the back of the turn. Whether one started."""
        queue = self._queued.get(endpoint_id)
        if (
            not queue
            or not self._starting
            or self._sending.get(endpoint_id, 0) >= self._cap
            or self._n_sending >= self._concurrency
        ):
            return False
        job = queue.popleft()
        self._sending[endpoint_id] = self._sending.get(endpoint_id, 0) + 1
        self._n_sending += 1
        task = asyncio.create_task(self._process(*job))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        del self._queued[endpoint_id]  # to the back of the turn, or gone when empty
        if queue:
            self._queued[endpoint_id] = queue
        return True

    def _sent(self, endpoint_id: str, outcome: Outcome | None) -> None:
        """A send ended (its result is still to be recorded): its slot takes the next one."""
        if outcome is not None and outcome.status and outcome.duration_ms < QUICK_ANSWER:
            if len(self._quick) >= QUICK_MEMORY:
                self._quick.clear()
            self._quick.add(endpoint_id)
        else:
            self._quick.discard(endpoint_id)
        self._n_sending -= 1
        left = self._sending[endpoint_id] - 1
        if left:
            self._sending[endpoint_id] = left
        else:
            del self._sending[endpoint_id]
        if self._n_sending == self._concurrency - 1:  # the worker was full: any endpoint
            self._dispatch()
        else:
            self._start_queued(endpoint_id)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    async def _wind_down(self) -> None:
        """Start nothing more, hand back the queued deliveries, wait for the sends."""
        self._starting = False
        jobs = [job for queue in self._queued.values() for job in queue]
        self._queued.clear()
        now = self._clock()
        results = await asyncio.gather(
            *(self._recorder.record(None, release(job[0], now)) for job in jobs),
            return_exceptions=True,
        )
        if failed := [r for r in results if isinstance(r, Exception)]:
            # their leases run out instead: they are claimed again then
            log.warning("worker %s: handing back failed: %s", self.worker_id, failed[0])
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _abandon(self) -> None:
        """Cancel what is still running (only when cancelled ourselves); the leases of what
        is dropped run out and those deliveries are claimed again."""
        self._starting = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queued.clear()

    async def _close(self) -> None:
        await self._recorder.close()
        if self._owns_sender:
            await self._sender.close()

    async def _pause(
        self, stop: asyncio.Event, timeout: float, wake: Awaitable[object] | None
    ) -> None:
        """Wait until ``stop`` is set, ``wake`` finishes or ``timeout`` seconds pass."""
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake))
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        failed = [w.exception() for w in done if not w.cancelled() and w.exception()]
        if failed and not stop.is_set():
            # e.g. the LISTEN connection is down: do not spin, wait out the interval
            log.warning("worker %s: waiting for work failed: %s", self.worker_id, failed[0])
            await self._pause(stop, timeout, None)

    def _idle_timeout(self) -> float:
        """The poll interval, shortened to the next retry this worker scheduled itself."""
        if self._soonest is None:
            return self._poll_interval
        left = (self._soonest - self._clock()).total_seconds()
        if left <= 0:
            self._soonest = None
            return 0.0
        return min(self._poll_interval, left)

    async def _claim(self, limit: int) -> int:
        """Reclaim dead leases when due; lease up to ``limit`` deliveries with their messages
        and endpoints (one query each for the whole batch) into the queues; return how many."""
        now = self._clock()
        if self._reclaimed_at is None or now - self._reclaimed_at >= RECLAIM_INTERVAL:
            self._reclaimed_at = now
            if count := await self._storage.reclaim_expired(now):
                log.warning(
                    "worker %s: %d expired leases returned to the queue", self.worker_id, count
                )
        if self._purged_at is None or now - self._purged_at >= PURGE_INTERVAL:
            self._purged_at = now
            await self._storage.purge_idempotency(now - IDEMPOTENCY_TTL)
        claimed = await self._storage.claim_due(
            now=now,
            limit=limit,
            worker=self.worker_id,
            lease=self._lease,
            cap=self._cap,
            prefetch=dict.fromkeys(self._quick, self._cap * PREFETCH),
            plain=self._free_slots(),
        )
        if not claimed:
            return 0
        messages = await self._storage.get_messages(sorted({d.msg_id for d in claimed}))
        endpoints = await self._storage.get_endpoints(sorted({d.endpoint_id for d in claimed}))
        for delivery in claimed:
            job = (delivery, messages.get(delivery.msg_id), endpoints.get(delivery.endpoint_id))
            self._queued.setdefault(delivery.endpoint_id, deque()).append(job)
        return len(claimed)

    # -- one delivery ------------------------------------------------------------------------

    async def _process(
        self, delivery: Delivery, message: Message | None, endpoint: Endpoint | None
    ) -> None:
        """Send one claimed delivery and record the result; log (never raise) any error."""
        try:
            await self._deliver(delivery, message, endpoint)
        except Exception:
            # the lease runs out and the delivery is claimed again: nothing is lost
            log.exception("delivery %s: processing failed", delivery.id)

    async def _deliver(
        self, delivery: Delivery, message: Message | None, endpoint: Endpoint | None
    ) -> None:
        now = self._clock()
        outcome: Outcome | None = None
        # queued too long: a try now could outlive the lease
        late = delivery.lease_until is not None and delivery.lease_until - now < self._start_by
        try:
            if message is not None and endpoint is not None and not endpoint.disabled and not late:
                try:
                    outcome = await self._sender.send(build_request(message, endpoint, now))
                except InvalidSecretError as exc:  # nothing was sent: the endpoint cannot sign
                    outcome = Outcome(status=0, failure_class="signing", message=str(exc))
        finally:
            self._sent(delivery.endpoint_id, outcome)
        if late and outcome is None:
            await self._recorder.record(None, release(delivery, now))
            return
        if outcome is None or message is None or endpoint is None:
            await self._recorder.record(None, cancel(delivery, now))
            log.info("delivery %s canceled: endpoint or message gone or disabled", delivery.id)
            return
        await self._record(delivery, endpoint, message, outcome)

    async def _record(
        self, delivery: Delivery, endpoint: Endpoint, message: Message, outcome: Outcome
    ) -> None:
        """Store the attempt and the delivery's next state; then endpoint health."""
        done_at = self._clock()
        policy = self._policy
        schedule = await self._schedules.get(message.org_id, message.event_type, done_at)
        if schedule is not None:  # () is a schedule too: one try, no retries
            policy = replace(policy, schedule=schedule)
        next_at = next_attempt_at(policy, delivery.attempts + 1, outcome, done_at, self._rng)
        moved = transition(delivery, outcome, done_at, next_at)
        attempt = attempt_record(delivery, endpoint.url, outcome, done_at)
        stored = await self._recorder.record(attempt, moved)
        if stored is None:
            log.warning("delivery %s: lease lost; another worker owns it now", delivery.id)
            return
        if stored is not moved.state:  # a resend queued it again: it is not over
            moved = replace(moved, state=stored, next_attempt_at=done_at)
        await self._health.after(delivery, moved, attempt, endpoint, message)
        if not is_success(outcome):
            log.info(
                "delivery %s to endpoint %s: try %d failed: %s (%s); now %s",
                delivery.id,
                endpoint.id,
                moved.attempts,
                outcome.failure_class,
                outcome.message,
                moved.state.value,
            )
        if moved.state is DeliveryState.PENDING and next_at is not None:
            self._soonest = next_at if self._soonest is None else min(self._soonest, next_at)


class ScheduleCache:
    """Per-event-type retry schedules, read at most every ``TTL`` per event type."""

    TTL = timedelta(seconds=30)

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._known: dict[tuple[str, str], tuple[datetime, tuple[int, ...] | None]] = {}

    async def get(self, org_id: str, event_type: str, now: datetime) -> tuple[int, ...] | None:
        """The schedule event type ``event_type`` of ``org_id`` sets, or None (the default)."""
        key = (org_id, event_type)
        cached = self._known.get(key)
        if cached is None or cached[0] <= now:
            found = await self._storage.retry_schedules(org_id, [event_type])
            cached = (now + self.TTL, found.get(event_type))
            if len(self._known) > 10_000:  # bound the memory of many event types
                self._known.clear()
            self._known[key] = cached
        return cached[1]
