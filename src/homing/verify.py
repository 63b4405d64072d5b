"""Verify webhooks sent by Homing (standard library only; this file works copied on its own).

Homing signs every request the Standard Webhooks way (the same as Svix): the headers
``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``, a
space-separated list of ``v1,<base64 HMAC-SHA256>`` entries over
``f"{id}.{timestamp}.".encode() + body``, keyed with the base64-decoded endpoint secret
(``whsec_...``). During a secret rotation there is one entry per live secret; one match is enough.

Usage with Flask (any framework works the same way)::

    from homing.verify import Webhook, WebhookVerificationError

    webhook = Webhook(os.environ["HOMING_WEBHOOK_SECRET"])  # "whsec_..."

    @app.post("/webhooks")
    def receive():
        try:
            event = webhook.verify(request.get_data(), request.headers)
        except WebhookVerificationError:
            return "", 400
        queue_for_processing(event)  # answer 2xx fast, do the work later
        return "", 204

Pass the raw body bytes exactly as received. Parsed and re-serialised JSON is not the same
bytes, so its signature never matches.

For endpoints that opted in to the GitHub-style header, ``verify_github(secret, body,
request.headers["X-Hub-Signature-256"])`` checks ``sha256=<hex>``. That scheme carries no
timestamp, so it offers no replay protection.

Every malformed or wrong input raises ``WebhookVerificationError`` and nothing else; its message
says what was wrong and never contains the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_TOLERANCE", "Webhook", "WebhookVerificationError", "verify_github"]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
MIN_KEY_BYTES = 24

_SIGNATURE_VERSION = "v1"
_GITHUB_ALGORITHM = "sha256"
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# Ten digits cover Unix seconds until the year 2286; longer text is never a real timestamp and
# would only cost time to convert.
_MAX_TIMESTAMP_DIGITS = 10

# Header names are compared lower-case; ``webhook-*`` wins over the older ``svix-*`` spelling.
_ID_HEADERS = ("webhook-id", "svix-id")
_TIMESTAMP_HEADERS = ("webhook-timestamp", "svix-timestamp")
_SIGNATURE_HEADERS = ("webhook-signature", "svix-signature")


class WebhookVerificationError(Exception):
    """The webhook could not be verified."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


