"""The ``homing`` command: serve | api | worker | migrate | token create | token revoke."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from homing import __version__
from homing.config import Settings, load_settings, redact_url
from homing.core.models import DEFAULT_ORG
from homing.crypto import SecretBox
from homing.errors import HomingError
from homing.storage import Storage, open_storage

log = logging.getLogger("homing")


def new_token() -> str:
    """A fresh org API token: a prefix and 32 random bytes."""
    return "hsk_" + secrets.token_urlsafe(32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homing", description="Homing webhook delivery service.")
    parser.add_argument("--version", action="version", version=f"homing {__version__}")
    parser.add_argument(
        "--config",
        default=os.environ.get("HOMING_CONFIG"),
        help="TOML settings file (env: HOMING_CONFIG); HOMING_* variables override it",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "API, worker and dashboard in one process; applies migrations"),
        ("api", "the HTTP API and dashboard only"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--host", help="listen address (env: HOMING_HOST, default 127.0.0.1)")
        cmd.add_argument("--port", type=int, help="listen port (env: HOMING_PORT, default 8071)")
    sub.add_parser("worker", help="the delivery worker only")
    sub.add_parser("migrate", help="apply database migrations (env: HOMING_DATABASE_URL)")
    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    create = token.add_parser("create", help="mint an organisation API token and print it")
    token.add_parser(
        "revoke",
        help="revoke a token (read from standard input, so it stays out of the shell history)",
    )
    create.add_argument(
        "--org", default=DEFAULT_ORG, help=f"organisation id (default {DEFAULT_ORG})"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    environ = dict(os.environ)
    for flag in ("host", "port"):
        value = getattr(args, flag, None)
        if value is not None:
            environ[f"HOMING_{flag.upper()}"] = str(value)
    return load_settings(environ, args.config)


async def _open(settings: Settings, migrate: bool) -> Storage:
    main = settings.main_secret
    storage = await open_storage(settings.database_url, SecretBox(main.reveal()) if main else None)
    if migrate:
        applied = await storage.migrate()
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    return storage


class _Server:
    """uvicorn's server without its own signal handling: uvicorn re-raises SIGTERM after it
    stops, which would kill the process before the worker finishes its sends."""

    @staticmethod
    def make(config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        return Server(config)


async def _serve(settings: Settings, with_api: bool, with_worker: bool, migrate: bool) -> None:
    import uvicorn

    from homing.api.app import create_app

    storage = await _open(settings, migrate)
    stop = asyncio.Event()
    server: Any = None

    def on_signal() -> None:
        stop.set()
        if server is not None:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    tasks: list[asyncio.Task[None]] = []
    try:
        if with_worker:
            from homing.delivery.worker import Worker

            tasks.append(asyncio.create_task(Worker(settings, storage).run(stop)))
        if with_api:
            config = uvicorn.Config(
                create_app(settings, storage),
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                proxy_headers=False,
                server_header=False,
            )
            server = _Server.make(config)
            log.info(
                "homing %s on http://%s:%s (%s)",
                __version__,
                settings.host,
                settings.port,
                redact_url(settings.database_url),
            )
            await server.serve()
        else:
            log.info("homing worker %s (%s)", __version__, redact_url(settings.database_url))
            await stop.wait()
    finally:
        stop.set()
        if tasks:
            # in-flight sends end within the request deadline
            await asyncio.wait(tasks, timeout=settings.request_timeout + 5)
        await storage.close()


async def _migrate(settings: Settings) -> None:
    storage = await _open(settings, migrate=False)
    try:
        applied = await storage.migrate()
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
    finally:
        await storage.close()


async def _revoke(settings: Settings, token: str) -> bool:
    storage = await _open(settings, migrate=True)
    try:
        return await storage.revoke_token_value(token)
    finally:
        await storage.close()


async def _token(settings: Settings, org: str) -> None:
    storage = await _open(settings, migrate=True)
    try:
        token = new_token()
        await storage.create_token(token, org, None, datetime.now(UTC), None)
        print(token)
    finally:
        await storage.close()


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (it is with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _revoke_from_stdin(settings: Settings) -> int:
    token = sys.stdin.readline().strip()
    if not token:
        print("homing: give the token to revoke on standard input", file=sys.stderr)
        return 2
    revoked = asyncio.run(_revoke(settings, token))
    print("revoked" if revoked else "no such live token")
    return 0 if revoked else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
        )
        if args.command == "serve":
            _run(_serve(settings, with_api=True, with_worker=True, migrate=True))
        elif args.command == "api":
            _run(_serve(settings, with_api=True, with_worker=False, migrate=False))
        elif args.command == "worker":
            _run(_serve(settings, with_api=False, with_worker=True, migrate=False))
        elif args.command == "migrate":
            _run(_migrate(settings))
        elif args.token_command == "create":
            _run(_token(settings, args.org))
        else:
            return _revoke_from_stdin(settings)
    except HomingError as exc:
        print(f"homing: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("stopped", file=sys.stderr)
    return 0
