"""Ed25519 endpoint keys (Standard Webhooks ``v1a`` signatures).

An endpoint may sign with an ed25519 key instead of a shared HMAC secret: Homing keeps the
signing key (``whsk_`` + base64 of the 32-byte seed) and hands out only the public key
(``whpk_`` + base64 of 32 bytes), so a receiver can verify but never forge.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from homing.signing import InvalidSecretError

SIGNING_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
VERSION = "v1a"


def is_signing_key(secret: str) -> bool:
    return secret.startswith(SIGNING_PREFIX)


def generate_signing_key() -> str:
    return SIGNING_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _decode(text: str, prefix: str) -> bytes:
    try:
        raw = base64.b64decode(text.removeprefix(prefix), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecretError(f"{prefix} key is not valid base64") from exc
    if len(raw) != 32:
        raise InvalidSecretError(f"{prefix} key must hold 32 bytes")
    return raw


def _private(secret: str) -> Ed25519PrivateKey:
    """The key of a ``whsk_`` secret; raises ``InvalidSecretError``."""
    if not is_signing_key(secret):
        raise InvalidSecretError("not an ed25519 signing key (whsk_...)")
    return Ed25519PrivateKey.from_private_bytes(_decode(secret, SIGNING_PREFIX))


def check_signing_key(secret: str) -> str:
    """``secret`` if it is a usable ``whsk_`` key; raises ``InvalidSecretError``."""
    _private(secret)
    return secret


def public_key(secret: str) -> str:
    """The ``whpk_`` public key that verifies what ``secret`` signs."""
    raw = _private(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1a,<base64 ed25519 signature of "{msg_id}.{timestamp}." + body>``."""
    signature = _private(secret).sign(f"{msg_id}.{timestamp}.".encode() + body)
    return f"{VERSION},{base64.b64encode(signature).decode()}"


def verify(public: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when one ``v1a`` entry of a ``webhook-signature`` header verifies with ``public``."""
    key = Ed25519PublicKey.from_public_bytes(_decode(public, PUBLIC_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for entry in header.split():
        version, _, value = entry.partition(",")
        if version != VERSION:
            continue
        try:
            key.verify(base64.b64decode(value, validate=True), signed)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        return True
    return False
