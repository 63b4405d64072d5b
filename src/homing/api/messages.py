"""``/api/v1/app/{app_id}/msg``: ingest (the transactional outbox) and message history."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

import re2
from fastapi import APIRouter, Depends, Query, Response
from jsonschema import ValidationError as SchemaValidationError
from referencing.exceptions import Unresolvable

from homing import payload_schema
from homing.api.applications import create_or_get
from homing.api.deps import AnyCaller, App, Paging, Svc, split_list, utc
from homing.api.errors import ApiError, InvalidInput
from homing.api.schemas import (
    ApplicationIn,
    ListResponse,
    MessageIn,
    MessageOut,
    page_out,
    path_uid,
)
from homing.core.models import Application, EventType, Message
from homing.errors import NotFoundError
from homing.ids import new_id
from homing.storage.base import MessageFilter

router = APIRouter(prefix="/api/v1/app/{app_id}/msg", tags=["Message"])


def message_out(msg: Message, with_content: bool = True) -> MessageOut:
    return MessageOut(
        id=msg.id,
        event_type=msg.event_type,
        event_id=msg.event_id,
        payload=json.loads(msg.payload) if with_content else {},
        channels=list(msg.channels) if msg.channels is not None else None,
        tags=list(msg.tags) if msg.tags is not None else None,
        timestamp=msg.created_at,
    )


def encode_payload(payload: dict[str, Any]) -> str:
    """The exact JSON text that will be stored and sent, or 422."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidInput(
            ["body", "payload"], "must be JSON without NaN/Infinity or unpaired surrogates"
        ) from exc
    return text


def schema_version_key(version: str) -> tuple[int, str]:
    """Order schema versions: numeric ones by value, after any non-numeric ones."""
    return (int(version) if version.isdigit() else -1, version)


def check_against_schema(et: EventType | None, payload: dict[str, Any]) -> None:
    """Validate ``payload`` against the newest schema version of its event type, if any."""
    if et is None or not et.schemas:
        return
    newest = max(et.schemas, key=schema_version_key)
    schema = et.schemas[newest]
    try:
        errors = sorted(
            payload_schema.validator(schema).iter_errors(payload), key=lambda e: list(e.path)
        )
    except (Unresolvable, RecursionError, re2.error) as exc:  # schemas saved before checks
        raise InvalidInput(
            ["body", "payload"],
            f"cannot be checked: schema {newest} of {et.name!r} is not usable"
            f" ({type(exc).__name__})",
        ) from exc
    if errors:
        first: SchemaValidationError = errors[0]
        where = "".join(f"/{p}" for p in first.path) or "/"
        raise InvalidInput(
            ["body", "payload", *first.path],
            f"does not match schema {newest} of {et.name!r} at {where}: {first.message}",
            "schema_violation",
        )


async def target_application(app_id: str, body: MessageIn, who: AnyCaller, svc: Svc) -> Application:
    """The path's application; created on the fly when the body carries ``application``."""
    try:
        app = await svc.storage.get_application(who.org_id, app_id)
    except NotFoundError:
        if body.application is None or who.app_id is not None:
            raise
        spec = ApplicationIn(
            **{
                **body.application.model_dump(),
                "uid": body.application.uid or path_uid(app_id, "app_id"),
            }
        )
        app, _ = await create_or_get(svc, who.org_id, spec, get_if_exists=True)
    if who.app_id is not None and who.app_id != app.id:
        raise ApiError(404, "Application not found.")
    return app


@router.post("", status_code=202, response_model=MessageOut, operation_id="v1.message.create")
async def create_message(
    body: MessageIn,
    svc: Svc,
    app: Annotated[Application, Depends(target_application)],
    with_content: bool = True,
) -> Response:
    """Store the message and its deliveries in one transaction; 202 means durable and queued."""
    payload = encode_payload(body.payload)
    check_against_schema(await svc.event_types.get(app.org_id, body.event_type), body.payload)
    now = svc.clock()
    msg = Message(
        id=new_id("msg"),
        org_id=app.org_id,
        app_id=app.id,
        event_type=body.event_type,
        event_id=body.event_id,
        payload=payload,
        channels=tuple(dict.fromkeys(body.channels)) if body.channels else None,
        tags=tuple(dict.fromkeys(body.tags)) if body.tags else None,
        created_at=now,
    )
    await svc.storage.create_message(msg)
    # the hot path: skip re-validating our own output (MessageOut still documents it)
    return Response(
        message_out(msg, with_content).model_dump_json(by_alias=True),
        status_code=202,
        media_type="application/json",
    )


@router.get("", operation_id="v1.message.list")
async def list_messages(
    app: App,
    svc: Svc,
    page: Paging,
    event_types: Annotated[list[str] | None, Query()] = None,
    channel: str | None = None,
    tag: str | None = None,
    before: datetime | None = None,
    after: datetime | None = None,
    with_content: bool = True,
) -> ListResponse[MessageOut]:
    """Messages of the application, newest first."""
    flt = MessageFilter(
        event_types=split_list(event_types),
        channel=channel,
        tag=tag,
        before=utc(before),
        after=utc(after),
    )
    found = await svc.storage.list_messages(app.id, flt, replace(page, descending=True))
    return page_out(found, lambda m: message_out(m, with_content))


@router.delete("/{msg_id}/content", status_code=204, operation_id="v1.message.expunge-content")
async def expunge_content(app: App, msg_id: str, svc: Svc) -> Response:
    """Delete the payload of a message (kept as ``{}``); its delivery history stays."""
    msg = await svc.storage.get_message(app.id, msg_id)
    await svc.storage.expunge_message(msg.id)
    return Response(status_code=204)


@router.get("/{msg_id}", operation_id="v1.message.get")
async def get_message(app: App, msg_id: str, svc: Svc, with_content: bool = True) -> MessageOut:
    return message_out(await svc.storage.get_message(app.id, msg_id), with_content)
