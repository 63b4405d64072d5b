"""``Storage``: every domain verb, written once in portable SQL over a ``Database`` adapter.

Both dialects take ``$1`` parameters (the SQLite adapter rewrites them), integer microsecond
times and JSON text, so only the claim lock and one string function differ; the adapter
supplies those. Every method owns its transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, TypeVar

from homing.core.filters import wants
from homing.core.models import (
    STATUS_OF_STATE,
    Application,
    Attempt,
    Delivery,
    DeliveryState,
    Endpoint,
    EventType,
    Message,
    Trigger,
)
from homing.core.pacing import Due, EndpointLoad, plan_claim
from homing.errors import ConflictError, NotFoundError
from homing.ids import new_id
from homing.storage import rows
from homing.storage.base import (
    AttemptFilter,
    Connection,
    Database,
    MessageFilter,
    Page,
    PageRequest,
    Row,
    StoredResponse,
    Token,
)
from homing.storage.rows import dump, dump_opt, dump_secrets, opt_to_us, to_us

T = TypeVar("T")

IDEMPOTENCY_STALE = timedelta(seconds=60)
DEFAULT_ENDPOINT_CAP = 16
BUSY_DELAY = timedelta(seconds=1)
REPLAY_BATCH = 1000
CLAIM_WINDOW = 4  # due rows looked at per delivery claimed, so a busy endpoint's surplus
# can be set aside without starving the endpoints queued behind it


def hash_token(token: str) -> str:
    """The stored form of a bearer token (tokens are 32 random bytes: no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Storage:
    """The one storage implementation; ``db`` decides the dialect."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
    ) -> Page[T]:
        """Run ``select`` (which ends in a WHERE clause) one page at a time, keyed by ``key``."""
        backwards = bool(req.iterator and req.iterator.startswith("-"))
        cursor = req.iterator[1:] if (backwards and req.iterator) else req.iterator
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
            iterator=found[-1][field],
            prev_iterator="-" + found[0][field],
            done=not more,
        )

    # -- tokens ------------------------------------------------------------------------------

    async def create_token(
        self,
        token: str,
        org_id: str,
        app_id: str | None,
        now: datetime,
        expires_at: datetime | None,
    ) -> Token:
        record = Token(id=new_id("tok"), org_id=org_id, app_id=app_id, expires_at=expires_at)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO api_token (id, org_id, app_id, token_hash, created_at, expires_at,"
                " revoked) VALUES ($1, $2, $3, $4, $5, $6, FALSE)",
                record.id,
                org_id,
                app_id,
                hash_token(token),
                to_us(now),
                opt_to_us(expires_at),
            )
        return record

    async def find_token(self, token: str, now: datetime) -> Token | None:
        """The live token with this value, or None (expired and revoked tokens are None)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, org_id, app_id, expires_at FROM api_token"
                " WHERE token_hash = $1 AND revoked = FALSE",
                hash_token(token),
            )
        if row is None or (row["expires_at"] is not None and row["expires_at"] <= to_us(now)):
            return None
        return Token(row["id"], row["org_id"], row["app_id"], rows.opt_from_us(row["expires_at"]))

    async def revoke_token(self, token_id: str) -> bool:
        async with self.db.transaction() as conn:
            return (
                await conn.execute("UPDATE api_token SET revoked = TRUE WHERE id = $1", token_id)
                == 1
            )

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
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM application WHERE org_id = $1 AND (id = $2 OR uid = $2)"
                " ORDER BY (id = $2) DESC LIMIT 1",
                org_id,
                ref,
            )
        if row is None:
            raise NotFoundError("Application not found.")
        return rows.application(row)

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
                " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
                " $14, $15) ON CONFLICT DO NOTHING",
                *_endpoint_values(ep),
            )
        if changed != 1:
            raise ConflictError("An endpoint with this uid already exists.")
        return ep

    async def get_endpoint(self, app_id: str, ref: str) -> Endpoint:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM endpoint WHERE app_id = $1 AND (id = $2 OR uid = $2)"
                " ORDER BY (id = $2) DESC LIMIT 1",
                app_id,
                ref,
            )
        if row is None:
            raise NotFoundError("Endpoint not found.")
        return rows.endpoint(row)

    async def list_endpoints(self, app_id: str, req: PageRequest) -> Page[Endpoint]:
        async with self.db.connection() as conn:
            return await self._page(
                conn, "SELECT * FROM endpoint WHERE app_id = $1", [app_id], req, rows.endpoint
            )

    async def update_endpoint(self, ep: Endpoint) -> Endpoint:
        values = _endpoint_values(ep)
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE endpoint SET uid = $3, url = $4, description = $5, rate_limit = $6,"
                " disabled = $7, event_types = $8, channels = $9, secrets = $10, headers = $11,"
                " metadata = $12, updated_at = $13 WHERE id = $1 AND NOT EXISTS (SELECT 1"
                " FROM endpoint o WHERE o.app_id = $2 AND o.uid = $3 AND o.id <> $1)",
                ep.id,
                ep.app_id,
                *values[3:13],
                values[14],
            )
        if changed != 1:
            await self._missing_or_conflict("endpoint", ep.id, "Endpoint")
        return ep

    async def get_endpoints(self, ids: Sequence[str]) -> dict[str, Endpoint]:
        """The endpoints with these ids (missing ones are left out), by id."""
        if not ids:
            return {}
        marks = ", ".join(f"${i}" for i in range(1, len(ids) + 1))
        async with self.db.connection() as conn:
            found = await conn.fetch(f"SELECT * FROM endpoint WHERE id IN ({marks})", *ids)
        return {r["id"]: rows.endpoint(r) for r in found}

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
        marks = ", ".join(f"${i}" for i in range(2, len(names) + 2))
        async with self.db.connection() as conn:
            found = await conn.fetch(
                "SELECT name, retry_schedule FROM event_type WHERE org_id = $1"
                f" AND name IN ({marks}) AND retry_schedule IS NOT NULL",
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
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM event_type WHERE org_id = $1 AND name = $2", org_id, name
            )
        if row is None:
            raise NotFoundError("Event type not found.")
        return rows.event_type(row)

    async def list_event_types(
        self, org_id: str, req: PageRequest, include_archived: bool
    ) -> Page[EventType]:
        sql = "SELECT * FROM event_type WHERE org_id = $1"
        if not include_archived:
            sql += " AND archived = FALSE"
        async with self.db.connection() as conn:
            return await self._page(conn, sql, [org_id], req, rows.event_type, key="name")

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

    # -- messages (the outbox) ---------------------------------------------------------------

    async def create_message(
        self, msg: Message, only_endpoint: str | None = None
    ) -> list[Delivery]:
        """Store ``msg`` and one pending delivery per endpoint that wants it, atomically
        (with ``only_endpoint``: for that endpoint alone, whatever its filters).

        Raises ``ConflictError`` when the application already has a message with its eventId.
        """
        now = msg.created_at
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "INSERT INTO message (id, org_id, app_id, event_type, event_id, payload, channels,"
                " tags, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT DO NOTHING",
                msg.id,
                msg.org_id,
                msg.app_id,
                msg.event_type,
                msg.event_id,
                msg.payload,
                dump_opt(msg.channels),
                dump_opt(msg.tags),
                to_us(now),
            )
            if changed != 1:
                raise ConflictError("A message with this eventId already exists.")
            found = await conn.fetch(
                "SELECT * FROM endpoint WHERE app_id = $1 AND disabled = FALSE", msg.app_id
            )
            candidates = map(rows.endpoint, found)
            if only_endpoint is not None:
                targets = [e for e in candidates if e.id == only_endpoint]
            else:
                targets = [e for e in candidates if wants(e, msg.event_type, msg.channels)]
            deliveries = [_new_delivery(msg, e.id, Trigger.SCHEDULED, now) for e in targets]
            if deliveries:
                await conn.executemany(_INSERT_DELIVERY, [_delivery_values(d) for d in deliveries])
        if deliveries:
            await self.db.notify()
        return deliveries

    async def get_message(self, app_id: str, msg_ref: str) -> Message:
        """The message with this id, or with this eventId, in the application."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM message WHERE app_id = $1 AND (id = $2 OR event_id = $2)"
                " ORDER BY (id = $2) DESC LIMIT 1",
                app_id,
                msg_ref,
            )
        if row is None:
            raise NotFoundError("Message not found.")
        return rows.message(row)

    def _message_conditions(self, flt: MessageFilter, args: list[Any], alias: str) -> str:
        sql = ""
        if flt.event_types:
            marks = []
            for name in flt.event_types:
                args.append(name)
                marks.append(f"${len(args)}")
            sql += f" AND {alias}event_type IN ({', '.join(marks)})"
        for column, value in ((f"{alias}channels", flt.channel), (f"{alias}tags", flt.tag)):
            if value is not None:
                # values are restricted to [a-zA-Z0-9-_.:] so a quoted search is exact
                args.append(dump(value))
                sql += f" AND {self.db.find_function}({column}, ${len(args)}) > 0"
        if flt.before is not None:
            args.append(to_us(flt.before))
            sql += f" AND {alias}created_at < ${len(args)}"
        if flt.after is not None:
            args.append(to_us(flt.after))
            sql += f" AND {alias}created_at > ${len(args)}"
        return sql

    async def list_messages(
        self, app_id: str, flt: MessageFilter, req: PageRequest
    ) -> Page[Message]:
        args: list[Any] = [app_id]
        sql = "SELECT * FROM message WHERE app_id = $1" + self._message_conditions(flt, args, "")
        async with self.db.connection() as conn:
            return await self._page(conn, sql, args, req, rows.message)

    async def list_endpoint_messages(
        self, endpoint_id: str, flt: MessageFilter, status: int | None, req: PageRequest
    ) -> Page[tuple[Message, Delivery]]:
        """Messages sent (or to be sent) to one endpoint, with their delivery."""
        args: list[Any] = [endpoint_id]
        sql = (
            "SELECT m.*, " + _DELIVERY_AS_D + " FROM message m JOIN delivery d"
            " ON d.msg_id = m.id WHERE d.endpoint_id = $1"
        ) + self._message_conditions(flt, args, "m.")
        sql += _state_condition(status, args)
        async with self.db.connection() as conn:
            return await self._page(
                conn,
                sql,
                args,
                req,
                lambda r: (rows.message(r), rows.delivery(r, "d_")),
                key="m.id",
            )

    # -- deliveries --------------------------------------------------------------------------

    async def list_destinations(
        self, msg_id: str, req: PageRequest
    ) -> Page[tuple[Endpoint, Delivery]]:
        """The endpoints a message goes to, each with its delivery."""
        sql = (
            "SELECT e.*, " + _DELIVERY_AS_D + " FROM endpoint e JOIN delivery d"
            " ON d.endpoint_id = e.id WHERE d.msg_id = $1"
        )
        async with self.db.connection() as conn:
            return await self._page(
                conn,
                sql,
                [msg_id],
                req,
                lambda r: (rows.endpoint(r), rows.delivery(r, "d_")),
                key="e.id",
            )

    async def get_delivery(self, msg_id: str, endpoint_id: str) -> Delivery | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM delivery WHERE msg_id = $1 AND endpoint_id = $2",
                msg_id,
                endpoint_id,
            )
        return None if row is None else rows.delivery(row)

    async def resend(self, msg: Message, endpoint: Endpoint, now: datetime) -> Delivery:
        """Queue ``msg`` for ``endpoint`` again now, as a manual try with a fresh schedule."""
        fresh = _new_delivery(msg, endpoint.id, Trigger.MANUAL, now)
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                "UPDATE delivery SET state = 'pending', attempts = 0, trigger = $3, paced = FALSE,"
                " next_attempt_at = $4, lease_until = NULL, leased_by = NULL, updated_at = $4"
                " WHERE msg_id = $1 AND endpoint_id = $2 AND state <> 'sending'",
                msg.id,
                endpoint.id,
                int(Trigger.MANUAL),
                to_us(now),
            )
            if changed == 0:  # no delivery yet (endpoint added later), or one in flight
                await conn.execute(
                    _INSERT_DELIVERY + " ON CONFLICT DO NOTHING", *_delivery_values(fresh)
                )
            row = await conn.fetchrow(
                "SELECT * FROM delivery WHERE msg_id = $1 AND endpoint_id = $2", msg.id, endpoint.id
            )
        await self.db.notify()
        return rows.delivery(row) if row is not None else fresh

    async def replay_missing(
        self, endpoint: Endpoint, since: datetime, until: datetime | None, now: datetime
    ) -> int:
        """Queue for ``endpoint`` every message of its application made in [since, until) that
        it wants (filters) but has no delivery of, e.g. because it was added or disabled at
        the time. Works in batches; returns how many deliveries were made."""
        made = 0
        cursor = ""
        while True:
            args: list[Any] = [endpoint.app_id, to_us(since), endpoint.id, cursor, REPLAY_BATCH]
            sql = (
                "SELECT m.* FROM message m WHERE m.app_id = $1 AND m.created_at >= $2"
                " AND m.id > $4 AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.msg_id = m.id"
                " AND d.endpoint_id = $3)"
            )
            if until is not None:
                args.append(to_us(until))
                sql += f" AND m.created_at < ${len(args)}"
            async with self.db.transaction() as conn:
                found = [
                    rows.message(r)
                    for r in await conn.fetch(sql + " ORDER BY m.id LIMIT $5", *args)
                ]
                fresh = [
                    _new_delivery(m, endpoint.id, Trigger.MANUAL, now)
                    for m in found
                    if wants(endpoint, m.event_type, m.channels)
                ]
                if fresh:
                    await conn.executemany(
                        _INSERT_DELIVERY + " ON CONFLICT DO NOTHING",
                        [_delivery_values(d) for d in fresh],
                    )
            made += len(fresh)
            if len(found) < REPLAY_BATCH:
                break
            cursor = found[-1].id
        if made:
            await self.db.notify()
        return made

    async def recover(
        self, endpoint_id: str, since: datetime, until: datetime | None, now: datetime
    ) -> int:
        """Queue every failed delivery of the endpoint made in [since, until) again."""
        args: list[Any] = [endpoint_id, to_us(since), to_us(now), int(Trigger.MANUAL)]
        sql = (
            "UPDATE delivery SET state = 'pending', attempts = 0, trigger = $4, paced = FALSE,"
            " next_attempt_at = $3, updated_at = $3 WHERE endpoint_id = $1 AND state = 'failed'"
            " AND created_at >= $2"
        )
        if until is not None:
            args.append(to_us(until))
            sql += f" AND created_at < ${len(args)}"
        async with self.db.transaction() as conn:
            changed = await conn.execute(sql, *args)
        if changed:
            await self.db.notify()
        return changed

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        worker: str,
        lease: timedelta,
        cap: int = DEFAULT_ENDPOINT_CAP,
        busy_delay: timedelta = BUSY_DELAY,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries to ``worker`` until ``now + lease``, keeping
        each endpoint under ``cap`` in flight and under its throttleRate (see core.pacing):
        what may not start yet is rescheduled in the same transaction."""
        async with self.db.transaction() as conn:
            found = await conn.fetch(
                "SELECT id, endpoint_id, paced FROM delivery WHERE state = 'pending'"
                " AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2"
                + self.db.lock_clause,
                to_us(now),
                limit * CLAIM_WINDOW,
            )
            if not found:
                return []
            due = [Due(r["id"], r["endpoint_id"], bool(r["paced"])) for r in found]
            loads = await self._endpoint_loads(conn, sorted({d.endpoint_id for d in due}))
            plan = plan_claim(due, loads, now, limit, cap, busy_delay)
            if plan.defer:
                await conn.executemany(
                    "UPDATE delivery SET next_attempt_at = $2, paced = $3, updated_at = $4"
                    " WHERE id = $1",
                    [(i, to_us(at), paced, to_us(now)) for i, (at, paced) in plan.defer.items()],
                )
            if plan.next_send_at:
                await conn.executemany(
                    "UPDATE endpoint SET next_send_at = $2 WHERE id = $1",
                    [(ep, to_us(at)) for ep, at in plan.next_send_at.items()],
                )
            if not plan.start:
                return []
            marks = ", ".join(f"${i}" for i in range(5, len(plan.start) + 5))
            started = await conn.fetch(
                "UPDATE delivery SET state = 'sending', lease_until = $1, leased_by = $2,"
                f" updated_at = $3, paced = $4 WHERE id IN ({marks}) RETURNING *",
                to_us(now + lease),
                worker,
                to_us(now),
                False,
                *plan.start,
            )
        return [rows.delivery(r) for r in started]

    async def _endpoint_loads(
        self, conn: Connection, endpoint_ids: Sequence[str]
    ) -> dict[str, EndpointLoad]:
        """In-flight counts and throttle state of these endpoints, their rows locked (in id
        order, so concurrent claimers never deadlock) until the claim commits."""
        marks = ", ".join(f"${i}" for i in range(1, len(endpoint_ids) + 1))
        paces = await conn.fetch(
            f"SELECT id, rate_limit, next_send_at FROM endpoint WHERE id IN ({marks})"
            " ORDER BY id" + self.db.row_lock,
            *endpoint_ids,
        )
        running = await conn.fetch(
            "SELECT endpoint_id, COUNT(*) AS n FROM delivery WHERE state = 'sending'"
            f" AND endpoint_id IN ({marks}) GROUP BY endpoint_id",
            *endpoint_ids,
        )
        in_flight = {r["endpoint_id"]: int(r["n"]) for r in running}
        return {
            r["id"]: EndpointLoad(
                in_flight=in_flight.get(r["id"], 0),
                rate=r["rate_limit"],
                next_send_at=rows.opt_from_us(r["next_send_at"]),
            )
            for r in paces
        }

    async def reclaim_expired(self, now: datetime) -> int:
        """Make deliveries whose lease ran out (their worker died) pending again."""
        async with self.db.transaction() as conn:
            return await conn.execute(
                "UPDATE delivery SET state = 'pending', next_attempt_at = $1, lease_until = NULL,"
                " paced = FALSE, leased_by = NULL, updated_at = $1"
                " WHERE state = 'sending' AND lease_until <= $1",
                to_us(now),
            )

    async def record_attempt(self, attempt: Attempt | None, delivery: Delivery) -> bool:
        """Store ``attempt`` and move ``delivery`` to its new state, if its lease still holds.

        The attempt is stored either way (the request really was made); when the lease was
        lost (another worker owns the delivery now) the delivery is left alone and this
        returns False.
        """
        async with self.db.transaction() as conn:
            if attempt is not None:
                await conn.execute(_INSERT_ATTEMPT, *_attempt_values(attempt))
            changed = await conn.execute(
                "UPDATE delivery SET state = $2, attempts = $3, next_attempt_at = $4,"
                " lease_until = NULL, leased_by = NULL, updated_at = $5, paced = FALSE"
                " WHERE id = $1 AND state = 'sending' AND leased_by = $6",
                delivery.id,
                delivery.state.value,
                delivery.attempts,
                opt_to_us(delivery.next_attempt_at),
                to_us(delivery.updated_at),
                delivery.leased_by,
            )
        return changed == 1

    # -- attempts ----------------------------------------------------------------------------

    async def get_attempt(self, msg_id: str, attempt_id: str) -> Attempt:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM attempt WHERE msg_id = $1 AND id = $2", msg_id, attempt_id
            )
        if row is None:
            raise NotFoundError("Message attempt not found.")
        return rows.attempt(row)

    async def list_attempts(
        self, column: str, value: str, flt: AttemptFilter, req: PageRequest
    ) -> Page[Attempt]:
        """Attempts whose ``column`` (``msg_id`` or ``endpoint_id``) is ``value``, newest first."""
        if column not in ("msg_id", "endpoint_id"):
            raise ValueError(column)
        args: list[Any] = [value]
        sql = f"SELECT a.* FROM attempt a WHERE a.{column} = $1"
        if flt.status is not None:
            args.append(flt.status)
            sql += f" AND a.status = ${len(args)}"
        if flt.status_code_class is not None:
            low = flt.status_code_class
            args.extend([low, low + 100 if low else 100])
            sql += (
                f" AND a.response_status >= ${len(args) - 1} AND a.response_status < ${len(args)}"
            )
        if flt.endpoint_id is not None:
            args.append(flt.endpoint_id)
            sql += f" AND a.endpoint_id = ${len(args)}"
        if flt.event_types or flt.channel:
            inner = self._message_conditions(
                MessageFilter(event_types=flt.event_types, channel=flt.channel), args, "m."
            )
            sql += f" AND EXISTS (SELECT 1 FROM message m WHERE m.id = a.msg_id{inner})"
        if flt.before is not None:
            args.append(to_us(flt.before))
            sql += f" AND a.created_at < ${len(args)}"
        if flt.after is not None:
            args.append(to_us(flt.after))
            sql += f" AND a.created_at > ${len(args)}"
        async with self.db.connection() as conn:
            return await self._page(
                conn, sql, args, replace(req, descending=True), rows.attempt, key="a.id"
            )

    async def expunge_message(self, msg_id: str) -> None:
        """Forget a message's payload (it becomes ``{}``); its history stays."""
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE message SET payload = '{}' WHERE id = $1", msg_id)

    async def expunge_attempt(self, attempt_id: str) -> None:
        """Forget the response body an attempt recorded."""
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE attempt SET response_body = '' WHERE id = $1", attempt_id)

    async def get_messages(self, ids: Sequence[str]) -> dict[str, Message]:
        if not ids:
            return {}
        marks = ", ".join(f"${i}" for i in range(1, len(ids) + 1))
        async with self.db.connection() as conn:
            found = await conn.fetch(f"SELECT * FROM message WHERE id IN ({marks})", *ids)
        return {r["id"]: rows.message(r) for r in found}

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


