"""``/api/v1/app/{app_id}/endpoint``: where a customer receives webhooks."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from homing import asymmetric
from homing.api.deps import App, Paging, Svc, utc
from homing.api.errors import ApiError, InvalidInput
from homing.api.messages import encode_payload, message_out, schema_version_key
from homing.api.schemas import (
    HEADER_NAME,
    EndpointHeadersIn,
    EndpointHeadersOut,
    EndpointHeadersPatchIn,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EndpointSecretOut,
    EndpointSecretRotateIn,
    EndpointStats,
    EndpointUpdate,
    EventExampleIn,
    ListResponse,
    MessageOut,
    RecoverIn,
    RecoverOut,
    page_out,
    path_uid,
)
from homing.core.keys import rotate
from homing.core.models import Application, DeliveryState, Endpoint, EndpointSecret, Message
from homing.errors import NotFoundError, StaleWriteError
from homing.ids import new_id
from homing.operational import endpoint_data
from homing.signing import generate_secret
from homing.ssrf import check_endpoint_url

router = APIRouter(prefix="/api/v1/app/{app_id}/endpoint", tags=["Endpoint"])

# headers a customer may not set: we own them (signing, framing) or they break HTTP
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "user-agent",
        "expect",
    }
)
RESERVED_PREFIXES = ("webhook-", "svix-", "x-hub-signature", "homing-")
SENSITIVE = re.compile(r"authorization|cookie|secret|token|api-?key|password", re.IGNORECASE)
DEFAULT_GRACE = timedelta(hours=24)


def endpoint_out(ep: Endpoint) -> EndpointOut:
    return EndpointOut(
        id=ep.id,
        uid=ep.uid,
        url=ep.url,
        description=ep.description,
        throttle_rate=ep.rate_limit,
        disabled=ep.disabled,
        event_types=list(ep.event_types) if ep.event_types is not None else None,
        channels=list(ep.channels) if ep.channels is not None else None,
        metadata=ep.metadata,
        github_signature=ep.github_signature,
        created_at=ep.created_at,
        updated_at=ep.updated_at,
    )


MAX_EDIT_TRIES = 5


async def edit(svc: Svc, ep: Endpoint, change: Callable[[Endpoint], Endpoint]) -> Endpoint:
    """Write ``change(ep)``; when someone else changed the endpoint meanwhile (a rotation,
    the worker disabling it), apply ``change`` to a fresh read instead, so no write is lost.
    Raises 409 if the endpoint keeps changing under us."""
    current = ep
    for _ in range(MAX_EDIT_TRIES):
        try:
            return await svc.storage.update_endpoint(change(current), previous=current)
        except StaleWriteError:
            current = await svc.storage.get_endpoint(ep.app_id, ep.id)
    raise ApiError(409, "The endpoint is being changed concurrently; try again.")


async def announce(svc: Svc, app: Application, event_type: str, ep: Endpoint) -> None:
    """Send the operational webhook for a change the API made to an endpoint."""
    await svc.operational.emit(event_type, app.id, endpoint_data(app, ep))


def check_headers(headers: dict[str, str | None]) -> dict[str, str | None]:
    """Validate custom header names and values; raise 422 naming the bad one."""
    for name, value in headers.items():
        lower = name.lower()
        if not HEADER_NAME.match(name):
            raise InvalidInput(["body", "headers", name[:64]], "is not a valid HTTP header name")
        if lower in RESERVED_HEADERS or lower.startswith(RESERVED_PREFIXES):
            raise InvalidInput(
                ["body", "headers", name], "is set by Homing and cannot be overridden"
            )
        if value is not None and (
            len(value) > 4096 or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
        ):
            raise InvalidInput(
                ["body", "headers", name], "value must be at most 4096 characters, no controls"
            )
    return headers


async def endpoint(app: App, endpoint_id: str, svc: Svc) -> Endpoint:
    return await svc.storage.get_endpoint(app.id, endpoint_id)


Ep = Annotated[Endpoint, Depends(endpoint)]


def _normalise(types: list[str] | None) -> tuple[str, ...] | None:
    return tuple(dict.fromkeys(types)) if types else None


def check_https_only(svc: Svc, url: str) -> None:
    """Refuse (422 on ``body.url``) a plain-http URL when the installation is https-only."""
    if svc.settings.https_only:
        try:
            check_endpoint_url(url, https_only=True)
        except ValueError as exc:
            raise InvalidInput(["body", "url"], str(exc)) from exc


def new_endpoint(svc: Svc, app: Application, body: EndpointIn, uid: str | None) -> Endpoint:
    check_https_only(svc, body.url)
    now = svc.clock()
    headers = {k: v for k, v in check_headers(dict(body.headers or {})).items() if v is not None}
    return Endpoint(
        id=new_id("ep"),
        org_id=app.org_id,
        app_id=app.id,
        url=body.url,
        uid=uid,
        description=body.description,
        rate_limit=body.throttle_rate,
        disabled=body.disabled,
        event_types=_normalise(body.event_types),
        channels=_normalise(body.channels),
        secrets=(EndpointSecret(body.secret or new_key(body.key_type)),),
        headers=headers,
        metadata=body.metadata,
        github_signature=body.github_signature,
        created_at=now,
        updated_at=now,
    )


@router.get("", operation_id="v1.endpoint.list")
async def list_endpoints(app: App, svc: Svc, page: Paging) -> ListResponse[EndpointOut]:
    found = await svc.storage.list_endpoints(app.id, page)
    return page_out(found, endpoint_out)


@router.post("", status_code=201, operation_id="v1.endpoint.create")
async def create_endpoint(app: App, body: EndpointIn, svc: Svc) -> EndpointOut:
    created = await svc.storage.create_endpoint(new_endpoint(svc, app, body, body.uid))
    await announce(svc, app, "endpoint.created", created)
    return endpoint_out(created)


@router.get("/{endpoint_id}", operation_id="v1.endpoint.get")
async def get_endpoint(ep: Ep) -> EndpointOut:
    return endpoint_out(ep)


@router.put("/{endpoint_id}", operation_id="v1.endpoint.update")
async def update_endpoint(
    app: App, endpoint_id: str, body: EndpointUpdate, svc: Svc, response: Response
) -> EndpointOut:
    """Replace the endpoint; create it (201, uid = the path) if there is none."""
    try:
        ep = await svc.storage.get_endpoint(app.id, endpoint_id)
    except NotFoundError:
        uid = body.uid or path_uid(endpoint_id, "endpoint_id")
        fresh = new_endpoint(svc, app, EndpointIn(**body.model_dump()), uid)
        response.status_code = 201
        await svc.storage.create_endpoint(fresh)
        await announce(svc, app, "endpoint.created", fresh)
        return endpoint_out(fresh)
    check_https_only(svc, body.url)
    updated = await edit(
        svc,
        ep,
        lambda current: replace(
            current,
            url=body.url,
            description=body.description,
            uid=body.uid,
            rate_limit=body.throttle_rate,
            disabled=body.disabled,
            event_types=_normalise(body.event_types),
            channels=_normalise(body.channels),
            metadata=body.metadata,
            github_signature=body.github_signature,
            updated_at=svc.clock(),
        ),
    )
    await announce(svc, app, "endpoint.updated", updated)
    return endpoint_out(updated)


@router.patch("/{endpoint_id}", operation_id="v1.endpoint.patch")
async def patch_endpoint(app: App, ep: Ep, body: EndpointPatch, svc: Svc) -> EndpointOut:
    given = body.model_fields_set
    if body.url is not None:
        check_https_only(svc, body.url)
    changes: dict[str, object] = {"updated_at": svc.clock()}
    for field, attr in (
        ("url", "url"),
        ("description", "description"),
        ("disabled", "disabled"),
        ("metadata", "metadata"),
        ("github_signature", "github_signature"),
    ):
        if field in given and getattr(body, field) is not None:
            changes[attr] = getattr(body, field)
    if "uid" in given:
        changes["uid"] = body.uid
    if "throttle_rate" in given:
        changes["rate_limit"] = body.throttle_rate
    if "event_types" in given:
        changes["event_types"] = _normalise(body.event_types)
    if "channels" in given:
        changes["channels"] = _normalise(body.channels)
    secret = body.secret

    def change(current: Endpoint) -> Endpoint:
        if secret is not None:
            changes["secrets"] = rotate(current.secrets, secret, svc.clock(), DEFAULT_GRACE)
        return replace(current, **changes)  # type: ignore[arg-type]

    updated = await edit(svc, ep, change)
    await announce(svc, app, "endpoint.updated", updated)
    return endpoint_out(updated)


@router.delete("/{endpoint_id}", status_code=204, operation_id="v1.endpoint.delete")
async def delete_endpoint(app: App, ep: Ep, svc: Svc) -> Response:
    await svc.storage.delete_endpoint(ep.id)
    await announce(svc, app, "endpoint.deleted", ep)
    return Response(status_code=204)


@router.get("/{endpoint_id}/secret", operation_id="v1.endpoint.get-secret")
async def get_secret(ep: Ep) -> EndpointSecretOut:
    """The current key: the shared secret, or for an ed25519 endpoint its public key."""
    return EndpointSecretOut(key=shown_key(ep.secrets[0].key))


def new_key(key_type: str) -> str:
    return asymmetric.generate_signing_key() if key_type == "ed25519" else generate_secret()


def shown_key(key: str) -> str:
    """What a customer may see of a key: an ed25519 signing key is never shown, only its
    public half."""
    return asymmetric.public_key(key) if asymmetric.is_signing_key(key) else key


@router.post(
    "/{endpoint_id}/secret/rotate",
    operation_id="v1.endpoint.rotate-secret",
)
async def rotate_secret(
    ep: Ep, svc: Svc, body: EndpointSecretRotateIn | None = None
) -> EndpointSecretOut:
    """Make a new current key (given or generated); the old one signs on for the grace period."""
    body = body or EndpointSecretRotateIn()
    current_type = "ed25519" if asymmetric.is_signing_key(ep.secrets[0].key) else "hmac"
    key = body.key or new_key(current_type)
    grace = (
        timedelta(seconds=body.grace_period_seconds)
        if body.grace_period_seconds is not None
        else DEFAULT_GRACE
    )
    now = svc.clock()
    await edit(
        svc,
        ep,
        lambda current: replace(
            current, secrets=rotate(current.secrets, key, now, grace), updated_at=now
        ),
    )
    return EndpointSecretOut(key=shown_key(key))


def headers_out(ep: Endpoint) -> EndpointHeadersOut:
    sensitive = sorted(n for n in ep.headers if SENSITIVE.search(n))
    shown = {k: v for k, v in ep.headers.items() if k not in sensitive}
    return EndpointHeadersOut(headers=shown, sensitive=sensitive)


@router.get("/{endpoint_id}/headers", operation_id="v1.endpoint.get-headers")
async def get_headers(ep: Ep) -> EndpointHeadersOut:
    return headers_out(ep)


@router.put("/{endpoint_id}/headers", status_code=204, operation_id="v1.endpoint.update-headers")
async def put_headers(ep: Ep, body: EndpointHeadersIn, svc: Svc) -> Response:
    headers = {k: v for k, v in check_headers(dict(body.headers)).items() if v is not None}
    await edit(svc, ep, lambda current: replace(current, headers=headers, updated_at=svc.clock()))
    return Response(status_code=204)


@router.patch("/{endpoint_id}/headers", status_code=204, operation_id="v1.endpoint.patch-headers")
async def patch_headers(ep: Ep, body: EndpointHeadersPatchIn, svc: Svc) -> Response:
    """Merge headers; names in ``deleteHeaders`` or with a null value are removed."""
    removed = {n.lower() for n in body.delete_headers or ()}
    removed |= {n.lower() for n, v in body.headers.items() if v is None}
    added = {n: v for n, v in check_headers(body.headers).items() if v is not None}
    removed |= {n.lower() for n in added}  # a new spelling replaces the old one

    def change(current: Endpoint) -> Endpoint:
        kept = {k: v for k, v in current.headers.items() if k.lower() not in removed}
        return replace(current, headers={**kept, **added}, updated_at=svc.clock())

    await edit(svc, ep, change)
    return Response(status_code=204)


@router.get(
    "/{endpoint_id}/stats", response_model=EndpointStats, operation_id="v1.endpoint.get-stats"
)
async def get_stats(
    ep: Ep, svc: Svc, since: datetime | None = None, until: datetime | None = None
) -> EndpointStats:
    counts = await svc.storage.endpoint_stats(ep.id, utc(since), utc(until))
    return EndpointStats(
        success=counts[DeliveryState.SUCCESS],
        pending=counts[DeliveryState.PENDING],
        sending=counts[DeliveryState.SENDING],
        fail=counts[DeliveryState.FAILED],
        canceled=counts[DeliveryState.CANCELED],
    )


@router.post("/{endpoint_id}/recover", status_code=202, operation_id="v1.endpoint.recover")
async def recover(ep: Ep, body: RecoverIn, svc: Svc) -> RecoverOut:
    """Queue again every failed delivery of this endpoint made since ``since`` (until ``until``)."""
    now = svc.clock()
    since = utc(body.since)
    assert since is not None
    await svc.storage.recover(ep.id, since, utc(body.until), now)
    return RecoverOut(
        id=new_id("qtask"), status="finished", task="endpoint.recover", updated_at=now
    )


@router.post("/{endpoint_id}/send-example", operation_id="v1.endpoint.send-example")
async def send_example(ep: Ep, body: EventExampleIn, svc: Svc) -> MessageOut:
    """Send one example message of ``eventType`` to this endpoint only: the first example of
    the event type's newest schema when it has one, else a small placeholder payload."""
    payload = await example_payload(svc, ep.org_id, body.event_type)
    now = svc.clock()
    msg = Message(
        id=new_id("msg"),
        org_id=ep.org_id,
        app_id=ep.app_id,
        event_type=body.event_type,
        event_id=None,
        payload=encode_payload(payload),
        channels=None,
        tags=None,
        created_at=now,
    )
    await svc.storage.create_message(msg, only_endpoint=ep.id)
    return message_out(msg)


async def example_payload(svc: Svc, org_id: str, event_type: str) -> dict[str, Any]:
    try:
        et = await svc.storage.get_event_type(org_id, event_type)
    except NotFoundError:
        et = None
    if et is not None and et.schemas:
        newest = et.schemas[max(et.schemas, key=schema_version_key)]
        examples = newest.get("examples") if isinstance(newest, dict) else None
        if isinstance(examples, list) and examples and isinstance(examples[0], dict):
            return dict(examples[0])
    return {"example": True, "eventType": event_type}


@router.post(
    "/{endpoint_id}/replay-missing", status_code=202, operation_id="v1.endpoint.replay-missing"
)
async def replay_missing(ep: Ep, body: RecoverIn, svc: Svc) -> RecoverOut:
    """Send the endpoint every message since ``since`` (until ``until``) that it should have
    received but never did (it was added later, or was disabled at the time)."""
    now = svc.clock()
    since = utc(body.since)
    assert since is not None
    await svc.storage.replay_missing(ep, since, utc(body.until), now)
    return RecoverOut(id=new_id("qtask"), status="finished", task="endpoint.replay", updated_at=now)
