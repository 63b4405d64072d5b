"""Svix-style identifiers: a prefix and 27 base62 characters that sort by creation time.

The 20 bytes behind the characters are a 6-byte millisecond timestamp and 14 random bytes, so
ids made later sort after ids made earlier (to the millisecond) and never collide in practice.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_WIDTH = 27  # 62**27 > 2**160


def _base62(number: int) -> str:
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars)).rjust(_WIDTH, "0")


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A fresh id such as ``app_0ujsswThIGTUYm2K8FjOOfXtY1K``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    raw = ms.to_bytes(6, "big") + secrets.token_bytes(14)
    return f"{prefix}_{_base62(int.from_bytes(raw, 'big'))}"


def id_floor(prefix: str, ms: int) -> str:
    """The smallest id with ``prefix`` made at millisecond ``ms`` (for time-range filters)."""
    return f"{prefix}_{_base62(int.from_bytes(ms.to_bytes(6, 'big') + bytes(14), 'big'))}"
