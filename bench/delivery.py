"""Delivery benchmark: drain a backlog of deliveries with a real worker, against a raw baseline.

1. Builds a backlog of N deliveries (one application, a few endpoints, N messages, each message
   for exactly one endpoint through its event-type filter) with ``Storage`` verbs, on a
   PostgreSQL database of its own (created and dropped through ``--admin-dsn``).
2. Drains it with ``Worker(settings, storage).run(stop)`` in this process (the production loop
   with the default settings: at most 16 sends in flight per endpoint, so 64 here) to a fast
   local receiver (``aiohttp.web`` in another process, answering 200 at once) and prints
   deliveries/s, measured from the worker's start until every delivery is final in the
   database. The database's statistics are as the backlog left them (no ANALYZE).
3. Sends the same N bodies to the same URLs with bare aiohttp and the same concurrency, and
   nothing else (no database, no signing): the ceiling of the HTTP stack on this machine.
4. Prints the ratio Homing/raw (target >= 0.5), then the same drain on a SQLite file.

    .venv/bin/python bench/delivery.py --deliveries 20000 --endpoints 4

All traffic stays on 127.0.0.1. Every phase is bounded by ``--phase-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from homing import __version__
from homing.config import Settings
from homing.core.models import Application, Endpoint, EndpointSecret, Message
from homing.delivery.worker import Worker
from homing.ids import new_id
from homing.signing import generate_secret
from homing.storage import Storage, open_storage

ORG = "org_bench"
BUILD_CONCURRENCY = 10  # the PostgreSQL pool's size

RECEIVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    count = 0

    async def hook(request):
        global count
        await request.read()
        count += 1
        return web.Response(text="ok")

    async def get_count(request):
        return web.Response(text=str(count))

    app = web.Application()
    app.router.add_post("/hook/{n}", hook)
    app.router.add_get("/count", get_count)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=loop)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def receiver_process() -> Iterator[str]:
    """A fast receiver in its own process; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def received(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/count") as resp:
        return int(await resp.text())


async def wait_receiver(base: str, deadline: float = 20.0) -> None:
    async with aiohttp.ClientSession() as session:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError):
                await received(session, base)
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the receiver at {base} did not come up")


def payload(n: int, size: int) -> str:
    """The JSON text of message ``n``: always ``size`` bytes long (for ``n`` < 10**9)."""
    head = json.dumps({"n": f"{n:09d}", "pad": ""})
    return json.dumps({"n": f"{n:09d}", "pad": "x" * max(0, size - len(head))})


# -- the backlog -------------------------------------------------------------------------------


