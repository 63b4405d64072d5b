"""Ingest benchmark: POST messages concurrently to real ``homing api`` processes on PostgreSQL.

Prints messages/s for Homing and, measured the same way in the same run, for a bare ASGI app
that answers 202 without touching a database (the ceiling of the HTTP stack on this machine),
and the ratio between the two.

    .venv/bin/python bench/ingest.py --messages 20000 --concurrency 64 --processes 2

Needs PostgreSQL (``--admin-dsn``, default postgresql://postgres@127.0.0.1:5432/postgres); it
creates and drops its own database. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg

BARE_APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        body = (b'{"id":"msg_x","eventType":"bench.event","payload":{},'
                b'"timestamp":"2026-01-01T00:00:00Z"}')
        await send({"type": "http.response.start", "status": 202,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_healthy(url: str, deadline: float = 30.0) -> None:
    async with aiohttp.ClientSession() as session:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def processes(commands: list[list[str]], env: dict[str, str]) -> Iterator[None]:
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL) for c in commands]
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def load(urls: list[str], token: str, total: int, concurrency: int) -> float:
    """POST ``total`` messages round-robin over ``urls``; return messages/s (2xx only)."""
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    counter = iter(range(total))
    failures = 0

    async def client(session: aiohttp.ClientSession, worker: int) -> None:
        nonlocal failures
        for n in counter:
            body = b'{"eventType":"bench.event","payload":{"n":%d,"text":"hello world"}}' % n
            url = urls[(n + worker) % len(urls)]
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status >= 300:
                    failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session, w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{failures} requests failed")
    return total / elapsed


async def setup_app(base: str, token: str, endpoints: int) -> str:
    headers = {"authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{base}/api/v1/app", json={"name": "bench", "uid": "bench"}) as r:
            app_id = str((await r.json())["id"])
        for i in range(endpoints):
            # endpoints that will never be reached: only the api process runs, no worker
            url = f"http://127.0.0.1:9/hook{i}"
            async with session.post(f"{base}/api/v1/app/{app_id}/endpoint", json={"url": url}) as r:
                assert r.status == 201, await r.text()
    return app_id


async def run(args: argparse.Namespace) -> None:
    db = f"homing_bench_{os.getpid()}"
    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{db}"')
    dsn = args.admin_dsn.rsplit("/", 1)[0] + "/" + db
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "HOMING_DATABASE_URL": dsn,
        "HOMING_BOOTSTRAP_TOKEN": token,
        "HOMING_LOG_LEVEL": "warning",
    }
    try:
        subprocess.run([sys.executable, "-m", "homing", "migrate"], env=env, check=True)
        ports = [free_port() for _ in range(args.processes)]
        homing = [[sys.executable, "-m", "homing", "api", "--port", str(p)] for p in ports]
        with processes(homing, env):
            bases = [f"http://127.0.0.1:{p}" for p in ports]
            for base in bases:
                await wait_healthy(base + "/api/v1/health")
            app_id = await setup_app(bases[0], token, args.endpoints)
            urls = [f"{b}/api/v1/app/{app_id}/msg" for b in bases]
            await load(urls, token, min(1000, args.messages), args.concurrency)  # warm-up
            homing_rate = await load(urls, token, args.messages, args.concurrency)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "bare.py").write_text(BARE_APP)
            bare_ports = [free_port() for _ in range(args.processes)]
            bare = [
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    tmp,
                    "bare:app",
                    "--port",
                    str(p),
                    "--log-level",
                    "warning",
                ]
                for p in bare_ports
            ]
            with processes(bare, env):
                bare_urls = [f"http://127.0.0.1:{p}/api/v1/app/x/msg" for p in bare_ports]
                for url in bare_urls:
                    await wait_healthy(url)
                await load(bare_urls, token, min(1000, args.messages), args.concurrency)
                bare_rate = await load(bare_urls, token, args.messages, args.concurrency)
        bench_db = await asyncpg.connect(dsn)
        stored = await bench_db.fetchval("SELECT count(*) FROM message")
        deliveries = await bench_db.fetchval("SELECT count(*) FROM delivery")
        await bench_db.close()
        print(
            f"cores: {os.cpu_count()}  api processes: {args.processes}  "
            f"concurrency: {args.concurrency}  endpoints per message: {args.endpoints}"
        )
        print(f"homing ingest (PostgreSQL): {homing_rate:8.0f} messages/s")
        print(f"bare ASGI 202 (no database): {bare_rate:8.0f} requests/s")
        print(f"ratio homing / bare: {homing_rate / bare_rate:.2f}")
        print(f"stored: {stored} messages, {deliveries} deliveries")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--endpoints", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
