"""Storage verbs for the catalogue: tokens, applications, endpoints, event types and
idempotency keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from homing.core.models import (
    Application,
    DeliveryState,
    Endpoint,
    EventType,
)
from homing.crypto import SecretBox
from homing.errors import ConflictError, NotFoundError, StaleWriteError
from homing.ids import new_id
from homing.storage import rows
from homing.storage.base import (
    Page,
    PageRequest,
    StoredResponse,
    Token,
)
from homing.storage.rows import dump, dump_opt, dump_secrets, opt_to_us, to_us
from homing.storage.sqlbase import SqlBase, marks

IDEMPOTENCY_STALE = timedelta(seconds=60)


def hash_token(token: str) -> str:
    """The stored form of a bearer token (tokens are 32 random bytes: no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Catalog(SqlBase):
    # -- tokens ------------------------------------------------------------------------------

    async def create_token(
        self,
        token: str,
        org_id: str,
        app_id: str | None,
        now: datetime,
        expires_at: datetime | None,
        read_only: bool = False,
    ) -> Token:
        """Store ``token`` (hashed) for ``org_id``, narrowed to ``app_id`` when given."""
        record = Token(new_id("tok"), org_id, app_id, expires_at, read_only)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO api_token (id, org_id, app_id, token_hash, created_at, expires_at,"
                " revoked, read_only) VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7)",
                record.id,
                org_id,
                app_id,
                hash_token(token),
                to_us(now),
                opt_to_us(expires_at),
                read_only,
            )
        return record

    async def find_token(self, token: str, now: datetime) -> Token | None:
        """The live token with this value, or None (expired and revoked tokens are None)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, org_id, app_id, expires_at, read_only FROM api_token"
                " WHERE token_hash = $1 AND revoked = FALSE",
                hash_token(token),
            )
        if row is None or (row["expires_at"] is not None and row["expires_at"] <= to_us(now)):
            return None
        expires_at = rows.opt_from_us(row["expires_at"])
        return Token(row["id"], row["org_id"], row["app_id"], expires_at, bool(row["read_only"]))

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke the token with this id; True if it was live."""
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE api_token SET revoked = TRUE WHERE id = $1 AND revoked = FALSE", token_id
            )
        return changed == 1

    async def revoke_token_value(self, token: str) -> bool:
        """Revoke the token whose value is ``token``; True if it was live."""
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE api_token SET revoked = TRUE WHERE token_hash = $1 AND revoked = FALSE",
                hash_token(token),
            )
        return changed == 1

    # -- applications ------------------------------------------------------------------------

    async def create_application(self, app: Application) -> Application:
        """Insert ``app``; raise ``ConflictError`` when its uid is taken."""
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "INSERT INTO application (id, org_id, uid, name, rate_limit, metadata, created_at,"
                " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                app.id,
                app.org_id,
                app.uid,
                app.name,
                app.rate_limit,
                dump(app.metadata),
                to_us(app.created_at),
                to_us(app.updated_at),
            )
        if changed != 1:
            raise ConflictError("An application with this uid already exists.")
        return app

    async def get_application(self, org_id: str, ref: str) -> Application:
        """The application of ``org_id`` whose id or uid is ``ref``; else ``NotFoundError``."""
        return await self._one(
            "SELECT * FROM application WHERE org_id = $1 AND (id = $2 OR uid = $2)"
            " ORDER BY (id = $2) DESC LIMIT 1",
            [org_id, ref],
            rows.application,
            "Application",
        )

    async def list_applications(self, org_id: str, req: PageRequest) -> Page[Application]:
        async with self.db.connection() as conn:
            return await self._page(
                conn,
                "SELECT * FROM application WHERE org_id = $1",
                [org_id],
                req,
                rows.application,
            )

    async def update_application(self, app: Application) -> Application:
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE application SET uid = $2, name = $3, rate_limit = $4, metadata = $5,"
                " updated_at = $6 WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM application o"
                " WHERE o.org_id = $7 AND o.uid = $2 AND o.id <> $1)",
                app.id,
                app.uid,
                app.name,
                app.rate_limit,
                dump(app.metadata),
                to_us(app.updated_at),
                app.org_id,
            )
        if changed != 1:
            await self._missing_or_conflict("application", app.id, "Application")
        return app

    async def _missing_or_conflict(self, table: str, row_id: str, noun: str) -> None:
        """After an update changed nothing: raise NotFoundError if the row is gone (deleted
        meanwhile), else ConflictError (its new uid is taken)."""
        async with self.db.connection() as conn:
            found = await conn.fetchrow(f"SELECT id FROM {table} WHERE id = $1", row_id)
        if found is None:
            raise NotFoundError(f"{noun} not found.")
        raise ConflictError(f"An {noun.lower()} with this uid already exists.")

    async def delete_application(self, app_id: str) -> None:
        """Delete the application and, by cascade, everything under it."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM application WHERE id = $1", app_id)

    # -- endpoints ---------------------------------------------------------------------------

    async def create_endpoint(self, ep: Endpoint) -> Endpoint:
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "INSERT INTO endpoint (id, org_id, app_id, uid, url, description, rate_limit,"
                " disabled, event_types, channels, secrets, headers, metadata, created_at,"
                " updated_at, github_signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                " $11, $12, $13, $14, $15, $16) ON CONFLICT DO NOTHING",
                *_endpoint_values(ep, self.box),
            )
        if changed != 1:
            raise ConflictError("An endpoint with this uid already exists.")
        return ep

    async def get_endpoint(self, app_id: str, ref: str) -> Endpoint:
        return await self._one(
            "SELECT * FROM endpoint WHERE app_id = $1 AND (id = $2 OR uid = $2)"
            " ORDER BY (id = $2) DESC LIMIT 1",
            [app_id, ref],
            self._endpoint,
            "Endpoint",
        )

    async def list_endpoints(self, app_id: str, req: PageRequest) -> Page[Endpoint]:
        async with self.db.connection() as conn:
            return await self._page(
                conn, "SELECT * FROM endpoint WHERE app_id = $1", [app_id], req, self._endpoint
            )

    async def update_endpoint(self, ep: Endpoint, previous: Endpoint | None = None) -> Endpoint:
        """Write ``ep``'s settings. With ``previous`` (the version ``ep`` was made from), only
        if nobody changed the endpoint since: else ``StaleWriteError``, so concurrent edits
        (a rotation, the worker disabling it) are never silently undone. Re-enabling an
        endpoint gives it a fresh health window. Raises ``NotFoundError``, ``ConflictError``
        (uid taken)."""
        values = _endpoint_values(ep, self.box)
        guard = " AND updated_at = $15" if previous is not None else ""
        extra = [to_us(previous.updated_at)] if previous is not None else []
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE endpoint SET uid = $3, url = $4, description = $5, rate_limit = $6,"
                " disabled = $7, event_types = $8, channels = $9, secrets = $10, headers = $11,"
                " metadata = $12, updated_at = $13, github_signature = $14,"
                " failing_since = CASE WHEN disabled AND NOT $7 THEN NULL ELSE failing_since END"
                f" WHERE id = $1{guard} AND NOT EXISTS (SELECT 1 FROM endpoint o"
                " WHERE o.app_id = $2 AND o.uid = $3 AND o.id <> $1)",
                ep.id,
                ep.app_id,
                *values[3:13],
                values[14],
                ep.github_signature,
                *extra,
            )
        if changed != 1:
            if previous is not None:
                current = await self.get_endpoints([ep.id])
                if ep.id in current and current[ep.id].updated_at != previous.updated_at:
                    raise StaleWriteError()
            await self._missing_or_conflict("endpoint", ep.id, "Endpoint")
        return ep

    async def get_endpoints(self, ids: Sequence[str]) -> dict[str, Endpoint]:
        """The endpoints with these ids (missing ones are left out), by id."""
        return await self._by_ids("endpoint", ids, self._endpoint)

    async def disable_endpoint(self, endpoint_id: str, now: datetime) -> bool:
        """Disable the endpoint; True if it was enabled (so this call disabled it)."""
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE endpoint SET disabled = TRUE, updated_at = $2"
                " WHERE id = $1 AND disabled = FALSE",
                endpoint_id,
                to_us(now),
            )
        return changed == 1

    async def note_exhausted(self, endpoint_id: str, now: datetime) -> datetime | None:
        """Record that a delivery of the endpoint ran out of retries; return since when the
        endpoint has been failing (None when it is gone)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE endpoint SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL",
                endpoint_id,
                to_us(now),
            )
            row = await conn.fetchrow(
                "SELECT failing_since FROM endpoint WHERE id = $1", endpoint_id
            )
        return None if row is None else rows.opt_from_us(row["failing_since"])

    async def note_success(self, endpoint_id: str) -> None:
        """The endpoint took a delivery: it is healthy again."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE endpoint SET failing_since = NULL WHERE id = $1"
                " AND failing_since IS NOT NULL",
                endpoint_id,
            )

    async def retry_schedules(
        self, org_id: str, names: Sequence[str]
    ) -> dict[str, tuple[int, ...]]:
        """The retry schedules that event types of ``org_id`` set, by event type name."""
        if not names:
            return {}
        async with self.db.connection() as conn:
            found = await conn.fetch(
                "SELECT name, retry_schedule FROM event_type WHERE org_id = $1"
                f" AND name IN ({marks(len(names), 2)}) AND retry_schedule IS NOT NULL",
                org_id,
                *names,
            )
        return {r["name"]: tuple(json.loads(r["retry_schedule"])) for r in found}

    async def delete_endpoint(self, endpoint_id: str) -> None:
        """Delete the endpoint; its pending deliveries and attempts go with it."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM endpoint WHERE id = $1", endpoint_id)

    async def endpoint_stats(
        self, endpoint_id: str, since: datetime | None, until: datetime | None
    ) -> dict[DeliveryState, int]:
        sql = "SELECT state, COUNT(*) AS n FROM delivery WHERE endpoint_id = $1"
        args: list[Any] = [endpoint_id]
        if since is not None:
            args.append(to_us(since))
            sql += f" AND created_at >= ${len(args)}"
        if until is not None:
            args.append(to_us(until))
            sql += f" AND created_at < ${len(args)}"
        async with self.db.connection() as conn:
            found = await conn.fetch(sql + " GROUP BY state", *args)
        counts = dict.fromkeys(DeliveryState, 0)
        counts.update({DeliveryState(r["state"]): int(r["n"]) for r in found})
        return counts

    # -- event types -------------------------------------------------------------------------

    async def create_event_type(self, et: EventType) -> EventType:
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "INSERT INTO event_type (org_id, name, description, archived, deprecated,"
                " feature_flag, schemas, retry_schedule, created_at, updated_at) VALUES ($1, $2,"
                " $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                *_event_type_values(et),
            )
        if changed != 1:
            raise ConflictError("An event type with this name already exists.")
        return et

    async def get_event_type(self, org_id: str, name: str) -> EventType:
        return await self._one(
            "SELECT * FROM event_type WHERE org_id = $1 AND name = $2",
            [org_id, name],
            rows.event_type,
            "Event type",
        )

    async def list_event_types(
        self, org_id: str, req: PageRequest, include_archived: bool
    ) -> Page[EventType]:
        sql = "SELECT * FROM event_type WHERE org_id = $1"
        if not include_archived:
            sql += " AND archived = FALSE"
        async with self.db.connection() as conn:
            return await self._page(
                conn, sql, [org_id], req, rows.event_type, key="name", tag="name:"
            )

    async def update_event_type(self, et: EventType) -> EventType:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE event_type SET description = $3, archived = $4, deprecated = $5,"
                " feature_flag = $6, schemas = $7, retry_schedule = $8, updated_at = $9"
                " WHERE org_id = $1 AND name = $2",
                *_event_type_values(et)[:8],
                to_us(et.updated_at),
            )
        return et

    async def delete_event_type(self, org_id: str, name: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM event_type WHERE org_id = $1 AND name = $2", org_id, name
            )

    # -- idempotency -------------------------------------------------------------------------

    async def idempotency_begin(self, key: str, now: datetime) -> StoredResponse | bool:
        """Reserve ``key``: True if the caller should run the request, False if another request
        with this key is still running, or the stored response of the one that finished."""
        async with self.db.transaction() as conn:
            if await conn.execute(
                "INSERT INTO idempotency (key, state, created_at) VALUES ($1, 'running', $2)"
                " ON CONFLICT DO NOTHING",
                key,
                to_us(now),
            ):
                return True
            row = await conn.fetchrow(
                "SELECT state, status_code, body, created_at FROM idempotency WHERE key = $1", key
            )
            if row is None:
                return False
            if row["state"] == "done":
                return StoredResponse(status_code=row["status_code"], body=row["body"])
            # a request that has been running this long died with its process: take it over
            return bool(
                await conn.execute(
                    "UPDATE idempotency SET created_at = $2 WHERE key = $1 AND state = 'running'"
                    " AND created_at < $3",
                    key,
                    to_us(now),
                    to_us(now - IDEMPOTENCY_STALE),
                )
            )

    async def purge_idempotency(self, before: datetime) -> int:
        """Forget idempotency keys reserved before ``before``; return how many."""
        async with self.db.transaction() as conn:
            return await conn.execute(
                "DELETE FROM idempotency WHERE created_at < $1", to_us(before)
            )

    async def idempotency_finish(self, key: str, response: StoredResponse | None) -> None:
        """Store the response under ``key``, or release the key (None) so a retry may run."""
        async with self.db.transaction() as conn:
            if response is None:
                await conn.execute("DELETE FROM idempotency WHERE key = $1", key)
            else:
                await conn.execute(
                    "UPDATE idempotency SET state = 'done', status_code = $2, body = $3"
                    " WHERE key = $1",
                    key,
                    response.status_code,
                    response.body,
                )


def _endpoint_values(ep: Endpoint, box: SecretBox | None) -> tuple[Any, ...]:
    return (
        ep.id,
        ep.org_id,
        ep.app_id,
        ep.uid,
        ep.url,
        ep.description,
        ep.rate_limit,
        ep.disabled,
        dump_opt(ep.event_types),
        dump_opt(ep.channels),
        dump_secrets(ep.secrets, box),
        dump(ep.headers),
        dump(ep.metadata),
        to_us(ep.created_at),
        to_us(ep.updated_at),
        ep.github_signature,
    )


def _event_type_values(et: EventType) -> tuple[Any, ...]:
    return (
        et.org_id,
        et.name,
        et.description,
        et.archived,
        et.deprecated,
        et.feature_flag,
        dump_opt(et.schemas),
        dump_opt(et.retry_schedule),
        to_us(et.created_at),
        to_us(et.updated_at),
    )
