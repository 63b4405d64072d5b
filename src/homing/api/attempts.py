"""Attempts and per-endpoint delivery status: what happened to each message, and resend."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from homing.api.deps import App, Paging, Svc, split_list, utc
from homing.api.endpoints import endpoint_out
from homing.api.messages import message_out
from homing.api.schemas import (
    EndpointMessageOut,
    ListResponse,
    MessageAttemptOut,
    MessageEndpointOut,
    page_out,
)
from homing.core.models import STATUS_OF_STATE, STATUS_TEXT, Attempt, Delivery, DeliveryState
from homing.storage.base import AttemptFilter, MessageFilter

router = APIRouter(prefix="/api/v1/app/{app_id}", tags=["Message Attempt"])


def attempt_out(a: Attempt) -> MessageAttemptOut:
    return MessageAttemptOut(
        id=a.id,
        msg_id=a.msg_id,
        endpoint_id=a.endpoint_id,
        url=a.url,
        response=a.response_body,
        response_status_code=a.response_status,
        response_duration_ms=a.duration_ms,
        status=int(a.status),
        status_text=STATUS_TEXT[a.status],
        trigger_type=int(a.trigger),
        timestamp=a.created_at,
        failure_class=a.failure_class,
        failure_message=a.failure_message,
    )


def delivery_status(d: Delivery) -> dict[str, Any]:
    status = STATUS_OF_STATE[d.state]
    pending = d.state in (DeliveryState.PENDING, DeliveryState.SENDING)
    return {
        "status": int(status),
        "status_text": STATUS_TEXT[status],
        "next_attempt": d.next_attempt_at if pending else None,
    }


def attempt_filter(
    status: int | None,
    status_code_class: int | None,
    event_types: list[str] | None,
    channel: str | None,
    before: datetime | None,
    after: datetime | None,
    endpoint_id: str | None = None,
) -> AttemptFilter:
    return AttemptFilter(
        status=status,
        status_code_class=status_code_class,
        endpoint_id=endpoint_id,
        event_types=split_list(event_types),
        channel=channel,
        before=utc(before),
        after=utc(after),
    )


EventTypes = Annotated[list[str] | None, Query()]
StatusQ = Annotated[int | None, Query(ge=0, le=4)]
ClassQ = Annotated[int | None, Query(ge=0, le=500, multiple_of=100)]


@router.get(
    "/attempt/endpoint/{endpoint_id}",
    operation_id="v1.message-attempt.list-by-endpoint",
)
async def list_by_endpoint(
    app: App,
    endpoint_id: str,
    svc: Svc,
    page: Paging,
    status: StatusQ = None,
    status_code_class: ClassQ = None,
    event_types: EventTypes = None,
    channel: str | None = None,
    before: datetime | None = None,
    after: datetime | None = None,
) -> ListResponse[MessageAttemptOut]:
    ep = await svc.storage.get_endpoint(app.id, endpoint_id)
    flt = attempt_filter(status, status_code_class, event_types, channel, before, after)
    found = await svc.storage.list_attempts("endpoint_id", ep.id, flt, page)
    return page_out(found, attempt_out)


@router.get(
    "/attempt/msg/{msg_id}",
    operation_id="v1.message-attempt.list-by-msg",
)
async def list_by_msg(
    app: App,
    msg_id: str,
    svc: Svc,
    page: Paging,
    status: StatusQ = None,
    status_code_class: ClassQ = None,
    event_types: EventTypes = None,
    channel: str | None = None,
    endpoint_id: str | None = None,
    before: datetime | None = None,
    after: datetime | None = None,
) -> ListResponse[MessageAttemptOut]:
    msg = await svc.storage.get_message(app.id, msg_id)
    if endpoint_id is not None:
        endpoint_id = (await svc.storage.get_endpoint(app.id, endpoint_id)).id
    flt = attempt_filter(
        status, status_code_class, event_types, channel, before, after, endpoint_id
    )
    found = await svc.storage.list_attempts("msg_id", msg.id, flt, page)
    return page_out(found, attempt_out)


@router.get(
    "/msg/{msg_id}/attempt/{attempt_id}",
    operation_id="v1.message-attempt.get",
)
async def get_attempt(app: App, msg_id: str, attempt_id: str, svc: Svc) -> MessageAttemptOut:
    msg = await svc.storage.get_message(app.id, msg_id)
    return attempt_out(await svc.storage.get_attempt(msg.id, attempt_id))


@router.delete(
    "/msg/{msg_id}/attempt/{attempt_id}/content",
    status_code=204,
    operation_id="v1.message-attempt.expunge-content",
)
async def expunge_attempt_content(app: App, msg_id: str, attempt_id: str, svc: Svc) -> Response:
    """Delete the response body an attempt recorded."""
    msg = await svc.storage.get_message(app.id, msg_id)
    found = await svc.storage.get_attempt(msg.id, attempt_id)
    await svc.storage.expunge_attempt(found.id)
    return Response(status_code=204)


@router.get(
    "/msg/{msg_id}/endpoint",
    operation_id="v1.message-attempt.list-attempted-destinations",
)
async def list_destinations(
    app: App, msg_id: str, svc: Svc, page: Paging
) -> ListResponse[MessageEndpointOut]:
    """The endpoints this message goes to, each with its delivery status."""
    msg = await svc.storage.get_message(app.id, msg_id)
    found = await svc.storage.list_destinations(msg.id, page)
    return page_out(
        found,
        lambda pair: MessageEndpointOut(
            **endpoint_out(pair[0]).model_dump(), **delivery_status(pair[1])
        ),
    )


@router.get(
    "/endpoint/{endpoint_id}/msg",
    operation_id="v1.message-attempt.list-attempted-messages",
)
async def list_endpoint_messages(
    app: App,
    endpoint_id: str,
    svc: Svc,
    page: Paging,
    status: StatusQ = None,
    event_types: EventTypes = None,
    channel: str | None = None,
    tag: str | None = None,
    before: datetime | None = None,
    after: datetime | None = None,
    with_content: bool = True,
) -> ListResponse[EndpointMessageOut]:
    """Messages sent to one endpoint, newest first, each with its delivery status."""
    ep = await svc.storage.get_endpoint(app.id, endpoint_id)
    flt = MessageFilter(
        event_types=split_list(event_types),
        channel=channel,
        tag=tag,
        before=utc(before),
        after=utc(after),
    )
    found = await svc.storage.list_endpoint_messages(
        ep.id, flt, status, replace(page, descending=True)
    )
    return page_out(
        found,
        lambda pair: EndpointMessageOut(
            **message_out(pair[0], with_content).model_dump(), **delivery_status(pair[1])
        ),
    )


@router.post(
    "/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    status_code=202,
    operation_id="v1.message-attempt.resend",
)
async def resend(app: App, msg_id: str, endpoint_id: str, svc: Svc) -> JSONResponse:
    """Send the message to the endpoint again now (a manual attempt); answers 202 ``{}``."""
    msg = await svc.storage.get_message(app.id, msg_id)
    ep = await svc.storage.get_endpoint(app.id, endpoint_id)
    await svc.storage.resend(msg, ep, svc.clock())
    return JSONResponse({}, status_code=202)
