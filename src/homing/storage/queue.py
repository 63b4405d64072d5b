"""Storage verbs for the queue: messages (the outbox), deliveries (claims, leases, pacing)
and attempts."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from homing.core.filters import accepts, wants
from homing.core.models import (
    STATUS_OF_STATE,
    Attempt,
    Delivery,
    DeliveryState,
    Endpoint,
    Message,
    Trigger,
)
from homing.core.pacing import ClaimPlan, Due, EndpointLoad, plan_claim
from homing.errors import ConflictError
from homing.ids import new_id
from homing.storage import rows
from homing.storage.base import (
    AttemptFilter,
    Connection,
    MessageFilter,
    Page,
    PageRequest,
    Row,
)
from homing.storage.rows import dump, dump_opt, opt_to_us, to_us
from homing.storage.sqlbase import SqlBase, marks, time_window

DEFAULT_ENDPOINT_CAP = 16
REPLAY_BATCH = 1000
INSERT_CHUNK = 500  # rows per multi-row INSERT (13 parameters each; SQLite allows 32766)
RECORD_CHUNK = 256  # results per statement when recording (16 parameters each at most)
CLAIM_ROUNDS = 2  # windows read per claim at most: the head, then one further on
MIN_SCAN = 64  # rows per window at least, so that a claim for a few still looks around
# Rows of a further window per delivery still wanted: further windows look past the
# backlogs of endpoints at their cap (which are left out of the planning), and one large
# read costs one round trip where several small ones cost several.
FAR_WINDOW = 4


class Queue(SqlBase):
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
            # the hot path of ingest: read only the filters, not whole endpoints
            found = await conn.fetch(
                "SELECT id, event_types, channels FROM endpoint"
                " WHERE app_id = $1 AND disabled = FALSE",
                msg.app_id,
            )
            if only_endpoint is not None:
                targets = [r["id"] for r in found if r["id"] == only_endpoint]
            else:
                targets = [r["id"] for r in found if _accepts_row(r, msg)]
            deliveries = [_new_delivery(msg, e, Trigger.SCHEDULED, now) for e in targets]
            for start in range(0, len(deliveries), INSERT_CHUNK):
                await conn.execute(*_insert_deliveries(deliveries[start : start + INSERT_CHUNK]))
        if deliveries:
            await self.db.notify()
        return deliveries

    async def get_message(self, app_id: str, msg_ref: str) -> Message:
        """The message with this id, or with this eventId, in the application."""
        return await self._one(
            "SELECT * FROM message WHERE app_id = $1 AND (id = $2 OR event_id = $2)"
            " ORDER BY (id = $2) DESC LIMIT 1",
            [app_id, msg_ref],
            rows.message,
            "Message",
        )

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
        return sql + time_window(f"{alias}created_at", flt.before, flt.after, args)

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
                lambda r: (self._endpoint(r), rows.delivery(r, "d_")),
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
        """Send ``msg`` to ``endpoint`` again, as a manual try with a fresh schedule: now, when
        its delivery is finished or waiting for a retry; right after the try that is in flight
        or about to start otherwise (so a resend always adds a try)."""
        fresh = _new_delivery(msg, endpoint.id, Trigger.MANUAL, now)
        async with self.db.transaction() as conn:
            # locked, so a worker recording a try cannot change the state under our decision
            current = await conn.fetchrow(
                "SELECT id, state, attempts FROM delivery WHERE msg_id = $1 AND endpoint_id = $2"
                + self.db.row_lock,
                msg.id,
                endpoint.id,
            )
            if current is None:  # the endpoint was added after the message
                await conn.execute(
                    _INSERT_DELIVERY + " ON CONFLICT DO NOTHING", *_delivery_values(fresh)
                )
            elif current["state"] == "sending" or (
                current["state"] == "pending" and current["attempts"] == 0
            ):  # a try is in flight or about to start: one more right after it
                await conn.execute("UPDATE delivery SET resend = TRUE WHERE id = $1", current["id"])
            else:
                await conn.execute(
                    "UPDATE delivery SET state = 'pending', attempts = 0, trigger = $2,"
                    " paced = FALSE, next_attempt_at = $3, lease_until = NULL, leased_by = NULL,"
                    " updated_at = $3, resend = FALSE WHERE id = $1",
                    current["id"],
                    int(Trigger.MANUAL),
                    to_us(now),
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
        """Queue every failed or canceled (the endpoint was disabled) delivery of the endpoint
        made in [since, until) again."""
        args: list[Any] = [endpoint_id, to_us(since), to_us(now), int(Trigger.MANUAL)]
        sql = (
            "UPDATE delivery SET state = 'pending', attempts = 0, trigger = $4, paced = FALSE,"
            " next_attempt_at = $3, updated_at = $3 WHERE endpoint_id = $1"
            " AND state IN ('failed', 'canceled')"
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
        prefetch: Mapping[str, int] | None = None,
        plain: int | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries to ``worker`` until ``now + lease``, keeping
        each endpoint under ``cap`` in flight and under its throttleRate (see core.pacing):
        what may not start yet is rescheduled in the same transaction. ``prefetch`` (endpoint
        id -> leases): ``worker`` may hold up to that many leases of such an endpoint while it
        is unpaced and no other worker holds a lease of it; ``worker`` must then send at most
        ``cap`` of them at once itself. ``plain``: at most this many deliveries in all of
        endpoints not in ``prefetch`` (None: ``limit``).

        The due queue is read in bounded windows: the first from its head (oldest first),
        the next ones from where the previous claim of this process stopped, wrapping at the
        end. Every claim costs a bounded amount of work however long one endpoint's backlog
        is, and the deliveries queued behind a busy endpoint's backlog are still reached.
        """
        started: list[Delivery] = []
        ahead = prefetch or {}
        plain_left = limit if plain is None else plain
        read: list[Due] = []  # rows of endpoints that may be leased ahead, for the last step
        async with self.db.transaction() as conn:
            most = max([cap, *ahead.values()])
            waiting = await self._endpoints_at_cap(conn, cap, most, worker)
            after: tuple[int, str] | None = None
            for round_no in range(CLAIM_ROUNDS):
                if round_no == 1 and self._scan_cursor is not None:
                    after = max(after, self._scan_cursor) if after else self._scan_cursor
                window = max(limit - len(started), MIN_SCAN) * (FAR_WINDOW if round_no else 1)
                rows, last = await self._due(conn, now, window, after)
                at_end = len(rows) < window
                after = last or after
                if round_no > 0:
                    self._scan_cursor = None if at_end else after
                # leasing ahead takes rows in queue order up to the limit: keep enough of them
                read += [d for d in rows if d.endpoint_id in ahead][: 2 * limit - len(read)]
                # every endpoint up to its cap first, in every window read ...
                first = (cap, prefetch, plain_left, False)
                more = await self._start(conn, rows, waiting, now, limit - len(started),
                                         first, lease, worker)  # fmt: skip
                plain_left -= sum(1 for d in more if d.endpoint_id not in ahead)
                started += more
                if len(started) >= limit or at_end:
                    break
            # ... then what is left of the limit to the endpoints leased ahead
            if read and len(started) < limit:
                taken = {d.id for d in started}
                rest = [d for d in read if d.delivery_id not in taken]
                then = (cap, prefetch, 0, True)
                started += await self._start(conn, rest, set(), now, limit - len(started),
                                             then, lease, worker)  # fmt: skip
        return started

    async def _start(
        self,
        conn: Connection,
        rows: list[Due],
        waiting: set[str],
        now: datetime,
        limit: int,
        caps: tuple[int, Mapping[str, int] | None, int, bool],
        lease: timedelta,
        worker: str,
    ) -> list[Delivery]:
        """Plan and write the start of what ``rows`` allows; add endpoints that must wait to
        ``waiting`` (it is updated in place). ``caps``: the cap, the prefetches, the plain
        starts left and whether to lease ahead."""
        due = [d for d in rows if d.endpoint_id not in waiting]
        if not due or limit <= 0:
            return []
        loads = await self._endpoint_loads(conn, sorted({d.endpoint_id for d in due}), worker)
        # endpoints another claimer holds right now are theirs to serve this moment
        waiting |= {d.endpoint_id for d in due if d.endpoint_id not in loads}
        mine = [d for d in due if d.endpoint_id in loads]
        plan = plan_claim(mine, loads, now, limit, *caps)
        waiting |= plan.held | {d.endpoint_id for d in mine if d.delivery_id in plan.defer}
        return await self._apply(conn, plan, now, now + lease, worker)

    async def _endpoints_at_cap(
        self, conn: Connection, cap: int, most: int, worker: str
    ) -> set[str]:
        """Endpoints with ``cap`` deliveries in flight (``most`` when ``worker`` holds them
        all): the claim passes over their rows."""
        found = await conn.fetch(
            "SELECT endpoint_id FROM delivery WHERE state = 'sending'"
            " GROUP BY endpoint_id HAVING COUNT(*) >= $1 AND (COUNT(*) >= $2"
            " OR SUM(CASE WHEN leased_by = $3 THEN 0 ELSE 1 END) > 0)",
            cap,
            most,
            worker,
        )
        return {r["endpoint_id"] for r in found}

    async def _due(
        self, conn: Connection, now: datetime, window: int, after: tuple[int, str] | None
    ) -> tuple[list[Due], tuple[int, str] | None]:
        """The next ``window`` due pending deliveries in queue order, after the key ``after``
        (next_attempt_at, id), and the key of the last one.

        Not locked: a claim only starts deliveries of endpoints whose rows it has locked
        (``_endpoint_loads``), so two claimers never start the same delivery, and the start
        itself re-checks that the delivery is still pending. Locking every row read would
        cost a write per row, most of them for deliveries that do not start now."""
        args: list[Any] = [to_us(now), window]
        keyset = ""
        if after is not None:
            args.extend(after)
            keyset = " AND (next_attempt_at, id) > ($3, $4)"
        found = await conn.fetch(
            "SELECT id, endpoint_id, paced, next_attempt_at FROM delivery WHERE state = 'pending'"
            f" AND next_attempt_at <= $1{keyset} ORDER BY next_attempt_at, id LIMIT $2",
            *args,
        )
        rows = [Due(r["id"], r["endpoint_id"], bool(r["paced"])) for r in found]
        last = (found[-1]["next_attempt_at"], found[-1]["id"]) if found else None
        return rows, last

    async def _apply(
        self, conn: Connection, plan: ClaimPlan, now: datetime, until: datetime, worker: str
    ) -> list[Delivery]:
        """Write a claim plan: reschedule what waits, pace endpoints, lease what starts."""
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
        # COALESCE (state is never NULL): "state = 'pending'" alone would match the partial
        # index of due deliveries, which PostgreSQL picks over the primary key whenever its
        # statistics lag behind a fast-growing queue, and then reads every due row
        leased = await conn.fetch(
            "UPDATE delivery SET state = 'sending', lease_until = $1, leased_by = $2,"
            f" updated_at = $3, paced = $4 WHERE id IN ({marks(len(plan.start), 5)})"
            " AND COALESCE(state, '') = 'pending' RETURNING *",
            to_us(until),
            worker,
            to_us(now),
            False,
            *plan.start,
        )
        return [rows.delivery(r) for r in leased]

    async def _endpoint_loads(
        self, conn: Connection, endpoint_ids: Sequence[str], worker: str
    ) -> dict[str, EndpointLoad]:
        """In-flight counts (all, and ``worker``'s) and throttle state of these endpoints,
        their rows locked until the claim commits. Endpoints locked by another claimer are
        left out (``SKIP LOCKED``): waiting for them could deadlock two claimers that lock in
        different rounds."""
        places = marks(len(endpoint_ids))
        paces = await conn.fetch(
            f"SELECT id, rate_limit, next_send_at FROM endpoint WHERE id IN ({places})"
            " ORDER BY id" + self.db.row_lock_skip,
            *endpoint_ids,
        )
        running = await conn.fetch(
            "SELECT endpoint_id, COUNT(*) AS n,"
            f" SUM(CASE WHEN leased_by = ${len(endpoint_ids) + 1} THEN 1 ELSE 0 END) AS mine"
            f" FROM delivery WHERE state = 'sending' AND endpoint_id IN ({places})"
            " GROUP BY endpoint_id",
            *endpoint_ids,
            worker,
        )
        held = {r["endpoint_id"]: (int(r["n"]), int(r["mine"])) for r in running}
        return {
            r["id"]: EndpointLoad(
                in_flight=held.get(r["id"], (0, 0))[0],
                rate=r["rate_limit"],
                next_send_at=rows.opt_from_us(r["next_send_at"]),
                mine=held.get(r["id"], (0, 0))[1],
            )
            for r in paces
        }

    async def reclaim_expired(self, now: datetime) -> int:
        """Make deliveries whose lease ran out (their worker died) pending again."""
        async with self.db.transaction() as conn:
            return await conn.execute(
                "UPDATE delivery SET state = 'pending', next_attempt_at = $1, lease_until = NULL,"
                " paced = FALSE, resend = FALSE, leased_by = NULL, updated_at = $1"
                " WHERE state = 'sending' AND lease_until <= $1",
                to_us(now),
            )

    async def record_attempt(self, attempt: Attempt | None, delivery: Delivery) -> bool:
        """``record_attempts`` for one result: True when the lease held."""
        return (await self.record_attempts([(attempt, delivery)]))[0] is not None

    async def record_attempts(
        self, results: Sequence[tuple[Attempt | None, Delivery]]
    ) -> list[DeliveryState | None]:
        """For each (attempt, delivery): move the delivery to its new state if its lease still
        holds, and store the attempt; all in one transaction. Returns, per result, None when
        the lease was lost, else the state now stored: the delivery's new state, or pending
        when a resend asked during the try queued it again.

        When the lease was lost (another worker owns the delivery now) the attempt is still
        stored, since the request really was made, but the delivery is left alone; when the
        delivery is gone (its application or endpoint was deleted meanwhile) nothing is stored.
        """
        if not results:
            return []
        held: list[DeliveryState | None] = []
        async with self.db.transaction() as conn:
            for start in range(0, len(results), RECORD_CHUNK):
                chunk = results[start : start + RECORD_CHUNK]
                moved = {
                    r["id"]: DeliveryState(r["state"])
                    for r in await conn.fetch(*_update_moves([d for _, d in chunk]))
                }
                held += [moved.get(d.id) for _, d in chunk]
            # the request was made even when the lease was lost: keep the attempt, unless
            # the delivery is gone (its application or endpoint was deleted meanwhile)
            lost = [d.id for (_, d), kept in zip(results, held, strict=True) if kept is None]
            exists = {d.id for (_, d), kept in zip(results, held, strict=True) if kept}
            if lost:
                found = await conn.fetch(
                    f"SELECT id FROM delivery WHERE id IN ({marks(len(lost))})", *lost
                )
                exists |= {r["id"] for r in found}
            attempts = [_attempt_values(a) for a, d in results if a is not None and d.id in exists]
            if attempts:
                await conn.insert_rows("attempt", _ATTEMPT_COLUMNS, attempts)
        return held

    # -- attempts ----------------------------------------------------------------------------

    async def get_attempt(self, msg_id: str, attempt_id: str) -> Attempt:
        return await self._one(
            "SELECT * FROM attempt WHERE msg_id = $1 AND id = $2",
            [msg_id, attempt_id],
            rows.attempt,
            "Message attempt",
        )

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
        sql += time_window("a.created_at", flt.before, flt.after, args)
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
        """The messages with these ids (missing ones are left out), by id."""
        return await self._by_ids("message", ids, rows.message)


