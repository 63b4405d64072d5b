"""``Storage``: every domain verb, in SQL written once for PostgreSQL and SQLite."""

from __future__ import annotations

from homing.storage.catalog import Catalog, hash_token
from homing.storage.queue import DEFAULT_ENDPOINT_CAP, Queue

__all__ = ["DEFAULT_ENDPOINT_CAP", "Storage", "hash_token"]


class Storage(Catalog, Queue):
    """The one storage implementation; its ``db`` adapter decides the dialect."""
