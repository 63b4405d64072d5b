"""The storage port: one async interface in domain verbs, implemented once in SQL over a
small database seam (``Database``) that the PostgreSQL and SQLite adapters provide.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


class Connection(Protocol):
    """One database session; ``$1``-style parameters in every statement."""

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None: ...
    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` (values in ``columns`` order) the fastest way the database has."""
        ...

    async def execute_script(self, script: str) -> None: ...


class Database(Protocol):
    """What a dialect adapter gives the shared SQL storage."""

    dialect: str
    #: appended to a SELECT that must lock its rows until commit (no-op on SQLite, which has
    #: one writer at a time anyway)
    row_lock: str
    #: the same, passing over rows another transaction holds
    row_lock_skip: str
    #: SQL function that returns a 1-based position of a substring (strpos / instr)
    find_function: str

    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...
    def connection(self) -> AbstractAsyncContextManager[Connection]: ...
    async def lock_migrations(self, conn: Connection) -> None: ...
    async def notify(self) -> None: ...
    async def wait_for_work(self, timeout: float) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PageRequest:
    """``limit`` items after ``iterator`` (an id; ``-id`` walks backwards)."""

    limit: int = 50
    iterator: str | None = None
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    iterator: str | None
    prev_iterator: str | None
    done: bool


@dataclass(frozen=True, slots=True)
class MessageFilter:
    event_types: tuple[str, ...] = ()
    channel: str | None = None
    before: datetime | None = None
    after: datetime | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptFilter:
    status: int | None = None
    status_code_class: int | None = None
    endpoint_id: str | None = None
    event_types: tuple[str, ...] = ()
    channel: str | None = None
    before: datetime | None = None
    after: datetime | None = None


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    org_id: str
    app_id: str | None
    expires_at: datetime | None
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A finished request saved under an idempotency key."""

    status_code: int
    body: str
