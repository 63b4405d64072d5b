"""The domain records, as the storage returns them. Times are aware UTC datetimes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: the organisation of ``HOMING_BOOTSTRAP_TOKEN`` and of ``homing token create`` by default
DEFAULT_ORG = "org_default"


class DeliveryState(enum.StrEnum):
    """Where one message stands with one endpoint."""

    PENDING = "pending"
    SENDING = "sending"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"


class Trigger(enum.IntEnum):
    """Why an attempt was made (Svix ``MessageAttemptTriggerType``)."""

    SCHEDULED = 0
    MANUAL = 1


class MessageStatus(enum.IntEnum):
    """Svix's public status numbers."""

    SUCCESS = 0
    PENDING = 1
    FAIL = 2
    SENDING = 3
    CANCELED = 4


STATUS_OF_STATE: dict[DeliveryState, MessageStatus] = {
    DeliveryState.PENDING: MessageStatus.PENDING,
    DeliveryState.SENDING: MessageStatus.SENDING,
    DeliveryState.SUCCESS: MessageStatus.SUCCESS,
    DeliveryState.FAILED: MessageStatus.FAIL,
    DeliveryState.CANCELED: MessageStatus.CANCELED,
}

STATUS_TEXT: dict[MessageStatus, str] = {
    MessageStatus.SUCCESS: "success",
    MessageStatus.PENDING: "pending",
    MessageStatus.FAIL: "fail",
    MessageStatus.SENDING: "sending",
    MessageStatus.CANCELED: "canceled",
}


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    org_id: str
    name: str
    uid: str | None
    rate_limit: int | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EndpointSecret:
    """One signing key; ``expires_at`` is set on keys kept alive after a rotation."""

    key: str = field(repr=False)  # never in logs or tracebacks
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    org_id: str
    app_id: str
    url: str
    uid: str | None
    description: str
    rate_limit: int | None
    disabled: bool
    event_types: tuple[str, ...] | None
    channels: tuple[str, ...] | None
    secrets: tuple[EndpointSecret, ...] = field(repr=False)
    headers: dict[str, str] = field(repr=False)  # may carry credentials
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime
    #: first exhausted delivery since the last success (endpoint health); the worker owns it
    failing_since: datetime | None = None
    #: also sign with a GitHub-style ``X-Hub-Signature-256`` header
    github_signature: bool = False


@dataclass(frozen=True, slots=True)
class EventType:
    org_id: str
    name: str
    description: str
    archived: bool
    deprecated: bool
    feature_flag: str | None
    schemas: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    #: seconds between tries for messages of this type, overriding the global schedule
    retry_schedule: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    org_id: str
    app_id: str
    event_type: str
    event_id: str | None
    payload: str  # the exact JSON text that is sent
    channels: tuple[str, ...] | None
    tags: tuple[str, ...] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """The unit of work: one message to one endpoint."""

    id: str
    org_id: str
    app_id: str
    msg_id: str
    endpoint_id: str
    state: DeliveryState
    attempts: int
    trigger: Trigger
    next_attempt_at: datetime | None
    lease_until: datetime | None
    leased_by: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP try. ``response_status`` is 0 when no response arrived."""

    id: str
    org_id: str
    app_id: str
    msg_id: str
    endpoint_id: str
    delivery_id: str
    url: str
    status: MessageStatus
    response_status: int
    response_body: str
    request_headers: dict[str, str]
    failure_class: str | None
    failure_message: str | None
    duration_ms: int
    trigger: Trigger
    created_at: datetime