_DELIVERY_COLUMNS = (
    "id, org_id, app_id, msg_id, endpoint_id, state, attempts, trigger, next_attempt_at,"
    " lease_until, leased_by, created_at, updated_at"
)
_DELIVERY_AS_D = ", ".join(f"d.{c.strip()} AS d_{c.strip()}" for c in _DELIVERY_COLUMNS.split(","))
_INSERT_DELIVERY = (
    f"INSERT INTO delivery ({_DELIVERY_COLUMNS})\n"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)\n"
)
_ATTEMPT_COLUMNS = (
    "id", "org_id", "app_id", "msg_id", "endpoint_id", "delivery_id", "url", "status",
    "response_status", "response_body", "request_headers", "failure_class", "failure_message",
    "duration_ms", "trigger", "created_at",
)  # fmt: skip
# parameter types, so that PostgreSQL can type the VALUES rows (padding rows are all NULL)
_MOVE_TYPES = ("TEXT", "TEXT", "INTEGER", "BIGINT", "BIGINT", "TEXT", "BIGINT")


@functools.lru_cache(maxsize=16)
def _move_sql(rows: int) -> str:
    """The UPDATE of ``_update_moves`` for ``rows`` VALUES rows (a power of two): made once
    per size, as the statement it prepares is."""
    width = len(_MOVE_TYPES)
    values = ", ".join(
        "("
        + ", ".join(f"CAST(${n * width + i + 1} AS {t})" for i, t in enumerate(_MOVE_TYPES))
        + ")"
        for n in range(rows)
    )
    return (
        "UPDATE delivery SET state = CASE WHEN resend THEN 'pending' ELSE v.column2 END,"
        " attempts = CASE WHEN resend THEN 0 ELSE v.column3 END,"
        f" trigger = CASE WHEN resend THEN {int(Trigger.MANUAL)} ELSE trigger END,"
        " next_attempt_at = CASE WHEN resend THEN v.column5 ELSE v.column4 END,"
        " lease_until = NULL, leased_by = NULL, updated_at = v.column5, paced = FALSE,"
        f" resend = FALSE FROM (VALUES {values}) AS v WHERE delivery.id = v.column1"
        " AND delivery.state = 'sending' AND delivery.leased_by = v.column6"
        # the very lease: a worker's stale copy of an expired lease it has claimed anew
        # must not move the delivery under its newer lease
        " AND delivery.lease_until = v.column7"
        " RETURNING delivery.id, delivery.state"
    )