async def build_backlog(
    storage: Storage, base: str, deliveries: int, endpoints: int, size: int, parallel: int
) -> tuple[list[str], float]:
    """One application, ``endpoints`` endpoints, ``deliveries`` messages (message n goes to
    endpoint n % endpoints). Returns the endpoint URLs and the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    app = await storage.create_application(
        Application(new_id("app"), ORG, "bench", "bench", None, {}, now, now)
    )
    urls = [f"{base}/hook/{i}" for i in range(endpoints)]
    for i, url in enumerate(urls):
        await storage.create_endpoint(
            Endpoint(
                id=new_id("ep"),
                org_id=ORG,
                app_id=app.id,
                url=url,
                uid=None,
                description="",
                rate_limit=None,
                disabled=False,
                event_types=(f"bench.e{i}",),
                channels=None,
                secrets=(EndpointSecret(generate_secret()),),
                headers={},
                metadata={},
                created_at=now,
                updated_at=now,
            )
        )
    gate = asyncio.Semaphore(parallel)

    async def one(n: int) -> None:
        async with gate:
            made = await storage.create_message(
                Message(
                    id=new_id("msg"),
                    org_id=ORG,
                    app_id=app.id,
                    event_type=f"bench.e{n % endpoints}",
                    event_id=None,
                    payload=payload(n, size),
                    channels=None,
                    tags=None,
                    created_at=datetime.now(UTC),
                )
            )
            assert len(made) == 1, f"message {n} made {len(made)} deliveries"

    await asyncio.gather(*(one(n) for n in range(deliveries)))
    return urls, time.perf_counter() - started


async def states(storage: Storage) -> dict[str, int]:
    async with storage.db.connection() as conn:
        found = await conn.fetch("SELECT state, COUNT(*) AS n FROM delivery GROUP BY state")
    return {str(r["state"]): int(r["n"]) for r in found}


async def drain(storage: Storage, settings: Settings, base: str, deliveries: int) -> float:
    """Run a worker until every delivery is final; return deliveries/s."""
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        before = await received(session, base)
        started = time.perf_counter()
        task = asyncio.create_task(Worker(settings, storage).run(stop))
        try:
            # the receiver's count is cheap to poll; the database is asked only at the end
            while await received(session, base) - before < deliveries:
                if task.done():
                    raise RuntimeError("the worker stopped early")
                await asyncio.sleep(0.05)
            while (await states(storage)).get("success", 0) < deliveries:
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            await asyncio.wait_for(task, settings.request_timeout + 5)
        extra = await received(session, base) - before - deliveries
    final = await states(storage)
    if final != {"success": deliveries} or extra:
        raise RuntimeError(f"drain ended with {final} and {extra} duplicate requests")
    return deliveries / elapsed


# -- the raw baseline --------------------------------------------------------------------------


async def raw(base: str, urls: list[str], deliveries: int, size: int, concurrency: int) -> float:
    """POST the same bodies to the same URLs with bare aiohttp; return requests/s."""
    bodies = iter(range(deliveries))
    headers = {"content-type": "application/json"}
    failures = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for n in bodies:
            body = payload(n, size).encode()
            async with session.post(urls[n % len(urls)], data=body, headers=headers) as resp:
                await resp.read()
                failures += resp.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await received(session, base)
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        count = await received(session, base) - before
    if failures or count != deliveries:
        raise RuntimeError(f"raw run: {failures} failures, {count} of {deliveries} received")
    return deliveries / elapsed


# -- the databases -----------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@contextlib.asynccontextmanager
async def postgres_database(admin_dsn: str) -> Any:
    name = f"homing_bench_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_dsn, name)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def homing_run(
    url: str, base: str, args: argparse.Namespace, parallel: int
) -> tuple[list[str], float, float]:
    """Backlog and drain on ``url``: the endpoint URLs, build seconds and deliveries/s."""
    settings = Settings(
        database_url=url,
        request_timeout=15.0,
        retry_jitter=0.0,
        allow_networks="127.0.0.1/32",
        log_level="warning",
    )
    storage = await open_storage(url)
    try:
        await storage.migrate()
        urls, built = await build_backlog(
            storage, base, args.deliveries, args.endpoints, args.payload_bytes, parallel
        )
        rate = await drain(storage, settings, base, args.deliveries)
    finally:
        await storage.close()
    return urls, built, rate


async def bounded(what: str, seconds: float, work: Awaitable[Any]) -> Any:
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise SystemExit(f"{what} did not finish within {seconds} s") from None


async def main(args: argparse.Namespace) -> None:
    print(
        f"homing {__version__} delivery benchmark: {args.deliveries} deliveries, "
        f"{args.endpoints} endpoints, {args.payload_bytes}-byte bodies, worker concurrency "
        f"{Settings().worker_concurrency}, per-endpoint cap {Settings().endpoint_concurrency}, raw "
        f"concurrency {args.concurrency}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, receiver: aiohttp.web in another process"
    )
    t = args.phase_timeout
    with receiver_process() as base:
        await wait_receiver(base)
        async with postgres_database(args.admin_dsn) as pg_url:
            urls, built, pg_rate = await bounded(
                "the PostgreSQL run", t, homing_run(pg_url, base, args, BUILD_CONCURRENCY)
            )
        print(f"postgres: backlog built in {built:.1f} s; drained at {pg_rate:,.0f} deliveries/s")
        raw_rate = await bounded(
            "the raw run",
            t,
            raw(base, urls, args.deliveries, args.payload_bytes, args.concurrency),
        )
        print(f"raw aiohttp sender (no database): {raw_rate:,.0f} requests/s")
        print(f"ratio homing(postgres)/raw: {pg_rate / raw_rate:.2f} (target >= 0.5)")
        if args.skip_sqlite:
            return
        with tempfile.TemporaryDirectory(prefix="homing-bench-") as tmp:
            sqlite_url = "sqlite:///" + str(Path(tmp) / "bench.db")
            _, built, sqlite_rate = await bounded(
                "the SQLite run", t, homing_run(sqlite_url, base, args, 1)
            )
        print(
            f"sqlite: backlog built in {built:.1f} s; drained at {sqlite_rate:,.0f} "
            f"deliveries/s (ratio to raw {sqlite_rate / raw_rate:.2f})"
        )


def run(main_coro: Callable[[], Awaitable[None]]) -> None:
    """On uvloop when installed, as ``homing`` itself runs."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro())  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main_coro())  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20000)
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=Settings().worker_concurrency)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--phase-timeout", type=float, default=600.0)
    parser.add_argument("--skip-sqlite", action="store_true")
    parsed = parser.parse_args()
    run(lambda: main(parsed))
