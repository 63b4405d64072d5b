"""HTTP fixtures: an ``httpx.AsyncClient`` over the ASGI app, on a real migrated database.

``api`` runs on SQLite in ``tmp_path``; ``pg_api`` on a fresh PostgreSQL database (from
``fresh_pg_url`` in ``tests/conftest.py``); ``any_api`` is each of them in turn. The clients send
``Authorization: Bearer tok``, the bootstrap token of the app's settings; ``client.app`` is the
ASGI app and ``client.settings`` and ``client.storage`` are what it was made with. A server error
reaches the tests as the 500 response a real client would get, not as a raised exception.

``api_factory`` gives ``open_api``, the context manager behind them, to fixtures of a wider
scope (the input tests share one database per backend per module, because a fresh PostgreSQL
database per case would cost a third of a second each).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from homing.api.app import create_app
from homing.config import Secret, Settings
from homing.storage import open_storage

from .receiver import Receiver, running_receiver

TOKEN = "tok"
BASE_URL = "http://homing.test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def open_api(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``create_app`` over a migrated storage at ``database_url``; closes both."""
    storage = await open_storage(database_url)
    try:
        await storage.migrate()
        config = Settings(database_url=database_url, bootstrap_token=Secret(TOKEN), **settings)
        app = create_app(config, storage)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=AUTH, timeout=30
        ) as client:
            client.settings = config  # type: ignore[attr-defined]
            client.storage = storage  # type: ignore[attr-defined]
            client.app = app  # type: ignore[attr-defined]
            yield client
    finally:
        await storage.close()


def sqlite_url(directory: Path) -> str:
    return "sqlite:///" + str(directory / "homing.db")


@pytest.fixture(scope="session")
def api_factory() -> Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]:
    """``open_api`` itself, for fixtures of a wider scope than ``api``."""
    return open_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API on a fresh SQLite database, authenticated as the bootstrap token."""
    async with open_api(sqlite_url(tmp_path)) as client:
        yield client


@pytest.fixture
async def pg_api(fresh_pg_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API on a fresh PostgreSQL database (skipped without a DSN)."""
    async with open_api(fresh_pg_url) as client:
        yield client


@pytest.fixture(params=["sqlite", "postgres"])
def any_api(request: pytest.FixtureRequest) -> httpx.AsyncClient:
    """``api`` and then ``pg_api``: the test runs once per backend."""
    name = "api" if request.param == "sqlite" else "pg_api"
    client: httpx.AsyncClient = request.getfixturevalue(name)
    return client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A scripted receiver on an ephemeral 127.0.0.1 port (see receiver.py)."""
    async with running_receiver() as recv:
        yield recv
