"""The shared part of the SQL storage: the database seam, migrations and paging.

``Storage`` (store.py) is every domain verb written once in portable SQL: both dialects take
``$1`` parameters (the SQLite adapter rewrites them), integer microsecond times and JSON text;
only the claim lock, a row lock and one string function differ, supplied by the adapter.
Every method owns its transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

from homing.core.models import Endpoint
from homing.crypto import SecretBox
from homing.errors import NotFoundError
from homing.storage import rows
from homing.storage.base import (
    Connection,
    Database,
    Page,
    PageRequest,
    Row,
)
from homing.storage.rows import to_us

T = TypeVar("T")


def marks(count: int, first: int = 1) -> str:
    """``count`` parameter places from ``$first`` on: ``"$1, $2, $3"``."""
    return ", ".join(f"${i}" for i in range(first, first + count))


class SqlBase:
    """Connection seam, schema and paging shared by the verb groups."""

    def __init__(self, db: Database, box: SecretBox | None = None) -> None:
        self.db = db
        self.box = box  # encrypts endpoint secrets at rest when set
        # where this process's last claim stopped reading the due queue (next_attempt_at, id)
        self._scan_cursor: tuple[int, str] | None = None

    async def _one(
        self, sql: str, args: Sequence[Any], convert: Callable[[Row], T], what: str
    ) -> T:
        """The single row ``sql`` finds, converted; ``NotFoundError`` ("<what> not found.")."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(sql, *args)
        if row is None:
            raise NotFoundError(f"{what} not found.")
        return convert(row)

    async def _by_ids(
        self, table: str, ids: Sequence[str], convert: Callable[[Row], T]
    ) -> dict[str, T]:
        """Rows of ``table`` with these ids, converted, by id (one query)."""
        if not ids:
            return {}
        async with self.db.connection() as conn:
            found = await conn.fetch(f"SELECT * FROM {table} WHERE id IN ({marks(len(ids))})", *ids)
        return {r["id"]: convert(r) for r in found}

    def _endpoint(self, row: Row) -> Endpoint:
        return rows.endpoint(row, self.box)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the database answers."""
        async with self.db.connection() as conn:
            await conn.fetch("SELECT 1 AS one")

    # -- schema ------------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply the migrations this database lacks; return their names."""
        package = resources.files(f"homing.storage.migrations.{self.db.dialect}")
        scripts = sorted(p.name for p in package.iterdir() if p.name.endswith(".sql"))
        applied: list[str] = []
        async with self.db.transaction() as conn:
            await self.db.lock_migrations(conn)
            await conn.execute_script(
                "CREATE TABLE IF NOT EXISTS schema_migration ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
            for name in scripts:
                version = int(name.split("_", 1)[0])
                if version in done:
                    continue
                await conn.execute_script(package.joinpath(name).read_text(encoding="utf-8"))
                await conn.execute(
                    "INSERT INTO schema_migration (version, name, applied_at) VALUES ($1, $2, $3)",
                    version,
                    name,
                    to_us(datetime.now(UTC)),
                )
                applied.append(name)
        return applied

    # -- pagination --------------------------------------------------------------------------

    async def _page(
        self,
        conn: Connection,
        select: str,
        args: Sequence[Any],
        req: PageRequest,
        convert: Callable[[Row], T],
        key: str = "id",
        tag: str = "",
    ) -> Page[T]:
        """Run ``select`` (which ends in a WHERE clause) one page at a time, keyed by ``key``.

        Iterators are ``tag`` + the key of the last item, and ``-`` + ``tag`` + the key of the
        first to walk back. A ``tag`` keeps keys that may begin with ``-`` (event type names)
        from reading as "backwards"."""
        backwards = bool(req.iterator and req.iterator.startswith("-"))
        cursor = req.iterator[1:] if (backwards and req.iterator) else req.iterator
        if cursor and tag:
            cursor = cursor.removeprefix(tag)
        go_desc = req.descending != backwards
        params = list(args)
        sql = select
        if cursor:
            params.append(cursor)
            sql += f" AND {key} {'<' if go_desc else '>'} ${len(params)}"
        params.append(req.limit + 1)
        sql += f" ORDER BY {key} {'DESC' if go_desc else 'ASC'} LIMIT ${len(params)}"
        found = list(await conn.fetch(sql, *params))
        field = key.rsplit(".", 1)[-1]
        more = len(found) > req.limit
        found = found[: req.limit]
        if backwards:
            found.reverse()
        if not found:
            return Page(items=[], iterator=req.iterator, prev_iterator=None, done=True)
        return Page(
            items=[convert(r) for r in found],
            iterator=tag + found[-1][field],
            prev_iterator="-" + tag + found[0][field],
            done=not more,
        )


def time_window(
    column: str, before: datetime | None, after: datetime | None, args: list[Any]
) -> str:
    """``AND column < before AND column > after`` for the bounds given (appended to ``args``)."""
    sql = ""
    if before is not None:
        args.append(to_us(before))
        sql += f" AND {column} < ${len(args)}"
    if after is not None:
        args.append(to_us(after))
        sql += f" AND {column} > ${len(args)}"
    return sql
