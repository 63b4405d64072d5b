"""``/api/v1/app``: applications (one per end customer)."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Response

from homing.api.deps import App, OrgCaller, Paging, Svc
from homing.api.schemas import (
    ApplicationIn,
    ApplicationOut,
    ApplicationPatch,
    ListResponse,
    page_out,
    path_uid,
)
from homing.core.models import Application
from homing.errors import ConflictError, NotFoundError
from homing.ids import new_id

router = APIRouter(prefix="/api/v1/app", tags=["Application"])


def app_out(app: Application) -> ApplicationOut:
    return ApplicationOut(
        id=app.id,
        uid=app.uid,
        name=app.name,
        throttle_rate=app.rate_limit,
        metadata=app.metadata,
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


async def create_or_get(
    svc: Svc, org_id: str, body: ApplicationIn, get_if_exists: bool
) -> tuple[Application, bool]:
    """Create the application; with ``get_if_exists`` return the one holding its uid instead."""
    now = svc.clock()
    app = Application(
        id=new_id("app"),
        org_id=org_id,
        name=body.name,
        uid=body.uid,
        rate_limit=body.throttle_rate,
        metadata=body.metadata,
        created_at=now,
        updated_at=now,
    )
    try:
        return await svc.storage.create_application(app), True
    except ConflictError:
        if get_if_exists and body.uid is not None:
            return await svc.storage.get_application(org_id, body.uid), False
        raise


@router.get("", operation_id="v1.application.list")
async def list_applications(who: OrgCaller, svc: Svc, page: Paging) -> ListResponse[ApplicationOut]:
    found = await svc.storage.list_applications(who.org_id, page)
    return page_out(found, app_out)


@router.post("", status_code=201, operation_id="v1.application.create")
async def create_application(
    body: ApplicationIn, who: OrgCaller, svc: Svc, response: Response, get_if_exists: bool = False
) -> ApplicationOut:
    app, created = await create_or_get(svc, who.org_id, body, get_if_exists)
    if not created:
        response.status_code = 200
    return app_out(app)


@router.get("/{app_id}", operation_id="v1.application.get")
async def get_application(app: App) -> ApplicationOut:
    return app_out(app)


@router.put("/{app_id}", operation_id="v1.application.update")
async def update_application(
    app_id: str, body: ApplicationIn, who: OrgCaller, svc: Svc, response: Response
) -> ApplicationOut:
    """Replace the application; create it (201, uid = the path) if there is none."""
    try:
        app = await svc.storage.get_application(who.org_id, app_id)
    except NotFoundError:
        body = body.model_copy(update={"uid": body.uid or path_uid(app_id, "app_id")})
        created, _ = await create_or_get(svc, who.org_id, body, get_if_exists=False)
        response.status_code = 201
        return app_out(created)
    updated = replace(
        app,
        name=body.name,
        uid=body.uid,
        rate_limit=body.throttle_rate,
        metadata=body.metadata,
        updated_at=svc.clock(),
    )
    return app_out(await svc.storage.update_application(updated))


@router.patch("/{app_id}", operation_id="v1.application.patch")
async def patch_application(
    app: App, body: ApplicationPatch, who: OrgCaller, svc: Svc
) -> ApplicationOut:
    given = body.model_fields_set
    updated = replace(
        app,
        name=body.name if "name" in given and body.name is not None else app.name,
        uid=body.uid if "uid" in given else app.uid,
        rate_limit=body.throttle_rate if "throttle_rate" in given else app.rate_limit,
        metadata=body.metadata if body.metadata is not None else app.metadata,
        updated_at=svc.clock(),
    )
    return app_out(await svc.storage.update_application(updated))


@router.delete("/{app_id}", status_code=204, operation_id="v1.application.delete")
async def delete_application(app: App, who: OrgCaller, svc: Svc) -> Response:
    await svc.storage.delete_application(app.id)
    return Response(status_code=204)
