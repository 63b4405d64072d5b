"""Conversions between database rows and domain records (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from homing.core.models import (
    Application,
    Attempt,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointSecret,
    EventType,
    Message,
    MessageStatus,
    Trigger,
)
from homing.crypto import SecretBox, conceal, reveal
from homing.storage.base import Row


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def opt_from_us(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def opt_to_us(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dump_opt(value: Any) -> str | None:
    return None if value is None else dump(list(value) if isinstance(value, tuple) else value)


def tuple_of(text: str | None) -> tuple[str, ...] | None:
    """A JSON list column as a tuple (None stays None)."""
    return None if text is None else tuple(json.loads(text))


def _ints(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(int(i) for i in json.loads(text))


def application(row: Row) -> Application:
    return Application(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        uid=row["uid"],
        rate_limit=row["rate_limit"],
        metadata=json.loads(row["metadata"]),
        created_at=from_us(row["created_at"]),
        updated_at=from_us(row["updated_at"]),
    )


def dump_secrets(secrets: tuple[EndpointSecret, ...], box: SecretBox | None) -> str:
    return dump(
        [{"key": conceal(s.key, box), "expires_at": opt_to_us(s.expires_at)} for s in secrets]
    )


def endpoint(row: Row, box: SecretBox | None = None) -> Endpoint:
    secrets = tuple(
        EndpointSecret(key=reveal(s["key"], box), expires_at=opt_from_us(s["expires_at"]))
        for s in json.loads(row["secrets"])
    )
    return Endpoint(
        id=row["id"],
        org_id=row["org_id"],
        app_id=row["app_id"],
        url=row["url"],
        uid=row["uid"],
        description=row["description"],
        rate_limit=row["rate_limit"],
        disabled=bool(row["disabled"]),
        event_types=tuple_of(row["event_types"]),
        channels=tuple_of(row["channels"]),
        secrets=secrets,
        headers=json.loads(row["headers"]),
        metadata=json.loads(row["metadata"]),
        created_at=from_us(row["created_at"]),
        updated_at=from_us(row["updated_at"]),
        failing_since=opt_from_us(row["failing_since"]),
        github_signature=bool(row["github_signature"]),
    )


def event_type(row: Row) -> EventType:
    return EventType(
        org_id=row["org_id"],
        name=row["name"],
        description=row["description"],
        archived=bool(row["archived"]),
        deprecated=bool(row["deprecated"]),
        feature_flag=row["feature_flag"],
        schemas=None if row["schemas"] is None else json.loads(row["schemas"]),
        created_at=from_us(row["created_at"]),
        updated_at=from_us(row["updated_at"]),
        retry_schedule=_ints(row["retry_schedule"]),
    )


def message(row: Row) -> Message:
    return Message(
        id=row["id"],
        org_id=row["org_id"],
        app_id=row["app_id"],
        event_type=row["event_type"],
        event_id=row["event_id"],
        payload=row["payload"],
        channels=tuple_of(row["channels"]),
        tags=tuple_of(row["tags"]),
        created_at=from_us(row["created_at"]),
    )


def delivery(row: Row, prefix: str = "") -> Delivery:
    return Delivery(
        id=row[prefix + "id"],
        org_id=row[prefix + "org_id"],
        app_id=row[prefix + "app_id"],
        msg_id=row[prefix + "msg_id"],
        endpoint_id=row[prefix + "endpoint_id"],
        state=DeliveryState(row[prefix + "state"]),
        attempts=row[prefix + "attempts"],
        trigger=Trigger(row[prefix + "trigger"]),
        next_attempt_at=opt_from_us(row[prefix + "next_attempt_at"]),
        lease_until=opt_from_us(row[prefix + "lease_until"]),
        leased_by=row[prefix + "leased_by"],
        created_at=from_us(row[prefix + "created_at"]),
        updated_at=from_us(row[prefix + "updated_at"]),
    )


def attempt(row: Row) -> Attempt:
    return Attempt(
        id=row["id"],
        org_id=row["org_id"],
        app_id=row["app_id"],
        msg_id=row["msg_id"],
        endpoint_id=row["endpoint_id"],
        delivery_id=row["delivery_id"],
        url=row["url"],
        status=MessageStatus(row["status"]),
        response_status=row["response_status"],
        response_body=row["response_body"],
        request_headers=json.loads(row["request_headers"]),
        failure_class=row["failure_class"],
        failure_message=row["failure_message"],
        duration_ms=row["duration_ms"],
        trigger=Trigger(row["trigger"]),
        created_at=from_us(row["created_at"]),
    )
