"""Shared fixtures: fresh migrated databases and a ``storage`` over each backend.

PostgreSQL databases are copies of one migrated template database (made once per session),
because ``CREATE DATABASE ... TEMPLATE`` is much faster than migrating every test's database.
PostgreSQL is skipped when ``HOMING_TEST_POSTGRES_DSN`` is unset, except in CI (``CI=true``),
where it is mandatory and a missing DSN fails the tests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from homing.storage import Storage, open_storage

T = TypeVar("T")

POSTGRES_DSN_VAR = "HOMING_TEST_POSTGRES_DSN"


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a private loop in its own thread.

    The thread keeps the work off (and away from) any event loop pytest-asyncio has set up, so
    sync fixtures of any scope can use asyncpg.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        async def main() -> T:
            return await make()

        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


class PgTemplate:
    """Makes and drops migrated PostgreSQL databases, all copied from one template."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.template = f"homing_tpl_{os.getpid()}"
        self._counter = itertools.count(1)
        self._live: set[str] = set()

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def create_template(self) -> None:
        async def build() -> None:
            await self._admin(
                f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)',
                f'CREATE DATABASE "{self.template}"',
            )
            storage = await open_storage(_with_database(self.dsn, self.template))
            try:
                await storage.migrate()
            finally:
                await storage.close()

        _run_sync(build)

    def copy(self) -> str:
        """A ``postgresql://`` URL of a new database with the migrated schema."""
        name = f"homing_t_{os.getpid()}_{next(self._counter)}"
        _run_sync(lambda: self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self._live.add(name)
        return _with_database(self.dsn, name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        _run_sync(lambda: self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._live.discard(name)

    def drop_all(self) -> None:
        names = [*sorted(self._live), self.template]
        _run_sync(
            lambda: self._admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names))
        )
        self._live.clear()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The PostgreSQL server DSN for tests; skips without one, fails without one in CI."""
    dsn = os.environ.get(POSTGRES_DSN_VAR)
    if not dsn:
        reason = (
            f"PostgreSQL tests NOT RUN: set {POSTGRES_DSN_VAR} "
            "(e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; PostgreSQL is mandatory in CI", pytrace=False)
        pytest.skip(reason)
    return dsn


@pytest.fixture(scope="session")
def pg_template(pg_dsn: str) -> Iterator[PgTemplate]:
    """The session's migrated template database, as a factory of fresh copies."""
    template = PgTemplate(pg_dsn)
    template.create_template()
    yield template
    template.drop_all()


@pytest.fixture
def fresh_pg_url(pg_template: PgTemplate) -> Iterator[str]:
    """A ``postgresql://`` URL of a fresh migrated database, dropped after the test."""
    url = pg_template.copy()
    yield url
    pg_template.drop(url)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each backend (PostgreSQL's is already migrated)."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "homing.db")
    return str(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    """A migrated ``Storage`` on a fresh database, closed after the test."""
    opened = await open_storage(database_url)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()
