"""``/api/v1/auth``: application-scoped portal tokens, and logout (token revocation)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter, Response

from homing.api.applications import create_or_get
from homing.api.deps import AnyCaller, OrgCaller, Svc
from homing.api.schemas import ApplicationIn, AppPortalAccessIn, AppPortalAccessOut, path_uid
from homing.errors import NotFoundError

router = APIRouter(prefix="/api/v1/auth", tags=["Authentication"])

PORTAL_TOKEN_PREFIX = "hpt_"


@router.post("/app-portal-access/{app_id}", operation_id="v1.authentication.app-portal-access")
async def app_portal_access(
    app_id: str, who: OrgCaller, svc: Svc, body: AppPortalAccessIn | None = None
) -> AppPortalAccessOut:
    """A short-lived token that can see and manage one application only, and a URL of the
    customer portal that uses it. The token travels in the URL fragment, which browsers never
    send to a server, so it stays out of access logs."""
    body = body or AppPortalAccessIn()
    try:
        app = await svc.storage.get_application(who.org_id, app_id)
    except NotFoundError:
        if body.application is None:
            raise
        spec = ApplicationIn(
            **{
                **body.application.model_dump(),
                "uid": body.application.uid or path_uid(app_id, "app_id"),
            }
        )
        app, _ = await create_or_get(svc, who.org_id, spec, get_if_exists=True)
    now = svc.clock()
    ttl = body.expiry if body.expiry is not None else svc.settings.portal_token_ttl
    token = PORTAL_TOKEN_PREFIX + secrets.token_urlsafe(32)
    await svc.storage.create_token(
        token, who.org_id, app.id, now, now + timedelta(seconds=ttl), read_only=bool(body.read_only)
    )
    return AppPortalAccessOut(
        url=f"{svc.settings.base_url}/portal#app={app.id}&token={token}", token=token
    )


@router.post("/logout", status_code=204, operation_id="v1.authentication.logout")
async def logout(who: AnyCaller, svc: Svc) -> Response:
    """Revoke the token this request was made with (the bootstrap token cannot be revoked:
    unset HOMING_BOOTSTRAP_TOKEN instead)."""
    if who.token_id != "bootstrap":
        await svc.storage.revoke_token(who.token_id)
    return Response(status_code=204)
