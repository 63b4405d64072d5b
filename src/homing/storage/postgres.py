"""PostgreSQL adapter (asyncpg): a connection pool, ``FOR UPDATE SKIP LOCKED`` claims and
LISTEN/NOTIFY wake-ups, so any number of API and worker processes can share one database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from homing.errors import ConflictError, StorageError
from homing.storage.base import Row

CHANNEL = "homing_work"
NOTIFY_COALESCE = 0.005  # seconds
log = logging.getLogger("homing.storage")
_MIGRATION_LOCK = 0x686F6D696E67  # "homing"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. The default runs RESET ALL, UNLISTEN and more: a round trip on
    every release. Pool connections never change session state (locks are per transaction,
    LISTEN has its own connection), so an open transaction's rollback, which asyncpg does
    anyway, is all the reset they need."""


def _refused(exc: asyncpg.PostgresError, what: str) -> StorageError:
    """A driver error in Homing's terms: a unique key taken is a ConflictError (two writers
    raced past the same check), anything else a StorageError."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return ConflictError("An object with this key already exists.")
    return StorageError(f"PostgreSQL refused {what}: {exc}")


class PgConnection:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        try:
            result: Sequence[Row] = await self._conn.fetch(sql, *args)
        except asyncpg.PostgresError as exc:
            raise _refused(exc, "a query") from exc
        return result

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        found = await self.fetch(sql, *args)
        return found[0] if found else None

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._conn.execute(sql, *args)
        except asyncpg.PostgresError as exc:
            raise _refused(exc, "a statement") from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, args)
        except asyncpg.PostgresError as exc:
            raise _refused(exc, "a statement") from exc

    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Binary COPY: no statement to parse or plan, no parameter limit."""
        try:
            await self._conn.copy_records_to_table(table, records=rows, columns=list(columns))
        except asyncpg.PostgresError as exc:
            raise _refused(exc, "a statement") from exc

    async def execute_script(self, script: str) -> None:
        await self._conn.execute(script)


class PostgresDatabase:
    dialect = "postgres"
    row_lock = " FOR NO KEY UPDATE"
    row_lock_skip = " FOR NO KEY UPDATE SKIP LOCKED"
    find_function = "strpos"

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._notifier: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 10) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, reset=_keep_session
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(pool, dsn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgConnection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PgConnection(conn)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[PgConnection]:
        async with self._pool.acquire() as conn:
            yield PgConnection(conn)

    async def lock_migrations(self, conn: Any) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)

    async def notify(self) -> None:
        """Wake workers everywhere. Calls close together share one NOTIFY: under load an API
        process sends a few per second instead of one per message."""
        self._wake.set()
        if self._notifier is None or self._notifier.done():
            self._notifier = asyncio.create_task(self._send_notify())

    async def _send_notify(self) -> None:
        await asyncio.sleep(NOTIFY_COALESCE)
        try:
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # workers also poll, so a lost wake-up only delays delivery by the poll interval
            log.warning("could not send NOTIFY; workers will find the work by polling")

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def wait_for_work(self, timeout: float) -> None:
        """Return when another process (or this one) says there is work, or after ``timeout``."""
        if self._listener is None or self._listener.is_closed():
            self._listener = await asyncpg.connect(self._dsn)
            await self._listener.add_listener(CHANNEL, self._on_notify)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def close(self) -> None:
        if self._notifier is not None:
            await asyncio.wait([self._notifier], timeout=1)
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await self._pool.close()