def _update_moves(moved: Sequence[Delivery]) -> tuple[Any, ...]:
    """One UPDATE moving each delivery to its new state if its lease (``leased_by`` and
    ``lease_until``) still holds, returning those it moved (id and the state stored). A
    resend asked for during the try queues the delivery again right away instead. The rows
    are padded with NULL rows to a power of two, so that a few statements serve every size."""
    rows = 1 << (len(moved) - 1).bit_length()
    args = [
        v
        for d in moved
        for v in (
            d.id,
            d.state.value,
            d.attempts,
            opt_to_us(d.next_attempt_at),
            to_us(d.updated_at),
            d.leased_by,
            opt_to_us(d.lease_until),
        )
    ]
    args += [None] * (len(_MOVE_TYPES) * (rows - len(moved)))
    return (_move_sql(rows), *args)


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


def _accepts_row(row: Row, msg: Message) -> bool:
    wanted_types, wanted_channels = row["event_types"], row["channels"]
    return accepts(
        rows.tuple_of(wanted_types), rows.tuple_of(wanted_channels), msg.event_type, msg.channels
    )


def _insert_deliveries(deliveries: Sequence[Delivery]) -> tuple[Any, ...]:
    """One multi-row INSERT (one round trip, unlike executemany) and its arguments."""
    width = 13
    groups = ", ".join(f"({marks(width, n * width + 1)})" for n in range(len(deliveries)))
    sql = _INSERT_DELIVERY.split("VALUES")[0] + "VALUES " + groups
    return (sql, *(v for d in deliveries for v in _delivery_values(d)))


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
