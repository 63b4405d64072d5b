"""End-to-end fixtures: a real ``homing`` process per backend, tokens, and a local receiver.

The ``server`` fixture is module-scoped (one process per test module and backend) because
starting a process costs about a second; every test makes its own uniquely named objects, so
tests do not depend on each other. PostgreSQL databases come from the session's migrated
template (``pg_template`` in ``tests/conftest.py``), which skips loudly without
``HOMING_TEST_POSTGRES_DSN`` and fails without it under ``CI=true``.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 30.0

# The worker is being written alongside these tests: until it exists, ``homing serve`` cannot
# start, so the API-only process (``homing api``) stands in and delivery tests skip.
WORKER_EXISTS = importlib.util.find_spec("homing.delivery.worker") is not None
SERVE_COMMAND = "serve" if WORKER_EXISTS else "api"


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    """A name no other test uses (uids, event types, event ids)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _clean_environ() -> dict[str, str]:
    """The parent environment without any ``HOMING_*`` variable (a stray HOMING_CONFIG or
    HOMING_DATABASE_URL of the developer's shell must not leak into the tested process)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HOMING_")}


@dataclass
class HomingProcess:
    """A running ``homing`` process and what a client needs to talk to it."""

    backend: str
    base_url: str
    token: str
    env: dict[str, str]
    stderr_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_tokens: dict[str, str] = field(default_factory=dict)

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def cli(self, *args: str) -> str:
        """Run ``python -m homing ARGS`` against the same database; return its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "homing", *args],
            env=self.env,
            capture_output=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"homing {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stderr.decode(errors='replace')}",
                pytrace=False,
            )
        return done.stdout.decode().strip()

    def org_token(self, org: str) -> str:
        """An API token of organisation ``org`` (minted once per process by the CLI)."""
        if org not in self.extra_tokens:
            token = self.cli("token", "create", "--org", org)
            assert token and "\n" not in token, f"token create printed {token!r}"
            self.extra_tokens[org] = token
        return self.extra_tokens[org]


def _wait_healthy(server: HomingProcess) -> None:
    assert server.proc is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "no answer"
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                break
            try:
                answer = client.get(server.base_url + "/api/v1/health")
                if answer.status_code == 204:
                    return
                last = f"HTTP {answer.status_code}: {answer.text[:200]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.05)
    code = server.proc.poll()
    _stop(server)
    pytest.fail(
        f"homing {SERVE_COMMAND} ({server.backend}) did not become healthy within "
        f"{STARTUP_TIMEOUT} s (exit code {code}, last health check: {last}); stderr:\n"
        f"{server.stderr()}",
        pytrace=False,
    )


def _stop(server: HomingProcess) -> int | None:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; returns the exit code (None if killed)."""
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        return None


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url_e2e(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database URL per backend for one module's server (PostgreSQL's is migrated)."""
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path_factory.mktemp("homing-e2e") / "h.db")
        return
    template = request.getfixturevalue("pg_template")
    url: str = template.copy()
    yield url
    template.drop(url)


def start_homing(database_url: str, logs: Path) -> HomingProcess:
    """Start ``homing serve`` on ``database_url`` and a free port; return it once healthy.

    Fails the test (with the process's stderr) when it is not healthy within
    ``STARTUP_TIMEOUT``. The caller stops it with ``stop_homing``.
    """
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    port = free_port()
    token = "hsk_boot_" + secrets.token_urlsafe(24)
    env = {
        **_clean_environ(),
        "HOMING_DATABASE_URL": database_url,
        "HOMING_HOST": "127.0.0.1",
        "HOMING_PORT": str(port),
        "HOMING_BOOTSTRAP_TOKEN": token,
        "HOMING_LOG_LEVEL": "warning",
        # the SSRF guard refuses loopback; the test receiver lives on 127.0.0.1
        "HOMING_ALLOW_NETWORKS": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
    }
    server = HomingProcess(
        backend=backend,
        base_url=f"http://127.0.0.1:{port}",
        token=token,
        env=env,
        stderr_path=logs / "stderr.log",
    )
    if SERVE_COMMAND == "api" and backend == "sqlite":
        server.cli("migrate")  # ``homing api`` does not migrate; ``homing serve`` does
    with (logs / "stdout.log").open("wb") as out, server.stderr_path.open("wb") as err:
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "homing", SERVE_COMMAND], env=env, stdout=out, stderr=err
        )
    _wait_healthy(server)
    return server


def stop_homing(server: HomingProcess) -> int | None:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; the exit code, or None if it was killed."""
    return _stop(server)


def logged_errors(stderr: str) -> bool:
    """Whether a homing log holds an error or a traceback."""
    return "Traceback" in stderr or '"level":"ERROR"' in stderr


@pytest.fixture(scope="module")
def server(
    database_url_e2e: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomingProcess]:
    """A real ``homing serve`` process on a free port, healthy, stopped with SIGTERM after.

    Its exit code is checked by ``test_serve_stops_cleanly_on_sigterm``, not here: a failure in
    the teardown of a module-scoped, parametrized fixture is reported against (and stops) the
    next backend's first test.
    """
    server = start_homing(database_url_e2e, tmp_path_factory.mktemp("homing-logs"))
    try:
        yield server
    finally:
        code = stop_homing(server)
    if code is None:
        pytest.fail(
            f"homing {SERVE_COMMAND} ({server.backend}) ignored SIGTERM for {STOP_TIMEOUT} s "
            f"and was killed; stderr:\n{server.stderr()}",
            pytrace=False,
        )


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test body failed (read by ``_server_log_stays_clean``)."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(autouse=True)
def _server_log_stays_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test during which the server logged an error or a traceback (e.g. a 500)."""
    if "server" not in request.fixturenames:
        yield
        return
    server: HomingProcess = request.getfixturevalue("server")
    before = len(server.stderr())
    yield
    new = server.stderr()[before:]
    if logged_errors(new) and not request.node.stash.get(CALL_FAILED, False):
        pytest.fail(f"the server logged errors during this test:\n{new}", pytrace=False)


@pytest.fixture
def client(server: HomingProcess) -> Iterator[httpx.Client]:
    """An httpx client on the server with org A's (the bootstrap) token."""
    headers = {"authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as c:
        yield c


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A local HTTP server that records every POST and answers 200 (a customer endpoint).

    Requests to paths under ``/held`` are recorded at once but answered only after
    ``release`` is set, so a test can act while a delivery is in flight.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.release = threading.Event()
        self.answered_held = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                held = self.path.startswith("/held")
                if held:
                    receiver.release.wait(timeout=STOP_TIMEOUT)
                reply = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                if held:
                    receiver.answered_held.set()

            def log_message(self, *args: object) -> None:
                pass  # keep test output clean

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def received(self, path: str) -> list[Received]:
        """The requests made to ``path`` so far."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, timeout: float = 10.0) -> Received:
        """The first request to ``path``, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(path)
            if found:
                return found[0]
            time.sleep(0.05)
        pytest.fail(f"no webhook reached {self.url}{path} within {timeout} s", pytrace=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running local receiver on 127.0.0.1 and an ephemeral port."""
    rec = Receiver()
    rec.start()
    yield rec
    rec.stop()
