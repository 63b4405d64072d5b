"""Request and response bodies of the Svix-compatible API (camelCase on the wire)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from homing import asymmetric
from homing.api.errors import InvalidInput
from homing.errors import NotFoundError
from homing.signing import InvalidSecretError, parse_secret
from homing.ssrf import check_endpoint_url
from homing.storage.base import Page

T = TypeVar("T")
U = TypeVar("U")

NAME_PATTERN = r"^[a-zA-Z0-9\-_.]+$"
CHANNEL_PATTERN = r"^[a-zA-Z0-9\-_.:]+$"
SECRET_PATTERN = r"^(whsec_|whsk_)?[a-zA-Z0-9+/=]{32,100}$"


def clean_text(value: str) -> str:
    """Reject control characters (but tab and newline) and unpaired surrogates."""
    for char in value:
        if char in "\t\n":
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            raise ValueError("must not contain control characters")
        if category == "Cs":
            raise ValueError("must not contain unpaired surrogates")
    return value


ID_SHAPE = re.compile(r"^[a-z]+_[0-9A-Za-z]{27}$")


def path_uid(value: str, param: str, may_look_like_id: bool = False) -> str:
    """A uid taken from the URL path (PUT creates with it): same rules as a body uid. A value
    shaped like a Homing id names an object that does not exist (here): 404, not a new object
    whose uid looks like someone else's id."""
    if not may_look_like_id and ID_SHAPE.match(value):
        raise NotFoundError("Not found.")
    if not (len(value) <= 256 and re.fullmatch(NAME_PATTERN, value)):
        raise InvalidInput(["path", param], f"must match {NAME_PATTERN} (at most 256 characters)")
    return value


MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deeply ``value`` (parsed JSON) nests objects and arrays; iterative, so any depth
    that the JSON parser accepted can be measured."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_json(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form JSON (payloads, schemas): at most ``MAX_JSON_DEPTH`` levels deep, and text
    that can be stored and sent as UTF-8 (no unpaired surrogates)."""
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"must not nest objects and arrays more than {MAX_JSON_DEPTH} deep")
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("must be JSON without NaN/Infinity or unpaired surrogates") from exc
    return value


def check_url(value: str) -> str:
    """An endpoint URL (``ssrf.check_endpoint_url``): absolute http(s), a host and a valid
    port, no whitespace, controls, backslashes, user info or unusual IPv4 spellings. The
    https-only setting is checked by the endpoint routes, which can see the settings."""
    return check_endpoint_url(value)


def check_secret(value: str) -> str:
    """An HMAC secret (``whsec_`` + base64 of 24-75 bytes) or an ed25519 signing key
    (``whsk_`` + base64 of 32 bytes) that Homing can sign with."""
    try:
        if asymmetric.is_signing_key(value):
            return asymmetric.check_signing_key(value)
        parse_secret(value)
    except InvalidSecretError as exc:
        raise ValueError(str(exc)) from None  # the message never holds the secret
    return value


Text = Annotated[str, AfterValidator(clean_text)]
SecretIn = Annotated[str, Field(pattern=SECRET_PATTERN), AfterValidator(check_secret)]
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=NAME_PATTERN)]
Channel = Annotated[str, Field(min_length=1, max_length=128, pattern=CHANNEL_PATTERN)]
Url = Annotated[str, Field(min_length=1, max_length=65536), AfterValidator(check_url)]
Metadata = dict[Annotated[str, Field(max_length=256), AfterValidator(clean_text)], Text]
ThrottleIn = Annotated[int, Field(ge=1, le=65535)]


class Schema(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", str_max_length=65536
    )


# -- applications ------------------------------------------------------------------------------


class ApplicationIn(Schema):
    name: Annotated[Text, Field(min_length=1, max_length=256)]
    uid: Name | None = None
    throttle_rate: ThrottleIn | None = None
    metadata: Metadata = Field(default_factory=dict)


class ApplicationPatch(Schema):
    name: Annotated[Text, Field(min_length=1, max_length=256)] | None = None
    uid: Name | None = None
    throttle_rate: ThrottleIn | None = None
    metadata: Metadata | None = None


class ApplicationOut(Schema):
    id: str
    uid: str | None
    name: str
    throttle_rate: int | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


# -- endpoints ---------------------------------------------------------------------------------


class EndpointUpdate(Schema):
    url: Url
    #: Homing extension: also sign with a GitHub-style ``X-Hub-Signature-256`` header
    github_signature: bool = False
    description: Annotated[Text, Field(max_length=65536)] = ""
    uid: Name | None = None
    throttle_rate: ThrottleIn | None = None
    disabled: bool = False
    event_types: Annotated[list[Name], Field(max_length=256)] | None = None
    channels: Annotated[list[Channel], Field(max_length=10)] | None = None
    metadata: Metadata = Field(default_factory=dict)


class EndpointIn(EndpointUpdate):
    #: Homing extension: the kind of key generated when ``secret`` is not given
    key_type: Literal["hmac", "ed25519"] = "hmac"
    secret: SecretIn | None = None
    headers: dict[str, str] | None = None


class EndpointPatch(Schema):
    url: Url | None = None
    github_signature: bool | None = None
    description: Annotated[Text, Field(max_length=65536)] | None = None
    uid: Name | None = None
    throttle_rate: ThrottleIn | None = None
    disabled: bool | None = None
    event_types: Annotated[list[Name], Field(max_length=256)] | None = None
    channels: Annotated[list[Channel], Field(max_length=10)] | None = None
    metadata: Metadata | None = None
    secret: SecretIn | None = None


class EndpointOut(Schema):
    id: str
    github_signature: bool = False
    uid: str | None
    url: str
    description: str
    throttle_rate: int | None
    disabled: bool
    event_types: list[str] | None
    channels: list[str] | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


class EndpointSecretOut(Schema):
    key: str


class EndpointSecretRotateIn(Schema):
    key: SecretIn | None = None
    grace_period_seconds: Annotated[int, Field(ge=0, le=604800)] | None = None


class EndpointHeadersIn(Schema):
    headers: dict[str, str]


class EndpointHeadersPatchIn(Schema):
    headers: dict[str, str | None]
    #: names to remove (what the Svix SDKs send; a null value in ``headers`` works too)
    delete_headers: list[str] | None = None


class EndpointHeadersOut(Schema):
    headers: dict[str, str]
    sensitive: list[str]


class EndpointStats(Schema):
    success: int
    pending: int
    sending: int
    fail: int
    canceled: int


class EventExampleIn(Schema):
    event_type: Name


class AppPortalAccessIn(Schema):
    application: ApplicationIn | None = None
    #: seconds the token lives (default HOMING_PORTAL_TOKEN_TTL, at most 7 days)
    expiry: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] | None = None
    feature_flags: list[Name] | None = None
    read_only: bool | None = None


class AppPortalAccessOut(Schema):
    url: str
    token: str


class RecoverIn(Schema):
    since: datetime
    until: datetime | None = None


class RecoverOut(Schema):
    id: str
    status: Literal["running", "finished", "failed"]
    task: Literal["endpoint.recover", "endpoint.replay"]
    updated_at: datetime


# -- event types -------------------------------------------------------------------------------


#: Homing extension: seconds between tries for this event type (instead of the global schedule)
RetrySchedule = Annotated[list[Annotated[int, Field(ge=0, le=7 * 24 * 3600)]], Field(max_length=30)]


class EventTypeUpdate(Schema):
    description: Annotated[Text, Field(max_length=65536)]
    archived: bool = False
    deprecated: bool = False
    feature_flag: Name | None = None
    schemas: JsonObject | None = None
    retry_schedule: RetrySchedule | None = None


class EventTypeIn(EventTypeUpdate):
    name: Name


class EventTypePatch(Schema):
    description: Annotated[Text, Field(max_length=65536)] | None = None
    archived: bool | None = None
    deprecated: bool | None = None
    feature_flag: Name | None = None
    schemas: JsonObject | None = None
    retry_schedule: RetrySchedule | None = None


class EventTypeOut(Schema):
    name: str
    description: str
    archived: bool
    deprecated: bool
    feature_flag: str | None
    schemas: dict[str, Any] | None
    retry_schedule: list[int] | None = None
    created_at: datetime
    updated_at: datetime


# -- messages and attempts ---------------------------------------------------------------------


class MessageIn(Schema):
    event_type: Name
    event_id: Name | None = None
    payload: JsonObject
    channels: Annotated[list[Channel], Field(min_length=1, max_length=10)] | None = None
    tags: Annotated[list[Channel], Field(max_length=5)] | None = None
    application: ApplicationIn | None = None
    payload_retention_period: Annotated[int, Field(ge=1, le=90)] | None = None


class MessageOut(Schema):
    id: str
    event_type: str
    event_id: str | None
    payload: dict[str, Any]
    channels: list[str] | None
    tags: list[str] | None
    timestamp: datetime


class DeliveryStatus(Schema):
    status: int
    status_text: str
    next_attempt: datetime | None


class EndpointMessageOut(MessageOut, DeliveryStatus):
    pass


class MessageEndpointOut(EndpointOut, DeliveryStatus):
    pass


class MessageAttemptOut(Schema):
    id: str
    msg_id: str
    endpoint_id: str
    url: str
    response: str
    response_status_code: int
    response_duration_ms: int
    status: int
    status_text: str
    trigger_type: int
    timestamp: datetime
    failure_class: str | None = None
    failure_message: str | None = None


class ListResponse(Schema, Generic[T]):
    """The Svix ``ListResponse`` envelope."""

    data: list[T]
    iterator: str | None
    prev_iterator: str | None
    done: bool


def page_out(page: Page[U], convert: Callable[[U], T]) -> ListResponse[T]:
    """A storage page as a ``ListResponse``, each item through ``convert``."""
    return ListResponse[T](
        data=[convert(item) for item in page.items],
        iterator=page.iterator,
        prev_iterator=page.prev_iterator,
        done=page.done,
    )


HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
