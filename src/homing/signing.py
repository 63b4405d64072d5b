"""Webhook signing in the Standard Webhooks / Svix format (standard library only).

A secret is ``whsec_`` followed by the base64 of 24 to 75 random bytes; the decoded bytes are
the HMAC key. Each request carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``, a space-separated list of ``v1,<base64 HMAC-SHA256>`` entries computed
over ``f"{id}.{timestamp}.".encode() + body``. One entry per active secret lets receivers rotate
keys without dropping messages.

Sign the exact bytes that go on the wire; never re-serialise the body between signing and
sending.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets as _secrets
from collections.abc import Mapping, Sequence

from homing.errors import HomingError

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300
REDACTED = "***"

_KEY_BYTES = 24
_MIN_KEY_BYTES = 24
_MAX_KEY_BYTES = 75
# Svix's own pattern for endpoint secrets.
_SECRET_RE = re.compile(r"(whsec_)?[a-zA-Z0-9+/=]{32,100}")
# Ten digits cover Unix seconds until the year 2286; more is never a real timestamp.
_MAX_TIMESTAMP_DIGITS = 10

# Header names are compared lower-case; ``webhook-*`` wins over the older ``svix-*`` spelling.
_ID_HEADERS = ("webhook-id", "svix-id")
_TIMESTAMP_HEADERS = ("webhook-timestamp", "svix-timestamp")
_SIGNATURE_HEADERS = ("webhook-signature", "svix-signature")

_REDACTED_NAMES = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-hub-signature-256", "x-hub-signature"}
)
_REDACTED_PARTS = ("signature", "secret", "token", "password", "api-key", "apikey")


class InvalidSecretError(HomingError):
    """The webhook secret is not ``whsec_`` plus base64 of 24 to 75 bytes."""


def generate_secret() -> str:
    """Return a new secret: ``whsec_`` plus the base64 of 24 random bytes (32 characters)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(_KEY_BYTES)).decode("ascii")


@functools.lru_cache(maxsize=4096)  # every delivery signs: parse each secret once
def parse_secret(secret: str) -> bytes:
    """Return the HMAC key bytes of ``secret`` (``whsec_<base64>`` or bare base64).

    The base64 must be canonical (standard alphabet, correct padding) and decode to 24 to 75
    bytes. Raises ``InvalidSecretError`` otherwise.
    """
    if not isinstance(secret, str) or _SECRET_RE.fullmatch(secret) is None:
        raise InvalidSecretError()
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecretError("webhook secret is not valid base64") from exc
    # b64decode tolerates surplus padding and stray low bits; one secret must have one spelling.
    if base64.b64encode(key).decode("ascii") != encoded:
        raise InvalidSecretError("webhook secret is not canonical base64")
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise InvalidSecretError(
            f"webhook secret must hold {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def is_valid_secret(secret: str) -> bool:
    """Return whether ``parse_secret(secret)`` would succeed. Never raises."""
    try:
        parse_secret(secret)
    except InvalidSecretError:
        return False
    return True


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``v1,<base64 HMAC-SHA256>`` of ``f"{msg_id}.{timestamp}.".encode() + body``.

    ``timestamp`` is Unix seconds, exactly as sent in ``webhook-timestamp``. Raises
    ``InvalidSecretError`` if ``secret`` is not a valid secret.
    """
    digest = _digest(parse_secret(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value: one entry per secret, in order: ``v1,...`` for
    HMAC secrets, ``v1a,...`` for ed25519 signing keys (``whsk_``).

    Raises ``InvalidSecretError`` if ``secrets`` is empty or any secret is invalid.
    """
    if not secrets:
        raise InvalidSecretError("at least one webhook secret is needed to sign")
    return " ".join(_sign_any(secret, msg_id, timestamp, body) for secret in secrets)


def _sign_any(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    if secret.startswith("whsk_"):
        from homing import asymmetric  # late: only ed25519 endpoints need the crypto library

        return asymmetric.sign(secret, msg_id, timestamp, body)
    return sign(secret, msg_id, timestamp, body)


def github_signature(secret: str, body: bytes) -> str:
    """Return ``sha256=<hex HMAC-SHA256(key, body)>`` for the ``X-Hub-Signature-256`` header.

    The key is the *decoded* secret bytes (``parse_secret(secret)``), not the text of the
    secret as GitHub uses it, so receivers must decode the secret the same way. Raises
    ``InvalidSecretError`` if ``secret`` is not a valid secret.
    """
    return "sha256=" + hmac.new(parse_secret(secret), body, hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=4096)  # header names repeat: the same few on every request
def _is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return lowered in _REDACTED_NAMES or any(part in lowered for part in _REDACTED_PARTS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``headers`` fit for storage, with credentials replaced by ``***``.

    Redacted (names compared case-insensitively): ``authorization``, ``proxy-authorization``,
    ``cookie``, ``x-hub-signature(-256)`` and any name containing ``signature``, ``secret``,
    ``token``, ``password``, ``api-key`` or ``apikey`` (so ``webhook-signature`` too). Names
    and order are kept. Never raises.
    """
    return {name: REDACTED if _is_sensitive(name) else value for name, value in headers.items()}
