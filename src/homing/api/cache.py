"""Event types as ingest sees them, cached for a moment per process.

Every message is checked against its event type's schema; reading the event type on each
message would be one more database round trip on the hottest path. Changes made through this
process are seen at once (the routes call ``forget``); changes made through another API
process are seen within ``ttl`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from homing.core.models import EventType
from homing.errors import NotFoundError
from homing.storage import Storage

DEFAULT_TTL = 1.0  # seconds
MAX_ENTRIES = 10_000


class EventTypeCache:
    def __init__(
        self,
        storage: Storage,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._ttl = ttl
        self._clock = clock
        self._known: dict[tuple[str, str], tuple[float, EventType | None]] = {}

    async def get(self, org_id: str, name: str) -> EventType | None:
        """The event type, or None when the organisation has none of that name."""
        key = (org_id, name)
        now = self._clock()
        cached = self._known.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found: EventType | None = await self._storage.get_event_type(org_id, name)
        except NotFoundError:
            found = None
        if len(self._known) >= MAX_ENTRIES:
            self._known.clear()
        self._known[key] = (now + self._ttl, found)
        return found

    def forget(self, org_id: str, name: str) -> None:
        self._known.pop((org_id, name), None)
