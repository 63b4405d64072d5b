"""Endpoint secrets encrypted at rest (AES-256-GCM) under a key derived from
``HOMING_MAIN_SECRET``.

An encrypted value reads ``enc1:<base64 nonce + ciphertext>``; anything else is plaintext, so
a database written before the main secret was set keeps working and is encrypted as its
endpoints are next written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from homing.errors import StorageError

PREFIX = "enc1:"
_SALT = b"homing/endpoint-secrets/v1"
_NONCE = 12


class SecretBox:
    """Encrypts and decrypts endpoint secrets with one key; ``repr`` shows nothing of it."""

    def __init__(self, main_secret: str) -> None:
        if len(main_secret) < 16:
            raise ValueError("HOMING_MAIN_SECRET must be at least 16 characters")
        # scrypt: a passphrase-grade main secret still gives a strong key (once, at start-up)
        key = hashlib.scrypt(main_secret.encode(), salt=_SALT, n=2**14, r=8, p=1, dklen=32)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(***)"

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _SALT)
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str) -> str:
        """The plaintext of a stored value (plaintext values pass through)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            raw = base64.b64decode(stored[len(PREFIX) :], validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _SALT).decode()
        except (binascii.Error, InvalidTag, ValueError) as exc:
            raise StorageError(
                "an endpoint secret does not decrypt: is HOMING_MAIN_SECRET the one it was"
                " written with?"
            ) from exc


def reveal(stored: str, box: SecretBox | None) -> str:
    """``stored`` decrypted; without a box an encrypted value is an error, not a key."""
    if box is not None:
        return box.open(stored)
    if stored.startswith(PREFIX):
        raise StorageError("endpoint secrets are encrypted: set HOMING_MAIN_SECRET to read them")
    return stored


def conceal(plaintext: str, box: SecretBox | None) -> str:
    return box.seal(plaintext) if box is not None else plaintext
