"""``create_app``: the FastAPI application with every router, error handler and middleware."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI, Response

from homing import __version__
from homing.api import applications, attempts, auth, endpoints, errors, event_types, messages
from homing.api.cache import EventTypeCache
from homing.api.deps import Services, authenticate
from homing.api.limits import RateLimiter
from homing.api.middleware import BodyLimit, Idempotency
from homing.config import Settings
from homing.operational import Operational
from homing.storage import Storage
from homing.ui import routes as ui_routes


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings, storage: Storage, clock: Callable[[], datetime] = utc_now
) -> FastAPI:
    """The ASGI app. ``storage`` is opened (and migrated) by the caller, who also closes it."""
    app = FastAPI(
        title="Homing",
        version=__version__,
        description="Self-hosted webhook delivery with a Svix-compatible API.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = Services(
        settings=settings,
        storage=storage,
        clock=clock,
        operational=Operational(settings.operational_app, storage, clock),
        limiter=RateLimiter(settings.api_rate_limit),
        event_types=EventTypeCache(storage),
    )
    errors.install(app)
    # messages first: ingest is the hot path, and routes are matched in order
    for module in (messages, applications, endpoints, event_types, attempts, auth):
        app.include_router(module.router)

    @app.get("/api/v1/health", status_code=204, tags=["Health"], operation_id="v1.health.get")
    async def health() -> Response:
        """204 when the database answers."""
        await storage.ping()
        return Response(status_code=204)

    @app.get("/api/v1/health/ping", status_code=204, tags=["Health"])
    async def ping() -> Response:
        return Response(status_code=204)

    app.include_router(ui_routes.router)

    services: Services = app.state.services

    async def still_valid(token: str) -> bool:
        return await authenticate(token, services) is not None

    app.add_middleware(Idempotency, storage=storage, clock=clock, still_valid=still_valid)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
