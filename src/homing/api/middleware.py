"""ASGI middleware: a request body size limit (413) and ``Idempotency-Key`` replay."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homing.storage import Storage
from homing.storage.base import StoredResponse

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_NOT_STORED = frozenset({401, 403, 429})  # answers that depend on the moment, not the request
# answers that carry a secret (a rotated key, a portal token) are never stored: the key would
# sit in plaintext in the database; a repeat then simply runs again
_SECRET_ANSWERS = re.compile(r"/secret/rotate$|^/api/v1/auth/")
IDEMPOTENCY_WAIT = 10.0


async def _send_json(
    send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(code: str, detail: str) -> bytes:
    return json.dumps({"code": code, "detail": detail}).encode()


def _has_controls(text: bytes) -> bool:
    return any(b < 0x20 or b == 0x7F for b in text)


_BAD_QUERY = json.dumps(
    {
        "detail": [
            {"loc": ["query"], "msg": "must not contain control characters", "type": "value_error"}
        ]
    }
).encode()


class BodyLimit:
    """Guard the edge of the API: a path or query with control characters (no object has
    such an id; the databases cannot even compare them) is refused, and the whole request body
    is read up front, refusing more than ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.too_large = _error(
            "payload_too_large", f"Request bodies are limited to {limit} bytes."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif _has_controls(scope["path"].encode("utf-8", "replace")):
            await _send_json(send, 404, _error("not_found", "Not found."))
        elif _has_controls(unquote_to_bytes(scope["query_string"])):
            await _send_json(send, 422, _BAD_QUERY)
        elif scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
        else:
            body = await self._read(scope, receive)
            if body is None:
                await _send_json(send, 413, self.too_large)
                return
            await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is larger than the limit."""
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then defers to the real one (disconnects)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Idempotency:
    """A POST with an ``Idempotency-Key`` runs once per (token, path, key); repeats get the
    first answer again. Concurrent repeats wait for the first to finish (race-safe: the key is
    reserved by a unique insert before the request runs)."""

    def __init__(
        self,
        app: ASGIApp,
        storage: Storage,
        clock: Callable[[], datetime],
        still_valid: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.app = app
        self.storage = storage
        self.clock = clock
        self.still_valid = still_valid  # is this Authorization header's token still good?

    @staticmethod
    def _key(scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key")
        if not key:
            return None
        parts = [
            headers.get(b"authorization", b""),
            scope["path"].encode(),
            scope["query_string"],
            key,
        ]
        return hashlib.sha256(b"\n".join(parts)).hexdigest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + IDEMPOTENCY_WAIT
        delay = 0.02
        while (state := await self.storage.idempotency_begin(key, self.clock())) is False:
            if asyncio.get_running_loop().time() > deadline:
                await _send_json(
                    send,
                    409,
                    _error("conflict", "A request with this Idempotency-Key is still running."),
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        if isinstance(state, StoredResponse) and not await self._authorized(scope):
            await self.app(scope, receive, send)  # answers 401 itself; the stored answer stays
            return
        if isinstance(state, StoredResponse):
            await _send_json(
                send, state.status_code, state.body.encode(), ((b"idempotent-replayed", b"true"),)
            )
            return
        await self._run(key, scope, receive, send)

    async def _authorized(self, scope: Scope) -> bool:
        """A stored answer is only given again to a token that is still valid (not revoked
        or expired since)."""
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and bool(token) and await self.still_valid(token.strip())

    async def _run(self, key: str, scope: Scope, receive: Receive, send: Send) -> None:
        status = 500
        body: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await self.storage.idempotency_finish(key, None)
            raise
        keep = (
            status < 500 and status not in _NOT_STORED and not _SECRET_ANSWERS.search(scope["path"])
        )
        text = b"".join(body).decode("utf-8", "replace")
        await self.storage.idempotency_finish(key, StoredResponse(status, text) if keep else None)
