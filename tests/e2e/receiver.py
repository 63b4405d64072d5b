"""End-to-end helpers: a scripted webhook receiver, ``homing`` processes with custom settings,
and small API and database probes.

``ScriptedReceiver`` is an ``aiohttp.web`` server on 127.0.0.1 running in its own thread (and
event loop), so the blocking test code and the ``homing`` processes under test never stall it.
It records every request and answers from a per-path script: the last scripted reply of a
path repeats, an unscripted path answers 200. Handlers are cancelled when the client hangs up,
and every reply that waits is bounded, so stopping the receiver never waits for long.

``launch`` starts ``python -m homing COMMAND`` with any ``HOMING_*`` settings (the colleague's
``start_homing`` in ``conftest.py`` has fixed ones) and returns the conftest's
``HomingProcess``, so its helpers (``cli``, ``stderr``, ``stop_homing``) work on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiohttp import web

from .conftest import HomingProcess, _clean_environ, free_port

T = TypeVar("T")
Reply = Callable[[web.Request, "ScriptedReceiver"], Awaitable[web.StreamResponse]]

STARTUP_TIMEOUT = 20.0
# The longest any reply may wait (a hanging or gated receiver): far beyond every deadline the
# tests use, and short enough that a forgotten gate cannot stall the run.
LONGEST_WAIT = 30.0
_MIB = 1024 * 1024


# -- the receiver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request the receiver got; ``at`` is ``time.monotonic()`` when it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


def answer(status: int = 200, headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
    """A reply: wait ``delay`` seconds, then answer ``status`` with ``headers`` and a tiny body."""

    async def reply(request: web.Request, receiver: ScriptedReceiver) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers, text='{"ok": true}')

    return reply


def hang() -> Reply:
    """A reply that never answers (until the client hangs up or the receiver stops)."""

    async def reply(request: web.Request, receiver: ScriptedReceiver) -> web.StreamResponse:
        await receiver.wait_stopping(LONGEST_WAIT)
        return web.Response(status=200)

    return reply


def gated() -> Reply:
    """A reply that answers 200 once the test calls ``receiver.open_gate()``."""

    async def reply(request: web.Request, receiver: ScriptedReceiver) -> web.StreamResponse:
        await receiver.wait_gate(LONGEST_WAIT)
        return web.Response(status=200)

    return reply


def drip(interval: float = 1.0, count: int = 30) -> Reply:
    """A reply that sends its headers (200) at once, then one body byte every ``interval`` s."""

    async def reply(request: web.Request, receiver: ScriptedReceiver) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"content-type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(count):
            await asyncio.sleep(interval)
            await response.write(b".")
        await response.write_eof()
        return response

    return reply


def flood(total: int) -> Reply:
    """A reply of 200 with a ``total``-byte body streamed 1 MiB at a time (stops on hang-up)."""

    async def reply(request: web.Request, receiver: ScriptedReceiver) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"content-type": "text/plain", "content-length": str(total)}
        )
        await response.prepare(request)
        chunk = b"x" * _MIB
        sent = 0
        try:
            while sent < total:
                await response.write(chunk[: total - sent])
                sent += min(_MIB, total - sent)
        except ConnectionError:
            pass  # the client read what it wanted and hung up, as it should
        finally:  # also when the hang-up cancels this handler
            receiver.flood_sent.append(sent)
        return response

    return reply


class ScriptedReceiver:
    """A customer endpoint for tests (module docstring); ``start`` it, ``stop`` it."""

    def __init__(self) -> None:
        self.port = 0
        self.flood_sent: list[int] = []
        self._seen: list[Seen] = []
        self._script: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._gate: asyncio.Event | None = None

    # lifecycle

    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        except BaseException:
            self._end_loop()
            raise

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        self._gate = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a hanging or dripping reply ends when the client hangs up
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._stopping is not None and self._runner is not None
            self._stopping.set()
            await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=15)
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    # what the tests use

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer requests to ``path`` with ``replies`` in turn; the last one repeats."""
        with self._lock:
            self._script[path] = list(replies)

    def open_gate(self) -> None:
        """Let every ``gated`` reply, waiting or to come, answer."""
        gate = self._gate
        assert gate is not None
        self._loop.call_soon_threadsafe(gate.set)

    def seen(self, path: str | None = None) -> list[Seen]:
        """The requests so far (to ``path``, or all), in arrival order."""
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    def webhook_ids(self) -> collections.Counter[str]:
        """How many requests carried each ``webhook-id``."""
        return collections.Counter(s.webhook_id for s in self.seen())

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Seen]:
        """The first ``count`` requests to ``path``, waiting up to ``timeout`` s (else fail)."""
        found = eventually(
            lambda: (lambda s: s if len(s) >= count else None)(self.seen(path)),
            f"{count} request(s) to {self.url(path)}",
            timeout,
        )
        return found[:count]

    # inside the receiver's loop

    async def wait_stopping(self, timeout: float) -> None:
        assert self._stopping is not None
        await _wait_event(self._stopping, timeout)

    async def wait_gate(self, timeout: float) -> None:
        assert self._gate is not None
        await _wait_event(self._gate, timeout)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self._seen.append(
                Seen(
                    path=request.path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    at=time.monotonic(),
                )
            )
            replies = self._script.get(request.path)
            earlier = sum(1 for s in self._seen if s.path == request.path) - 1
        if not replies:
            return web.Response(status=200, text='{"ok": true}')
        return await replies[min(earlier, len(replies) - 1)](request, self)


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