_DELIVERY_COLUMNS = (
    "id, org_id, app_id, msg_id, endpoint_id, state, attempts, trigger, next_attempt_at,"
    " lease_until, leased_by, created_at, updated_at"
)
_DELIVERY_AS_D = ", ".join(f"d.{c.strip()} AS d_{c.strip()}" for c in _DELIVERY_COLUMNS.split(","))
_INSERT_DELIVERY = (
    f"INSERT INTO delivery ({_DELIVERY_COLUMNS})\n"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)\n"
)
_INSERT_ATTEMPT = (
    "INSERT INTO attempt (id, org_id, app_id, msg_id, endpoint_id, delivery_id, url, status,"
    " response_status, response_body, request_headers, failure_class, failure_message,"
    " duration_ms, trigger, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
    " $12, $13, $14, $15, $16)"
)


def _state_condition(status: int | None, args: list[Any]) -> str:
    if status is None:
        return ""
    states = [s.value for s, st in STATUS_OF_STATE.items() if int(st) == status]
    if not states:
        return " AND FALSE"
    args.append(states[0])
    return f" AND d.state = ${len(args)}"


def _new_delivery(msg: Message, endpoint_id: str, trigger: Trigger, now: datetime) -> Delivery:
    """A pending delivery of ``msg`` to ``endpoint_id``, due ``now``."""
    return Delivery(
        id=new_id("dlv"),
        org_id=msg.org_id,
        app_id=msg.app_id,
        msg_id=msg.id,
        endpoint_id=endpoint_id,
        state=DeliveryState.PENDING,
        attempts=0,
        trigger=trigger,
        next_attempt_at=now,
        lease_until=None,
        leased_by=None,
        created_at=now,
        updated_at=now,
    )


def _delivery_values(d: Delivery) -> tuple[Any, ...]:
    return (
        d.id,
        d.org_id,
        d.app_id,
        d.msg_id,
        d.endpoint_id,
        d.state.value,
        d.attempts,
        int(d.trigger),
        opt_to_us(d.next_attempt_at),
        opt_to_us(d.lease_until),
        d.leased_by,
        to_us(d.created_at),
        to_us(d.updated_at),
    )


def _attempt_values(a: Attempt) -> tuple[Any, ...]:
    return (
        a.id,
        a.org_id,
        a.app_id,
        a.msg_id,
        a.endpoint_id,
        a.delivery_id,
        a.url,
        int(a.status),
        a.response_status,
        a.response_body,
        dump(a.request_headers),
        a.failure_class,
        a.failure_message,
        a.duration_ms,
        int(a.trigger),
        to_us(a.created_at),
    )


def _endpoint_values(ep: Endpoint) -> tuple[Any, ...]:
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
        dump_secrets(ep.secrets),
        dump(ep.headers),
        dump(ep.metadata),
        to_us(ep.created_at),
        to_us(ep.updated_at),
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
