"""A scripted HTTP receiver on 127.0.0.1 for delivery tests: it records every request and
answers from a per-path script (the last scripted reply of a path repeats; unscripted paths
answer 200)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class Receiver:
    """An HTTP server that records every request and answers from a per-path script.

    The last scripted reply of a path repeats; an unscripted path answers 200.
    """

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    script: dict[str, list[Reply]] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reply(self, path: str, *replies: Reply) -> None:
        self.script[path] = list(replies)

    def at(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        queue = self.script.get(request.path) or [status(200)]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return await answer(request)


def status(code: int, headers: dict[str, str] | None = None, text: str = "") -> Reply:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers=headers, text=text)

    return answer


def after(seconds: float, reply: Reply) -> Reply:
    async def answer(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await reply(request)

    return answer


def hang(receiver: Receiver) -> Reply:
    async def answer(request: web.Request) -> web.StreamResponse:
        await receiver.release.wait()  # set at teardown so the server shuts down promptly
        return web.Response(status=200)

    return answer


def stream(receiver: Receiver, total: int) -> Reply:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(total // len(chunk)):
                await response.write(chunk)
        except ConnectionError:  # the sender hung up after its 64 KiB, as it should
            receiver.hung_up.set()
        return response

    return answer


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A ``Receiver`` serving on an ephemeral 127.0.0.1 port until the block ends."""
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recv.port = runner.addresses[0][1]
    try:
        yield recv
    finally:
        recv.release.set()  # hanging replies end, so the server shuts down promptly
        await runner.cleanup()