# -- waiting -----------------------------------------------------------------------------------


def eventually(probe: Callable[[], T | None], what: str, timeout: float) -> T:
    """Call ``probe`` every 50 ms until it returns something other than None, at most
    ``timeout`` seconds; fail the test naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(0.05)


# -- homing processes --------------------------------------------------------------------------


def launch(
    command: str, database_url: str, logs: Path, settings: dict[str, str] | None = None
) -> HomingProcess:
    """Start ``python -m homing COMMAND`` (serve, api or worker) on ``database_url``.

    ``settings`` are extra ``HOMING_*`` variables (names without the prefix, e.g.
    ``{"REQUEST_TIMEOUT": "1"}``); a ``BOOTSTRAP_TOKEN`` among them is kept (a restarted
    process then accepts the same token), otherwise a fresh one is made. Returns once the
    process is healthy (``/api/v1/health`` answers 204) or, for a worker, once it logged that
    it started; fails the test with its stderr otherwise. Stop it with
    ``conftest.stop_homing`` or ``kill_hard``.
    """
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = settings or {}
    token = settings.get("BOOTSTRAP_TOKEN") or new_token()
    env = {
        **_clean_environ(),
        "HOMING_DATABASE_URL": database_url,
        "HOMING_HOST": "127.0.0.1",
        "HOMING_PORT": str(port),
        "HOMING_BOOTSTRAP_TOKEN": token,
        "HOMING_LOG_LEVEL": "info" if command == "worker" else "warning",
        # the SSRF guard refuses loopback; the receivers of these tests live there
        "HOMING_ALLOW_NETWORKS": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
        **{f"HOMING_{k}": v for k, v in settings.items()},
    }
    name = f"{command}-{port}"
    process = HomingProcess(
        backend="sqlite" if database_url.startswith("sqlite") else "postgres",
        base_url=f"http://127.0.0.1:{port}",
        token=token,
        env=env,
        stderr_path=logs / f"{name}.stderr.log",
    )
    with (logs / f"{name}.stdout.log").open("wb") as out, process.stderr_path.open("wb") as err:
        process.proc = subprocess.Popen(
            [sys.executable, "-m", "homing", command], env=env, stdout=out, stderr=err
        )
    if command == "worker":
        _wait_started(process)
    else:
        _wait_healthy(process)
    return process


def new_token() -> str:
    """A fresh bootstrap token."""
    return "hsk_boot_" + secrets.token_urlsafe(24)


def _fail_start(process: HomingProcess, what: str) -> None:
    assert process.proc is not None
    code = process.proc.poll()
    if code is None:
        process.proc.kill()
        process.proc.wait(timeout=10)
    pytest.fail(
        f"{what} within {STARTUP_TIMEOUT} s (exit code {code}); stderr:\n{process.stderr()}",
        pytrace=False,
    )


def _wait_started(process: HomingProcess) -> None:
    assert process.proc is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.proc.poll() is None:
        if "started" in process.stderr():
            return
        time.sleep(0.05)
    _fail_start(process, "homing worker did not log that it started")


def _wait_healthy(process: HomingProcess) -> None:
    assert process.proc is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline and process.proc.poll() is None:
            try:
                if client.get(process.base_url + "/api/v1/health").status_code == 204:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    _fail_start(process, "homing did not become healthy")


def kill_hard(process: HomingProcess) -> None:
    """SIGKILL the process (no clean-up of any kind) and reap it."""
    assert process.proc is not None
    process.proc.kill()
    process.proc.wait(timeout=10)


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# -- the API -----------------------------------------------------------------------------------


@dataclass
class Api:
    """A thin synchronous client of one homing process's REST API."""

    base_url: str
    token: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        """``method path`` under ``/api/v1``; assert the status; return the JSON (or None)."""
        answer = self.client.request(method, "/api/v1" + path, **kwargs)
        assert answer.status_code == expect, (method, path, answer.status_code, answer.text)
        return answer.json() if answer.content else None

    def app_with_endpoint(self, url: str, **endpoint: Any) -> tuple[str, str]:
        """A new application with one endpoint at ``url``; their ids."""
        app = self.call("POST", "/app", 201, json={"name": "e2e", "uid": _uid("app")})
        ep = self.call("POST", f"/app/{app['id']}/endpoint", 201, json={"url": url, **endpoint})
        return str(app["id"]), str(ep["id"])

    def send(self, app_id: str, payload: dict[str, Any], event_type: str = "e2e.test") -> str:
        """Post a message (asserting 202: durable and queued); its id."""
        msg = self.call(
            "POST",
            f"/app/{app_id}/msg",
            202,
            json={"eventType": event_type, "payload": payload},
        )
        return str(msg["id"])

    def attempts(self, app_id: str, msg_id: str) -> list[dict[str, Any]]:
        """The message's attempts, oldest first."""
        found = self.call("GET", f"/app/{app_id}/attempt/msg/{msg_id}", 200)
        return list(reversed(found["data"]))

    def destinations(self, app_id: str, msg_id: str) -> list[dict[str, Any]]:
        """The endpoints the message goes to, each with its ``status`` and ``statusText``."""
        return list(self.call("GET", f"/app/{app_id}/msg/{msg_id}/endpoint", 200)["data"])


def _uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


# -- the database ------------------------------------------------------------------------------


def delivery_states(database_url: str) -> collections.Counter[str]:
    """How many delivery rows are in each state, read straight from the database."""
    return collections.Counter(dict(_query(database_url, _STATES)))


def attempt_count(database_url: str) -> int:
    """How many attempt rows the database holds."""
    return int(_query(database_url, "SELECT COUNT(*) FROM attempt")[0][0])


_STATES = "SELECT state, COUNT(*) FROM delivery GROUP BY state"


def _query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite"):
        path = database_url.split("sqlite:///", 1)[1]
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            return list(conn.execute(sql).fetchall())

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def missing(ids: Iterable[str], received: collections.Counter[str]) -> list[str]:
    """The ids in ``ids`` that ``received`` lacks."""
    return [i for i in ids if received[i] == 0]
