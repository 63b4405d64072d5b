"""SQLite adapter (aiosqlite, WAL): the embedded default for one machine.

One connection per process, guarded by a lock so that a transaction (``BEGIN IMMEDIATE``) never
interleaves with another coroutine's statements. Other processes on the same file wait on
SQLite's busy timeout. Wake-ups are an in-process event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from homing.errors import ConflictError, StorageError
from homing.storage.base import Row

_PARAM = re.compile(r"\$(\d+)")

# aiosqlite logs every statement with its parameters at DEBUG: endpoint secrets and custom
# header values would reach the logs of an operator who turns on debug logging.
logging.getLogger("aiosqlite").setLevel(logging.INFO)


def _refused(exc: sqlite3.Error, what: str) -> StorageError:
    """A driver error in Homing's terms (see postgres._refused)."""
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return ConflictError("An object with this key already exists.")
    return StorageError(f"SQLite refused {what}: {exc}")


def _sql(text: str) -> str:
    return _PARAM.sub(r"?\1", text)


class SqliteConnection:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        try:
            async with self._conn.execute(_sql(sql), args) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise _refused(exc, "a query") from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        found = await self.fetch(sql, *args)
        return found[0] if found else None

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            async with self._conn.execute(_sql(sql), args) as cursor:
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise _refused(exc, "a statement") from exc

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(_sql(sql), args)
        except sqlite3.Error as exc:
            raise _refused(exc, "a statement") from exc

    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        try:
            await self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _refused(exc, "a statement") from exc

    async def execute_script(self, script: str) -> None:
        # executescript() would COMMIT first; run statement by statement inside our transaction
        for statement in script.split(";"):
            lines = [ln for ln in statement.splitlines() if not ln.strip().startswith("--")]
            body = "\n".join(lines).strip()
            if body:
                await self.execute(body)


class SqliteDatabase:
    dialect = "sqlite"
    row_lock = ""
    row_lock_skip = ""
    find_function = "instr"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @classmethod
    async def connect(cls, path: str) -> SqliteDatabase:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=FULL",  # a 202 must survive a power cut, not only a crash
                "PRAGMA foreign_keys=ON",
                "PRAGMA busy_timeout=10000",
            ):
                await conn.execute(pragma)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {path}: {exc}") from exc
        return cls(conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteConnection]:
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield SqliteConnection(self._conn)
            except BaseException:
                # Also when cancelled while BEGIN waited for the file lock: aiosqlite runs
                # statements in order on its thread, so this ROLLBACK follows that BEGIN and
                # the connection is never left inside a transaction.
                await asyncio.shield(self._rollback())
                raise
            await self._conn.execute("COMMIT")

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # "no transaction is active" is fine
            await self._conn.execute("ROLLBACK")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[SqliteConnection]:
        async with self._lock:
            yield SqliteConnection(self._conn)

    async def lock_migrations(self, conn: Any) -> None:
        """BEGIN IMMEDIATE already holds the only write lock."""

    async def notify(self) -> None:
        self._wake.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def close(self) -> None:
        await self._conn.close()
