"""Request context: who is calling (bearer token), the storage, the clock, paging."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from homing.api.cache import EventTypeCache
from homing.api.errors import ApiError
from homing.api.limits import RateLimiter
from homing.config import Settings
from homing.core.models import DEFAULT_ORG, Application
from homing.operational import Operational
from homing.storage import Storage
from homing.storage.base import PageRequest


@dataclass(frozen=True, slots=True)
class Services:
    """What the routes need, built once per process by ``create_app``."""

    settings: Settings
    storage: Storage
    clock: Callable[[], datetime]
    operational: Operational
    limiter: RateLimiter
    event_types: EventTypeCache


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGOUT = "/api/v1/auth/logout"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller: an organisation, optionally narrowed to one application."""

    org_id: str
    app_id: str | None
    token_id: str
    read_only: bool = False


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


Svc = Annotated[Services, Depends(services)]


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Missing or malformed Authorization header (Bearer token).")
    return token.strip()


async def authenticate(token: str, svc: Services) -> Caller | None:
    """Who ``token`` is: the bootstrap token, or a live stored token; None if neither."""
    boot = svc.settings.bootstrap_token
    if boot is not None and hmac.compare_digest(token.encode(), boot.reveal().encode()):
        return Caller(org_id=DEFAULT_ORG, app_id=None, token_id="bootstrap")
    found = await svc.storage.find_token(token, svc.clock())
    if found is None:
        return None
    return Caller(found.org_id, found.app_id, found.id, found.read_only)


async def caller(request: Request, svc: Svc) -> Caller:
    """Authenticate the bearer token, or raise 401."""
    who = await authenticate(bearer(request), svc)
    if who is None:
        raise ApiError(401, "Invalid token.")
    svc.limiter.check(who.token_id)
    if who.read_only and request.method not in READ_METHODS and request.url.path != LOGOUT:
        raise ApiError(403, "This token is read-only.")
    return who


async def org_caller(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """A caller allowed on organisation-level routes (not an application-scoped token)."""
    if who.app_id is not None:
        raise ApiError(403, "This token is scoped to one application.")
    return who


OrgCaller = Annotated[Caller, Depends(org_caller)]
AnyCaller = Annotated[Caller, Depends(caller)]


async def application(app_id: str, who: AnyCaller, svc: Svc) -> Application:
    """The application named by the path (id or uid), visible to the caller, or 404."""
    app = await svc.storage.get_application(who.org_id, app_id)
    if who.app_id is not None and who.app_id != app.id:
        raise ApiError(404, "Application not found.")
    return app


App = Annotated[Application, Depends(application)]


# dependencies are ``async def`` even when they do not await: FastAPI runs plain ``def``
# dependencies in a thread pool, which costs more than the work they do
async def paging(
    limit: Annotated[int, Query(ge=1, le=250)] = 50,
    iterator: Annotated[str | None, Query(max_length=300)] = None,
    order: Literal["ascending", "descending"] | None = None,
) -> PageRequest:
    return PageRequest(limit=limit, iterator=iterator or None, descending=order == "descending")


Paging = Annotated[PageRequest, Depends(paging)]


def split_list(values: list[str] | None) -> tuple[str, ...]:
    """``?a=x&a=y`` and ``?a=x,y`` both mean (x, y)."""
    return tuple(v.strip() for raw in values or () for v in raw.split(",") if v.strip())


def utc(moment: datetime | None) -> datetime | None:
    """Naive datetimes from query strings are taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