def _parse_secret(secret: str | bytes) -> bytes:
    """Return the HMAC key for ``secret``.

    A ``str`` is ``whsec_<base64>`` or bare base64 (padding optional, surrounding whitespace
    ignored); ``bytes`` are the raw key itself, as in the Standard Webhooks libraries. The key
    must hold at least 24 bytes. Raises ``WebhookVerificationError`` otherwise; the message
    never repeats the secret.
    """
    if isinstance(secret, bytes):
        if secret.startswith(SECRET_PREFIX.encode()):
            raise WebhookVerificationError(
                "webhook secret bytes start with 'whsec_': pass the secret text as str"
            )
        key = secret
    elif isinstance(secret, str):
        key = _decode_secret_text(secret)
    else:
        raise WebhookVerificationError("webhook secret must be str or bytes")
    if len(key) < MIN_KEY_BYTES:
        raise WebhookVerificationError(
            f"webhook secret key must hold at least {MIN_KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def _decode_secret_text(secret: str) -> bytes:
    encoded = secret.strip()
    if encoded.startswith(SECRET_PREFIX):
        encoded = encoded[len(SECRET_PREFIX) :]
    if not encoded or not set(encoded) <= _BASE64_ALPHABET:
        raise WebhookVerificationError("webhook secret is not 'whsec_' plus base64")
    # Accept unpadded base64 like the Standard Webhooks libraries do.
    encoded += "=" * (-len(encoded) % 4)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # ``from None``: the decoder's own message is not needed and must not travel with it.
        raise WebhookVerificationError("webhook secret is not valid base64") from None


def _body_bytes(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError:
            raise WebhookVerificationError("webhook body is not encodable as UTF-8") from None
    raise WebhookVerificationError(
        f"webhook body must be the raw request bytes (or str), not {type(body).__name__}"
    )


def _lowered_headers(headers: object) -> dict[str, str]:
    items = getattr(headers, "items", None)
    if not callable(items):
        raise WebhookVerificationError("webhook headers must be a mapping of names to values")
    lowered: dict[str, str] = {}
    for name, value in items():
        if isinstance(name, str) and isinstance(value, str):
            lowered[name.lower()] = value
    return lowered


def _header(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            return value
    raise WebhookVerificationError(f"missing or empty {names[0]} header")


def _check_window(tolerance: object, now: object) -> tuple[int, int]:
    if not isinstance(tolerance, int) or isinstance(tolerance, bool) or tolerance < 0:
        raise WebhookVerificationError("tolerance must be a non-negative number of seconds")
    if now is None:
        return tolerance, int(time.time())
    if not isinstance(now, int) or isinstance(now, bool):
        raise WebhookVerificationError("now must be Unix seconds (int) or None")
    return tolerance, now


def _parse_timestamp(text: str, now: int, tolerance: int) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_TIMESTAMP_DIGITS):
        raise WebhookVerificationError("webhook-timestamp is not Unix seconds")
    timestamp = int(text)
    if timestamp < now - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > now + tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")
    return timestamp


def _decode_signature(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        return None


def _matches(expected: bytes, entries: list[str]) -> bool:
    """Return whether any ``v1`` entry equals ``expected``; other versions are skipped."""
    found = False
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not comma or version != _SIGNATURE_VERSION:
            continue
        candidate = _decode_signature(value)
        # Keep comparing after a match: the loop's length must not depend on which key matched.
        if candidate is not None and hmac.compare_digest(expected, candidate):
            found = True
    return found


class Webhook:
    """Verifier for Standard Webhooks requests signed with one endpoint secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | bytes) -> None:
        """Keep the key of ``secret``: ``whsec_<base64>``, bare base64, or raw key ``bytes``.

        Raises ``WebhookVerificationError`` if the secret is not base64 or its key is shorter
        than 24 bytes (Homing's keys hold 24 to 75).
        """
        self._key = _parse_secret(secret)

    def __repr__(self) -> str:
        return "Webhook(secret='***')"

    def sign(self, msg_id: str, timestamp: int, body: bytes | str) -> str:
        """Return ``v1,<base64 HMAC-SHA256>`` of ``f"{msg_id}.{timestamp}.".encode() + body``.

        Meant for tests and tools that need a valid ``webhook-signature``. ``timestamp`` is
        Unix seconds. Raises ``WebhookVerificationError`` for a wrong type of argument.
        """
        if not isinstance(msg_id, str):
            raise WebhookVerificationError("msg_id must be str")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
            raise WebhookVerificationError("timestamp must be non-negative Unix seconds (int)")
        digest = self._digest(msg_id, timestamp, _body_bytes(body))
        return f"{_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"

    def verify(
        self,
        body: bytes | str,
        headers: Mapping[str, str],
        tolerance: int = DEFAULT_TOLERANCE,
        now: int | None = None,
    ) -> Any:
        """Check ``body`` and ``headers`` and return the body parsed as JSON.

        ``body`` is the raw request body (``str`` is encoded as UTF-8). Header names are
        case-insensitive; ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` are
        read, falling back to ``svix-id``, ``svix-timestamp`` and ``svix-signature``. The
        timestamp must be ASCII digits within ``now ± tolerance`` seconds (``now`` defaults to
        the clock). Signature entries that are not ``v1,...`` are ignored; one matching ``v1``
        entry is enough. Raises ``WebhookVerificationError`` for any missing, malformed or
        wrong input, and if the verified body is not JSON.
        """
        raw = self.verify_raw(body, headers, tolerance, now)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise WebhookVerificationError("webhook body is not valid JSON") from None

    def verify_raw(
        self,
        body: bytes | str,
        headers: Mapping[str, str],
        tolerance: int = DEFAULT_TOLERANCE,
        now: int | None = None,
    ) -> bytes:
        """Check like ``verify`` but return the verified body bytes without parsing them.

        Raises ``WebhookVerificationError`` exactly as ``verify`` does, except for non-JSON.
        """
        data = _body_bytes(body)
        tolerance, current = _check_window(tolerance, now)
        lowered = _lowered_headers(headers)
        msg_id = _header(lowered, _ID_HEADERS)
        timestamp = _parse_timestamp(_header(lowered, _TIMESTAMP_HEADERS), current, tolerance)
        entries = _header(lowered, _SIGNATURE_HEADERS).split()
        if not any(entry.startswith(_SIGNATURE_VERSION + ",") for entry in entries):
            raise WebhookVerificationError("webhook-signature has no v1 entry")
        if not _matches(self._digest(msg_id, timestamp, data), entries):
            raise WebhookVerificationError("no matching v1 signature")
        return data

    def _digest(self, msg_id: str, timestamp: int, body: bytes) -> bytes:
        # surrogateescape: servers decode odd header bytes that way; never a UnicodeError here
        signed = f"{msg_id}.{timestamp}.".encode("utf-8", "surrogateescape") + body
        return hmac.new(self._key, signed, hashlib.sha256).digest()


def verify_github(secret: str | bytes, body: bytes | str, signature_header: str) -> None:
    """Check a GitHub-style ``X-Hub-Signature-256: sha256=<hex>`` header against ``body``.

    The HMAC-SHA256 key is the *decoded* secret, the same key as for ``Webhook`` and the same
    as Homing's sender uses (``homing.signing.github_signature`` keys with the base64-decoded
    bytes of ``whsec_...``). This differs from GitHub itself, which keys with the secret text:
    a GitHub verifier that is handed the ``whsec_...`` text will not match. ``secret`` takes
    the same forms as ``Webhook(secret)``; ``body`` is the raw request body. Returns ``None``
    on success. Raises ``WebhookVerificationError`` for a bad secret, a body that is not bytes
    or str, a header that is not ``sha256=`` plus 64 hex digits, or a signature that does not
    match. There is no timestamp, hence no replay protection.
    """
    key = _parse_secret(secret)
    data = _body_bytes(body)
    if not isinstance(signature_header, str):
        raise WebhookVerificationError("X-Hub-Signature-256 header must be str")
    algorithm, equals, hex_digest = signature_header.strip().partition("=")
    if not equals or algorithm.lower() != _GITHUB_ALGORITHM:
        raise WebhookVerificationError("X-Hub-Signature-256 header is not 'sha256=<hex>'")
    if len(hex_digest) != 2 * hashlib.sha256().digest_size or not set(hex_digest) <= _HEX_DIGITS:
        raise WebhookVerificationError("X-Hub-Signature-256 digest is not 64 hex digits")
    expected = hmac.new(key, data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes.fromhex(hex_digest)):
        raise WebhookVerificationError("X-Hub-Signature-256 does not match")
