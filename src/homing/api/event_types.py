"""``/api/v1/event-type``: the catalogue of event types, with optional JSON Schemas."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Response
from jsonschema import SchemaError
from jsonschema.validators import validator_for

from homing import payload_schema
from homing.api.deps import OrgCaller, Paging, Svc
from homing.api.errors import InvalidInput
from homing.api.schemas import (
    EventTypeIn,
    EventTypeOut,
    EventTypePatch,
    EventTypeUpdate,
    ListResponse,
    page_out,
    path_uid,
)
from homing.core.models import EventType
from homing.errors import NotFoundError

router = APIRouter(prefix="/api/v1/event-type", tags=["Event Type"])


def check_schemas(schemas: dict[str, Any] | None) -> dict[str, Any] | None:
    """Each value must be a valid JSON Schema (keys are versions, e.g. ``"1"``)."""
    for version, schema in (schemas or {}).items():
        where: list[str | int] = ["body", "schemas", version]
        if not isinstance(schema, dict):
            raise InvalidInput(where, "must be a JSON object (a JSON Schema)")
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise InvalidInput(where, f"is not a valid JSON Schema: {exc.message}") from exc
        for ref in refs(schema):
            if not resolves(schema, ref):
                raise InvalidInput(
                    where,
                    f"$ref {ref[:200]!r} does not resolve inside the schema (Homing never"
                    " fetches schemas from elsewhere)",
                )
        check_runnable(schema, where)
    return schemas


def check_runnable(schema: dict[str, Any], where: list[str | int]) -> None:
    """Refuse what validates too slowly or never ends: regular expressions RE2 cannot run
    (backreferences, lookaround), and ``$ref`` loops (found by a trial run)."""
    unsupported = payload_schema.unsupported_patterns(schema)
    if unsupported:
        raise InvalidInput(
            where,
            f"pattern {unsupported[0][:200]!r} needs backreferences or lookaround, which"
            " Homing does not run (it matches in linear time)",
        )
    try:
        samples: tuple[Any, ...] = ({}, [], "", 0, None)
        for sample in samples:
            payload_schema.validator(schema).is_valid(sample)
    except RecursionError:
        raise InvalidInput(where, "refers to itself without end ($ref loop)") from None


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string in a schema document."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                yield item["$ref"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def resolves(root: dict[str, Any], ref: str) -> bool:
    """True for a local JSON-pointer ``$ref`` (``#``, ``#/$defs/x``) that exists in ``root``."""
    if ref == "#":
        return True
    if not ref.startswith("#/"):
        return False
    node: Any = root
    for token in ref[2:].split("/"):
        key = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False
    return True


def _tupled(schedule: list[int] | None) -> tuple[int, ...] | None:
    return tuple(schedule) if schedule is not None else None


def _listed(schedule: tuple[int, ...] | None) -> list[int] | None:
    return list(schedule) if schedule is not None else None


def event_type_out(et: EventType, with_content: bool = True) -> EventTypeOut:
    return EventTypeOut(
        name=et.name,
        description=et.description,
        archived=et.archived,
        deprecated=et.deprecated,
        feature_flag=et.feature_flag,
        schemas=et.schemas if with_content else None,
        retry_schedule=_listed(et.retry_schedule),
        created_at=et.created_at,
        updated_at=et.updated_at,
    )


@router.get("", operation_id="v1.event-type.list")
async def list_event_types(
    who: OrgCaller,
    svc: Svc,
    page: Paging,
    include_archived: bool = False,
    with_content: bool = True,
) -> ListResponse[EventTypeOut]:
    found = await svc.storage.list_event_types(who.org_id, page, include_archived)
    return page_out(found, lambda et: event_type_out(et, with_content))


@router.post("", status_code=201, operation_id="v1.event-type.create")
async def create_event_type(body: EventTypeIn, who: OrgCaller, svc: Svc) -> EventTypeOut:
    now = svc.clock()
    et = EventType(
        org_id=who.org_id,
        name=body.name,
        description=body.description,
        archived=body.archived,
        deprecated=body.deprecated,
        feature_flag=body.feature_flag,
        schemas=check_schemas(body.schemas),
        retry_schedule=_tupled(body.retry_schedule),
        created_at=now,
        updated_at=now,
    )
    created = await svc.storage.create_event_type(et)
    svc.event_types.forget(who.org_id, et.name)
    return event_type_out(created)


@router.get("/{event_type_name}", operation_id="v1.event-type.get")
async def get_event_type(event_type_name: str, who: OrgCaller, svc: Svc) -> EventTypeOut:
    return event_type_out(await svc.storage.get_event_type(who.org_id, event_type_name))


@router.put("/{event_type_name}", operation_id="v1.event-type.update")
async def update_event_type(
    event_type_name: str, body: EventTypeUpdate, who: OrgCaller, svc: Svc, response: Response
) -> EventTypeOut:
    """Replace the event type; create it (201) if there is none."""
    try:
        et = await svc.storage.get_event_type(who.org_id, event_type_name)
    except NotFoundError:
        fresh = EventTypeIn(
            name=path_uid(event_type_name, "event_type_name", may_look_like_id=True),
            **body.model_dump(),
        )
        response.status_code = 201
        return await create_event_type(fresh, who, svc)
    updated = replace(
        et,
        description=body.description,
        archived=body.archived,
        deprecated=body.deprecated,
        feature_flag=body.feature_flag,
        schemas=check_schemas(body.schemas),
        retry_schedule=_tupled(body.retry_schedule),
        updated_at=svc.clock(),
    )
    stored = await svc.storage.update_event_type(updated)
    svc.event_types.forget(who.org_id, et.name)
    return event_type_out(stored)


@router.patch("/{event_type_name}", operation_id="v1.event-type.patch")
async def patch_event_type(
    event_type_name: str, body: EventTypePatch, who: OrgCaller, svc: Svc
) -> EventTypeOut:
    et = await svc.storage.get_event_type(who.org_id, event_type_name)
    given = body.model_fields_set
    changes: dict[str, Any] = {"updated_at": svc.clock()}
    for field in ("description", "archived", "deprecated"):
        if field in given and getattr(body, field) is not None:
            changes[field] = getattr(body, field)
    if "feature_flag" in given:
        changes["feature_flag"] = body.feature_flag
    if "schemas" in given:
        changes["schemas"] = check_schemas(body.schemas)
    if "retry_schedule" in given:
        changes["retry_schedule"] = _tupled(body.retry_schedule)
    stored = await svc.storage.update_event_type(replace(et, **changes))
    svc.event_types.forget(who.org_id, et.name)
    return event_type_out(stored)


@router.delete("/{event_type_name}", status_code=204, operation_id="v1.event-type.delete")
async def delete_event_type(
    event_type_name: str, who: OrgCaller, svc: Svc, expunge: bool = False
) -> Response:
    """Archive the event type (messages of it are still accepted); ``expunge`` deletes it."""
    et = await svc.storage.get_event_type(who.org_id, event_type_name)
    if expunge:
        await svc.storage.delete_event_type(who.org_id, et.name)
    else:
        await svc.storage.update_event_type(replace(et, archived=True, updated_at=svc.clock()))
    svc.event_types.forget(who.org_id, et.name)
    return Response(status_code=204)
