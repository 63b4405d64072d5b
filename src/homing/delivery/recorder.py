"""Batched result writes: under load, the results of many sends share one transaction.

Each send awaits its own result (did the lease hold?), so a delivery's slot is only freed once
its outcome is durable; the batching is invisible to the caller. A batch is written after at
most ``linger`` seconds or as soon as ``max_batch`` results wait, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib

from homing.core.models import Attempt, Delivery, DeliveryState
from homing.storage import Storage

DEFAULT_LINGER = 0.001  # seconds
DEFAULT_MAX_BATCH = 256


class Recorder:
    def __init__(
        self, storage: Storage, linger: float = DEFAULT_LINGER, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self._storage = storage
        self._linger = linger
        self._max_batch = max_batch
        self._waiting: list[
            tuple[Attempt | None, Delivery, asyncio.Future[DeliveryState | None]]
        ] = []
        self._full = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def record(self, attempt: Attempt | None, delivery: Delivery) -> DeliveryState | None:
        """Write ``attempt`` and ``delivery``'s new state (see ``Storage.record_attempts``):
        the state stored, or None when the lease was lost. Raises what the storage raised."""
        future: asyncio.Future[DeliveryState | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((attempt, delivery, future))
        if len(self._waiting) >= self._max_batch:
            self._full.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._linger)
            self._full.clear()
            batch, self._waiting = (
                self._waiting[: self._max_batch],
                self._waiting[self._max_batch :],
            )
            await self._write_batch(batch)

    async def _write_batch(
        self, batch: list[tuple[Attempt | None, Delivery, asyncio.Future[DeliveryState | None]]]
    ) -> None:
        """Write ``batch`` in one transaction; if that fails, each result on its own, so
        that one result the database refuses cannot hold back the others."""
        try:
            kept = await self._storage.record_attempts([(a, d) for a, d, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    await self._write_batch([item])
                return
            if not batch[0][2].done():  # the send learns of it and logs it
                batch[0][2].set_exception(exc)
            return
        for (*_, future), held in zip(batch, kept, strict=True):
            if not future.done():
                future.set_result(held)

    async def close(self) -> None:
        """Wait for the results already handed in to be written."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
