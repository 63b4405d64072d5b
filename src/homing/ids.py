"""Svix-style identifiers: a prefix and 27 base62 characters that sort by creation time.

The 20 bytes behind the characters are a 6-byte millisecond timestamp and 14 random bytes, so
ids made later sort after ids made earlier (to the millisecond) and never collide in practice.
"""

from __future__ import annotations

import os
import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_WIDTH = 27  # 62**27 > 2**160


def _base62(number: int) -> str:
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars)).rjust(_WIDTH, "0")


class _RandomBytes:
    """Bytes from the OS's CSPRNG, fetched a few KiB at a time (one system call per ~290
    ids instead of one per id), never handed out twice, and refetched in a forked child."""

    def __init__(self, block: int = 4096) -> None:
        self._block = block
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._at = b"", 0

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._at + size > len(self._buffer):
                self._buffer, self._at = secrets.token_bytes(self._block), 0
            start = self._at
            self._at += size
            return self._buffer[start : self._at]


_random = _RandomBytes()


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A fresh id such as ``app_0ujsswThIGTUYm2K8FjOOfXtY1K``."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    raw = ms.to_bytes(6, "big") + _random.take(14)
    return f"{prefix}_{_base62(int.from_bytes(raw, 'big'))}"


def id_floor(prefix: str, ms: int) -> str:
    """The smallest id with ``prefix`` made at millisecond ``ms`` (for time-range filters)."""
    return f"{prefix}_{_base62(int.from_bytes(ms.to_bytes(6, 'big') + bytes(14), 'big'))}"
