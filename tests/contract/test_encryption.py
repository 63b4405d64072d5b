"""Endpoint secrets encrypted at rest, on every SQL backend: what the database holds, what
reads back, and what happens when the storage is opened with no or the wrong main secret.

Each test opens its own storages on the ``database_url`` of ``tests/conftest.py`` (an empty
SQLite file, or a fresh migrated PostgreSQL database), because the point is to open the *same*
database with different boxes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from homing.core.models import Application, Endpoint, EndpointSecret
from homing.crypto import PREFIX, SecretBox
from homing.errors import StorageError
from homing.ids import new_id
from homing.storage import Storage, open_storage
from homing.storage.base import PageRequest

ORG = "org_encryption"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_KEY = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
MAIN = "x" * 32


@pytest.fixture(scope="module")
def box() -> SecretBox:
    """The box of HOMING_MAIN_SECRET="x" * 32 (made once: deriving its key is slow on purpose)."""
    return SecretBox(MAIN)


@contextlib.asynccontextmanager
async def opened(url: str, box: SecretBox | None) -> AsyncIterator[Storage]:
    """A migrated storage on ``url`` with ``box``, closed on exit."""
    storage = await open_storage(url, box)
    try:
        await storage.migrate()
        yield storage
    finally:
        await storage.close()


async def make_endpoint(
    storage: Storage, secrets: tuple[EndpointSecret, ...] = (EndpointSecret(KEY),)
) -> Endpoint:
    """A new application with one endpoint holding ``secrets``, created through ``storage``."""
    app = await storage.create_application(
        Application(new_id("app"), ORG, "Encrypted", None, None, {}, NOW, NOW)
    )
    return await storage.create_endpoint(
        Endpoint(
            id=new_id("ep"),
            org_id=ORG,
            app_id=app.id,
            url="https://receiver.example/hook",
            uid=None,
            description="",
            rate_limit=None,
            disabled=False,
            event_types=None,
            channels=None,
            secrets=secrets,
            headers={},
            metadata={},
            created_at=NOW,
            updated_at=NOW,
        )
    )


async def raw_secrets(storage: Storage, endpoint_id: str) -> str:
    """The ``endpoint.secrets`` column exactly as the database holds it."""
    async with storage.db.connection() as conn:
        row = await conn.fetchrow("SELECT secrets FROM endpoint WHERE id = $1", endpoint_id)
    assert row is not None
    text: str = row["secrets"]
    return text


async def test_secret_is_stored_encrypted_and_reads_back(database_url: str, box: SecretBox) -> None:
    """With a box the column holds ``enc1:`` values and no key text; every read decrypts."""
    async with opened(database_url, box) as storage:
        endpoint = await make_endpoint(storage)
        raw = await raw_secrets(storage, endpoint.id)
        assert PREFIX in raw
        assert KEY not in raw and KEY.removeprefix("whsec_") not in raw
        got = await storage.get_endpoint(endpoint.app_id, endpoint.id)
        assert got.secrets == (EndpointSecret(KEY),)
        [listed] = (await storage.list_endpoints(endpoint.app_id, PageRequest())).items
        assert listed.secrets == (EndpointSecret(KEY),)
        by_id = await storage.get_endpoints([endpoint.id])
        assert by_id[endpoint.id].secrets == (EndpointSecret(KEY),)


async def test_every_key_of_a_rotation_is_encrypted(database_url: str, box: SecretBox) -> None:
    """The old keys kept for a grace period are encrypted too, and keep their expiry."""
    until = NOW + timedelta(hours=24)
    secrets = (EndpointSecret(KEY), EndpointSecret(OLD_KEY, until))
    async with opened(database_url, box) as storage:
        endpoint = await make_endpoint(storage, secrets)
        raw = await raw_secrets(storage, endpoint.id)
        assert raw.count(PREFIX) == 2
        assert KEY not in raw and OLD_KEY not in raw
        got = await storage.get_endpoint(endpoint.app_id, endpoint.id)
        assert got.secrets == secrets


async def test_updates_keep_the_secret_encrypted(database_url: str, box: SecretBox) -> None:
    """An update writes the secrets sealed again (with a fresh nonce), never in plaintext."""
    async with opened(database_url, box) as storage:
        endpoint = await make_endpoint(storage)
        before = await raw_secrets(storage, endpoint.id)
        await storage.update_endpoint(replace(endpoint, description="changed"))
        after = await raw_secrets(storage, endpoint.id)
        assert PREFIX in after and KEY not in after
        assert after != before
        got = await storage.get_endpoint(endpoint.app_id, endpoint.id)
        assert (got.description, got.secrets) == ("changed", (EndpointSecret(KEY),))


async def test_storage_without_the_box_cannot_read_encrypted_secrets(
    database_url: str, box: SecretBox
) -> None:
    """Opening the same database without HOMING_MAIN_SECRET raises StorageError on reading."""
    async with opened(database_url, box) as storage:
        endpoint = await make_endpoint(storage)
    async with opened(database_url, None) as bare:
        with pytest.raises(StorageError, match="HOMING_MAIN_SECRET") as failed:
            await bare.get_endpoint(endpoint.app_id, endpoint.id)
        assert KEY not in str(failed.value)
        with pytest.raises(StorageError):
            await bare.list_endpoints(endpoint.app_id, PageRequest())
        with pytest.raises(StorageError):
            await bare.get_endpoints([endpoint.id])


async def test_storage_with_another_main_secret_cannot_read_them(
    database_url: str, box: SecretBox
) -> None:
    """A different main secret does not decrypt: StorageError, not garbage handed out as a key."""
    async with opened(database_url, box) as storage:
        endpoint = await make_endpoint(storage)
    async with opened(database_url, SecretBox("y" * 32)) as wrong:
        with pytest.raises(StorageError, match="HOMING_MAIN_SECRET"):
            await wrong.get_endpoint(endpoint.app_id, endpoint.id)


async def test_plaintext_database_is_readable_and_encrypted_on_next_write(
    database_url: str, box: SecretBox
) -> None:
    """Secrets written before the main secret was set read fine with it, and the next
    ``update_endpoint`` stores them encrypted."""
    async with opened(database_url, None) as plain:
        endpoint = await make_endpoint(plain)
        assert KEY in await raw_secrets(plain, endpoint.id)
    async with opened(database_url, box) as storage:
        got = await storage.get_endpoint(endpoint.app_id, endpoint.id)
        assert got.secrets == (EndpointSecret(KEY),)
        assert KEY in await raw_secrets(storage, endpoint.id)  # reading does not rewrite
        await storage.update_endpoint(replace(got, updated_at=NOW + timedelta(seconds=1)))
        raw = await raw_secrets(storage, endpoint.id)
        assert PREFIX in raw and KEY not in raw
        again = await storage.get_endpoint(endpoint.app_id, endpoint.id)
        assert again.secrets == (EndpointSecret(KEY),)
