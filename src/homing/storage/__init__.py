"""Storage: ``open_storage(url)`` picks the adapter from the database URL."""

from __future__ import annotations

from homing.crypto import SecretBox
from homing.errors import ConfigError
from homing.storage.store import Storage

__all__ = ["Storage", "open_storage", "sqlite_path"]


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path``, ``sqlite:////abs/path`` or ``sqlite://:memory:`` to a path."""
    rest = url.split(":", 1)[1]
    if rest.startswith("///"):
        return rest[3:]
    if rest.startswith("//"):
        return rest[2:]
    raise ConfigError(f"cannot read a SQLite path from {url!r}; use sqlite:///PATH")


async def open_storage(url: str, box: SecretBox | None = None) -> Storage:
    """Connect to the database at ``url`` (``sqlite:///...`` or ``postgresql://...``);
    ``box`` encrypts endpoint secrets at rest."""
    if url.startswith("sqlite:"):
        from homing.storage.sqlite import SqliteDatabase

        return Storage(await SqliteDatabase.connect(sqlite_path(url)), box)
    from homing.storage.postgres import PostgresDatabase

    dsn = url.replace("postgresql+asyncpg", "postgresql")
    return Storage(await PostgresDatabase.connect(dsn), box)
