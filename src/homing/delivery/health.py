"""What follows a recorded attempt beyond the delivery itself: endpoint health (disable after
failing for ``disable_after``, or at once on 410 Gone) and the operational webhooks that go
with it (``message.attempt.failing|exhausted|recovered``, ``endpoint.disabled``)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from homing.core.models import Attempt, Delivery, DeliveryState, Endpoint, Message
from homing.operational import Operational, attempt_data, endpoint_data, iso
from homing.storage import Storage

log = logging.getLogger("homing.worker")

#: failed tries of one message before ``message.attempt.failing`` is sent
FAILING_AFTER = 3
GONE = 410


class Health:
    """Follows each recorded attempt; every method logs rather than raises."""

    def __init__(self, storage: Storage, operational: Operational, disable_after: timedelta):
        self._storage = storage
        self._operational = operational
        self._disable_after = disable_after

    async def after(
        self,
        before: Delivery,
        after: Delivery,
        attempt: Attempt,
        endpoint: Endpoint,
        message: Message,
    ) -> None:
        """React to ``attempt``, which moved the delivery from ``before`` to ``after``."""
        now = attempt.created_at
        if after.state is DeliveryState.SUCCESS:
            if endpoint.failing_since is not None:
                await self._storage.note_success(endpoint.id)
            if before.attempts >= FAILING_AFTER:
                await self._report("message.attempt.recovered", message, attempt)
            return
        if attempt.response_status == GONE:
            await self.disable(endpoint, now, now, "answered 410 Gone")
        if after.state is DeliveryState.FAILED:
            await self._report("message.attempt.exhausted", message, attempt)
            since = await self._storage.note_exhausted(endpoint.id, now)
            if since is not None and now - since >= self._disable_after:
                await self.disable(endpoint, since, now, f"failing since {iso(since)}")
        elif after.attempts == FAILING_AFTER:
            await self._report("message.attempt.failing", message, attempt)

    async def disable(self, endpoint: Endpoint, since: datetime, now: datetime, why: str) -> None:
        if not await self._storage.disable_endpoint(endpoint.id, now):
            return  # already disabled (or gone): reported then
        log.warning("endpoint %s disabled: %s", endpoint.id, why)
        if self._operational.enabled:
            app = await self._operational.source_app(endpoint.org_id, endpoint.app_id)
            data = {**endpoint_data(app, endpoint), "failSince": iso(since), "trigger": "automatic"}
            await self._operational.emit("endpoint.disabled", endpoint.app_id, data)

    async def _report(self, event_type: str, message: Message, attempt: Attempt) -> None:
        if self._operational.enabled:
            app = await self._operational.source_app(message.org_id, message.app_id)
            await self._operational.emit(
                event_type, message.app_id, attempt_data(app, message, attempt)
            )
