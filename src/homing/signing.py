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


class SignatureError(HomingError):
    """The webhook signature could not be verified."""


def generate_secret() -> str:
    """Return a new secret: ``whsec_`` plus the base64 of 24 random bytes (32 characters)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(_KEY_BYTES)).decode("ascii")


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


def _header(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = headers.get(name)
        if value:
            return value
    raise SignatureError(f"missing {names[0]} header")


def _parse_timestamp(raw: str, now: int, tolerance: int) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_TIMESTAMP_DIGITS):
        raise SignatureError("webhook-timestamp is not Unix seconds")
    timestamp = int(text)
    if timestamp < now - tolerance:
        raise SignatureError("webhook-timestamp is too old")
    if timestamp > now + tolerance:
        raise SignatureError("webhook-timestamp is too far in the future")
    return timestamp


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Check that ``body`` and ``headers`` were signed with ``secret`` within ``tolerance`` s.

    Header names are case-insensitive; ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature`` are read, falling back to ``svix-id``, ``svix-timestamp`` and
    ``svix-signature``. ``now`` is the current Unix time in seconds. Entries of the signature
    header that are not ``v1,...`` are ignored; one matching ``v1`` entry is enough.
    Returns ``None`` on success. Raises ``SignatureError`` for a missing or malformed header, a
    timestamp outside ``now ± tolerance`` or no matching signature, and ``InvalidSecretError``
    if ``secret`` itself is invalid (a configuration fault, not a bad request).
    """
    key = parse_secret(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = _header(lowered, _ID_HEADERS)
    timestamp = _parse_timestamp(_header(lowered, _TIMESTAMP_HEADERS), now, tolerance)
    entries = _header(lowered, _SIGNATURE_HEADERS).split()
    expected = base64.b64encode(_digest(key, msg_id, timestamp, body))
    for entry in entries:
        version, _, value = entry.partition(",")
        # Compare every candidate in constant time; an early exit only reveals a match.
        if version == SIGNATURE_VERSION and hmac.compare_digest(
            expected, value.encode("utf-8", "replace")
        ):
            return
    raise SignatureError("no matching v1 signature")


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
