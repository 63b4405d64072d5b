"""Operational webhooks: Homing tells the operator what happens to endpoints and deliveries
by sending ordinary messages (Svix's event types and payload shapes) to one application of
the default organisation, named by ``HOMING_OPERATIONAL_APP`` (id or uid). The operator
subscribes endpoints to that application like any other.

Events about the operational application itself are never reported (no feedback loop), and a
failure to report is logged, never raised: reporting must not break what it reports on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from homing.core.models import DEFAULT_ORG, Application, Attempt, Endpoint, Message
from homing.errors import HomingError, NotFoundError
from homing.ids import new_id
from homing.storage import Storage

log = logging.getLogger("homing.operational")

EVENT_TYPES = (
    "endpoint.created",
    "endpoint.updated",
    "endpoint.deleted",
    "endpoint.disabled",
    "message.attempt.exhausted",
    "message.attempt.failing",
    "message.attempt.recovered",
)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def endpoint_data(app: Application | None, endpoint: Endpoint) -> dict[str, Any]:
    return {
        "appId": endpoint.app_id,
        "appUid": app.uid if app else None,
        "endpointId": endpoint.id,
        "endpointUid": endpoint.uid,
    }


def attempt_data(app: Application | None, message: Message, attempt: Attempt) -> dict[str, Any]:
    return {
        "appId": message.app_id,
        "appUid": app.uid if app else None,
        "msgId": message.id,
        "msgEventId": message.event_id,
        "endpointId": attempt.endpoint_id,
        "lastAttempt": {
            "id": attempt.id,
            "timestamp": iso(attempt.created_at),
            "responseStatusCode": attempt.response_status,
        },
    }


class Operational:
    """Sends operational webhooks through ``storage`` (a no-op when none is configured)."""

    def __init__(self, target: str, storage: Storage, clock: Callable[[], datetime]) -> None:
        self._target = target
        self._storage = storage
        self._clock = clock
        self._app: Application | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._target)

    async def _application(self) -> Application | None:
        if self._app is None:
            try:
                self._app = await self._storage.get_application(DEFAULT_ORG, self._target)
            except NotFoundError:
                log.warning("operational application %r does not exist", self._target)
        return self._app

    async def source_app(self, org_id: str, app_id: str) -> Application | None:
        """The application an event is about (for its uid), or None if it is gone."""
        try:
            return await self._storage.get_application(org_id, app_id)
        except NotFoundError:
            return None

    async def emit(self, event_type: str, about_app_id: str, data: dict[str, Any]) -> None:
        """Send ``{"type", "timestamp", "data"}`` as a message of ``event_type``."""
        if not self.enabled:
            return
        try:
            app = await self._application()
            if app is None or about_app_id == app.id:
                return
            now = self._clock()
            body = {"type": event_type, "timestamp": iso(now), "data": data}
            await self._storage.create_message(
                Message(
                    id=new_id("msg"),
                    org_id=app.org_id,
                    app_id=app.id,
                    event_type=event_type,
                    event_id=None,
                    payload=json.dumps(body, separators=(",", ":")),
                    channels=None,
                    tags=None,
                    created_at=now,
                )
            )
        except HomingError as exc:
            self._app = None  # look it up again next time (it may have been deleted)
            log.warning("could not send operational webhook %s: %s", event_type, exc)
