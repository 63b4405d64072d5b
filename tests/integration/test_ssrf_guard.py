"""The SSRF guard against real listeners on forbidden addresses of this machine.

Listeners sit on 127.0.0.2 (and other 127/8 addresses), ::1 and 0.0.0.0; other ranges (10/8,
169.254.169.254, ULA, NAT64, ...) only inside a network namespace the test creates and deletes
itself. Every test that shows a listener receiving nothing also shows, with the address allowed,
that the very same listener is reachable, so "nothing arrived" means "blocked", not "broken".
Nothing here ever targets an address outside this machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from homing.config import Secret, Settings
from homing.core.states import Outcome
from homing.delivery.sender import Request, Sender
from homing.ssrf import ALLOW_VAR

ApiFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

FORBIDDEN = "127.0.0.2"
ALLOWED = "127.0.0.3"


@dataclass
class Listener:
    """A TCP server that counts connections, records request heads and answers one status."""

    host: str
    status: int = 200
    location: str = ""
    connections: int = 0
    heads: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, host: str | None = None, path: str = "/hook") -> str:
        shown = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{shown}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            first = await reader.read(1)
            if first == b"\x16":  # a TLS hello (CONNECT tests): hang up at once
                self.heads.append("<tls>")
                return
            head = (first + await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            length = [
                ln.split(":")[1]
                for ln in head.split("\r\n")
                if ln.lower().startswith("content-length")
            ]
            await reader.readexactly(int(length[0]) if length else 0)
            location = f"Location: {self.location}\r\n" if self.location else ""
            writer.write(
                f"HTTP/1.1 {self.status} X\r\n{location}Content-Length: 2\r\n"
                "Connection: close\r\n\r\nok".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.heads.append("<incomplete>")
        finally:
            writer.close()


Listen = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def listen() -> AsyncIterator[Listen]:
    """Starts listeners (``await listen(host, port=0, **options)``) and stops them after."""
    made: list[Listener] = []

    async def start(host: str, port: int = 0, **options: object) -> Listener:
        listener = Listener(host, **options)  # type: ignore[arg-type]
        listener.server = await asyncio.start_server(listener.handle, host, port)
        made.append(listener)
        return listener

    yield start
    for listener in made:
        assert listener.server is not None
        listener.server.close()
        await listener.server.wait_closed()


class ScriptedResolver(AbstractResolver):
    """A DNS stand-in: the n-th question gets the n-th answer (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        ips = self.answers[min(len(self.asked), len(self.answers)) - 1]
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for ip in ips
        ]

    async def close(self) -> None:
        return None


async def deliver(
    url: str,
    allow: str = "",
    resolver: AbstractResolver | None = None,
    proxy: str | None = None,
) -> Outcome:
    """One POST of ``url`` by a fresh ``Sender`` with the default (guarded) transport."""
    settings = Settings(
        allow_networks=allow, request_timeout=3.0, proxy=Secret(proxy) if proxy else None
    )
    async with Sender(settings, resolver=resolver) as sender:
        return await sender.send(Request(url, b'{"n":1}', {"content-type": "application/json"}))


def spellings(address: str) -> list[str]:
    """Odd ways of writing the IPv4 ``address`` as a URL host that are refused outright."""
    ip = IPv4Address(address)
    n, octets = int(ip), [int(o) for o in address.split(".")]
    return [
        str(n),  # decimal
        hex(n),  # hex
        "0" + format(n, "o"),  # octal
        ".".join(f"0{o:o}" for o in octets),  # octal octets
        ".".join(hex(o) for o in octets),  # hex octets
        f"{octets[0]}.{n & 0xFFFFFF}",  # a.b short form
        f"{octets[0]}.{octets[1]}.{n & 0xFFFF}",  # a.b.c short form
        ".".join(f"{o:03d}" for o in octets),  # zero padded
        address + ".",  # trailing dot
        f"[::ffff:{address}]",  # IPv4-mapped IPv6
        f"[::ffff:{n >> 16:x}:{n & 0xFFFF:x}]",
        f"[0:0:0:0:0:ffff:{address}]",
    ]


def assert_blocked(outcome: Outcome) -> None:
    assert (outcome.status, outcome.failure_class) == (0, "blocked"), outcome.message


# -- literal addresses ---------------------------------------------------------------------------


async def test_allowed_network_reaches_the_listener_and_default_does_not(listen: Listen) -> None:
    """127.0.0.2 is refused by default (saying how to allow it) and reached once allowed."""
    target = await listen(FORBIDDEN)
    outcome = await deliver(target.url())
    assert_blocked(outcome)
    assert "127.0.0.2 (loopback)" in outcome.message and ALLOW_VAR in outcome.message
    assert target.connections == 0
    assert (await deliver(target.url(), allow="127.0.0.0/8")).status == 200
    assert target.connections == 1


async def test_a_single_allowed_address_opens_only_itself(listen: Listen) -> None:
    """allow_networks=127.0.0.3/32 reaches 127.0.0.3 but still refuses 127.0.0.2."""
    allowed = await listen(ALLOWED)
    forbidden = await listen(FORBIDDEN)
    assert (await deliver(allowed.url(), allow="127.0.0.3/32")).status == 200
    assert_blocked(await deliver(forbidden.url(), allow="127.0.0.3/32"))
    assert (allowed.connections, forbidden.connections) == (1, 0)


@pytest.mark.parametrize("allow", ["", "127.0.0.0/8"])
@pytest.mark.parametrize("index", range(len(spellings(FORBIDDEN))))
async def test_no_spelling_of_a_forbidden_address_gets_through(
    listen: Listen, allow: str, index: int
) -> None:
    """Decimal, hex, octal, short, padded and IPv4-mapped spellings are all refused, even
    when the canonical address would be allowed."""
    target = await listen(FORBIDDEN)
    host = spellings(FORBIDDEN)[index]
    assert_blocked(await deliver(target.url(host)))
    assert_blocked(await deliver(target.url(host), allow=allow))
    assert target.connections == 0


@pytest.mark.parametrize("zero", [0xFF10, 0x0660, 0x1D7CE])
async def test_unicode_digits_are_judged_as_the_address_they_spell(
    listen: Listen, zero: int
) -> None:
    """Fullwidth, Arabic-Indic or mathematical digits reach nothing by default; where the URL
    parser folds them to ASCII they are judged as exactly that address."""
    target = await listen(FORBIDDEN)
    host = FORBIDDEN.translate({ord(d): zero + int(d) for d in "0123456789"})
    outcome = await deliver(target.url(host))
    assert outcome.status == 0 and outcome.failure_class in ("blocked", "dns"), outcome.message
    assert target.connections == 0
    allowed = await deliver(target.url(host), allow="127.0.0.0/8")
    assert allowed.status in (0, 200) and target.connections == (allowed.status == 200)


async def test_mapped_form_really_reaches_the_listener_when_allowed(listen: Listen) -> None:
    """[::ffff:127.0.0.2] does connect to the 127.0.0.2 listener, so refusing it matters."""
    target = await listen(FORBIDDEN)
    outcome = await deliver(target.url("[::ffff:127.0.0.2]"), allow="127.0.0.0/8,::ffff:0:0/96")
    assert outcome.status == 200
    assert target.connections == 1


@pytest.mark.parametrize("host", ["[::1]", "[0:0:0:0:0:0:0:1]", "[::1%25lo]", "localhost"])
async def test_ipv6_loopback_is_refused(listen: Listen, host: str) -> None:
    """A listener on ::1 receives nothing, however the address is written."""
    target = await listen("::1")
    assert_blocked(await deliver(target.url(host)))
    assert target.connections == 0
    assert (await deliver(target.url(), allow="::1/128")).status == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "0", "0.0.0.0.", "127.0.0.1", "[::ffff:0.0.0.0]"])
async def test_unspecified_address_is_refused(listen: Listen, host: str) -> None:
    """A listener on 0.0.0.0 (every local address) receives nothing by default."""
    target = await listen("0.0.0.0")
    assert_blocked(await deliver(target.url(host)))
    assert target.connections == 0
    assert (await deliver(target.url("0.0.0.0"), allow="0.0.0.0/8")).status == 200


# -- names, redirects, rebinding -----------------------------------------------------------------


@pytest.mark.parametrize("answer", [[FORBIDDEN], ["::ffff:127.0.0.2"], [FORBIDDEN, "::1"]])
async def test_name_resolving_to_a_forbidden_address_is_refused(
    listen: Listen, answer: list[str]
) -> None:
    """A DNS answer of forbidden addresses is refused, and the message names host and fix."""
    target = await listen(FORBIDDEN)
    resolver = ScriptedResolver(answer)
    outcome = await deliver(target.url("hooks.example"), resolver=resolver)
    assert_blocked(outcome)
    assert (
        outcome.message.startswith("hooks.example is not reachable")
        and ALLOW_VAR in outcome.message
    )
    assert resolver.asked == ["hooks.example"]
    assert target.connections == 0


async def test_localhost_is_refused(listen: Listen) -> None:
    """The real resolver's answer for localhost is loopback, so it is refused."""
    target = await listen("127.0.0.1")
    outcome = await deliver(target.url("localhost"))
    assert_blocked(outcome)
    assert target.connections == 0


async def test_only_the_allowed_answer_is_connected_to(listen: Listen) -> None:
    """Of a mixed answer, the forbidden address is dropped and the allowed one is used."""
    allowed = await listen(ALLOWED)
    forbidden = await listen(FORBIDDEN, allowed.port)
    resolver = ScriptedResolver([FORBIDDEN, ALLOWED, FORBIDDEN])
    outcome = await deliver(allowed.url("hooks.example"), allow="127.0.0.3/32", resolver=resolver)
    assert outcome.status == 200
    assert (allowed.connections, forbidden.connections) == (1, 0)


async def test_rebinding_answer_never_reaches_the_forbidden_listener(listen: Listen) -> None:
    """A name whose answer switches from an allowed to a forbidden address is looked up once
    per connection and checked on that same answer, so the switch is refused."""
    allowed = await listen(ALLOWED)
    forbidden = await listen(FORBIDDEN, allowed.port)
    resolver = ScriptedResolver([ALLOWED], [FORBIDDEN], [ALLOWED])
    url = allowed.url("rebind.example")
    first = await deliver(url, allow="127.0.0.3/32", resolver=resolver)
    second = await deliver(url, allow="127.0.0.3/32", resolver=resolver)
    third = await deliver(url, allow="127.0.0.3/32", resolver=resolver)
    assert [first.status, second.failure_class, third.status] == [200, "blocked", 200]
    assert resolver.asked == ["rebind.example"] * 3
    assert (allowed.connections, forbidden.connections) == (2, 0)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_a_forbidden_address_is_not_followed(listen: Listen, status: int) -> None:
    """An allowed receiver redirecting to a forbidden listener gives the class redirect."""
    forbidden = await listen(FORBIDDEN)
    redirector = await listen(ALLOWED, status=status, location=forbidden.url())
    outcome = await deliver(redirector.url(), allow="127.0.0.3/32")
    assert (outcome.status, outcome.failure_class) == (status, "redirect")
    assert (redirector.connections, forbidden.connections) == (1, 0)


# -- the egress proxy ----------------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@dataclass
class ConnectProxy:
    """A tiny HTTP proxy (CONNECT tunnels and absolute-form requests) with Basic auth, that
    records the request line of every request it is asked to forward."""

    credentials: str = ""
    seen: list[str] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            first, *lines = head.rstrip("\r\n").split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
            self.seen.append(first)
            expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
            if self.credentials and headers.get("proxy-authorization") != expected:
                writer.write(b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n")
                return
            method, target, _ = first.split(" ")
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
                kept = [ln for ln in lines if not ln.lower().startswith("proxy-")]
                origin = parts.path + (f"?{parts.query}" if parts.query else "")
                up_writer.write(
                    "\r\n".join([f"{method} {origin} HTTP/1.1", *kept, "", ""]).encode()
                )
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    """A CONNECT proxy on 127.0.0.1 requiring the credentials ``agent:p@ss word``."""
    server = ConnectProxy(credentials="agent:p@ss word")
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    yield server
    for task in list(server.tasks):
        task.cancel()
    server.server.close()
    await server.server.wait_closed()


def proxy_url(proxy: ConnectProxy, credentials: str = "agent:p%40ss%20word") -> str:
    return f"http://{credentials}@127.0.0.1:{proxy.port}"


async def test_delivery_goes_through_the_proxy(listen: Listen, proxy: ConnectProxy) -> None:
    """With HOMING_PROXY set, the request reaches the receiver via the proxy, authenticated;
    the proxy's own address (127.0.0.1) needs no allow entry."""
    target = await listen(ALLOWED)
    outcome = await deliver(
        target.url(path="/hook?x=1"), allow="127.0.0.3/32", proxy=proxy_url(proxy)
    )
    assert outcome.status == 200, outcome.message
    assert proxy.seen == [f"POST http://127.0.0.3:{target.port}/hook?x=1 HTTP/1.1"]
    assert target.connections == 1
    head = target.heads[0].lower()
    assert f"host: 127.0.0.3:{target.port}" in head and "proxy-authorization" not in head


async def test_proxy_is_asked_for_the_checked_address_not_the_name(
    listen: Listen, proxy: ConnectProxy
) -> None:
    """The target name is resolved and checked before the proxy is asked, and the proxy gets
    the checked IP (the name only in Host), so it cannot re-resolve a rebinding name."""
    allowed = await listen(ALLOWED)
    forbidden = await listen(FORBIDDEN, allowed.port)
    resolver = ScriptedResolver([ALLOWED], [FORBIDDEN])
    url = allowed.url("hooks.example")
    first = await deliver(url, allow="127.0.0.3/32", resolver=resolver, proxy=proxy_url(proxy))
    second = await deliver(url, allow="127.0.0.3/32", resolver=resolver, proxy=proxy_url(proxy))
    assert (first.status, second.failure_class) == (200, "blocked")
    assert proxy.seen == [f"POST http://127.0.0.3:{allowed.port}/hook HTTP/1.1"]
    assert f"host: hooks.example:{allowed.port}" in allowed.heads[0].lower()
    assert forbidden.connections == 0


@pytest.mark.parametrize(
    "host", [FORBIDDEN, "2130706434", "[::ffff:127.0.0.2]", "localhost", "named"]
)
async def test_forbidden_target_is_refused_before_the_proxy(
    listen: Listen, proxy: ConnectProxy, host: str
) -> None:
    """A forbidden target, however written or named, is blocked without contacting the proxy."""
    target = await listen(FORBIDDEN)
    resolver = ScriptedResolver([FORBIDDEN]) if host == "named" else None
    url = target.url("hooks.example" if host == "named" else host)
    outcome = await deliver(url, allow="127.0.0.3/32", resolver=resolver, proxy=proxy_url(proxy))
    assert_blocked(outcome)
    assert ALLOW_VAR in outcome.message or "unusual spelling" in outcome.message
    assert (proxy.connections, target.connections) == (0, 0)


async def test_https_target_is_tunnelled_with_connect(listen: Listen, proxy: ConnectProxy) -> None:
    """An https:// target goes through a CONNECT tunnel to the checked address (the receiver
    here speaks plain HTTP, so the TLS handshake fails after the tunnel is open)."""
    target = await listen(ALLOWED)
    url = target.url().replace("http:", "https:")
    outcome = await deliver(url, allow="127.0.0.3/32", proxy=proxy_url(proxy))
    assert outcome.status == 0 and outcome.failure_class != "blocked"
    assert proxy.seen == [f"CONNECT 127.0.0.3:{target.port} HTTP/1.1"]
    assert target.heads == ["<tls>"]


@pytest.mark.parametrize("url", ["http://[::1/?token=s3cr3t", "ftp://127.0.0.3/x?token=s3cr3t"])
async def test_unusable_url_with_a_proxy_is_an_invalid_url(proxy: ConnectProxy, url: str) -> None:
    """A URL the proxy path cannot address is a failure value that does not echo the URL."""
    outcome = await deliver(url, allow="127.0.0.3/32", proxy=proxy_url(proxy))
    assert (outcome.status, outcome.failure_class, outcome.message) == (0, "connect", "invalid URL")
    assert proxy.connections == 0


async def test_unreachable_proxy_is_a_connect_failure_without_credentials(
    listen: Listen,
) -> None:
    """A proxy that is down fails the attempt as connect, and its password is not recorded."""
    target = await listen(ALLOWED)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = f"http://agent:s3cr3t@127.0.0.1:{port}"
    outcome = await deliver(target.url(), allow="127.0.0.3/32", proxy=proxy)
    assert (outcome.status, outcome.failure_class) == (0, "connect")
    assert "s3cr3t" not in outcome.message and "s3cr3t" not in str(outcome.request_headers)
    assert target.connections == 0


async def test_wrong_proxy_credentials_deliver_nothing(listen: Listen, proxy: ConnectProxy) -> None:
    """A proxy that refuses the credentials answers 407, and the receiver sees nothing."""
    target = await listen(ALLOWED)
    outcome = await deliver(target.url(), allow="127.0.0.3/32", proxy=proxy_url(proxy, "agent:no"))
    assert (outcome.status, outcome.failure_class) == (407, "http_status")
    assert target.connections == 0


# -- other ranges, inside a private network namespace -------------------------------------------

# (address on the namespace's loopback, the allow list that opens it)
NAMESPACE_ADDRESSES = [
    ("10.1.2.3", "10.1.2.3/32"),
    ("172.16.5.4", "172.16.0.0/12"),
    ("192.168.7.8", "192.168.7.8/32"),
    ("169.254.169.254", "169.254.169.254/32"),
    ("100.64.0.1", "100.64.0.0/10"),
    ("198.18.0.1", "198.18.0.1/32"),
    ("192.0.2.1", "192.0.2.0/24"),
    ("198.51.100.1", "198.51.100.1/32"),
    ("203.0.113.1", "203.0.113.1/32"),
    ("192.0.0.8", "192.0.0.8/32"),
    ("240.0.0.1", "240.0.0.0/4"),
    ("fd00::1", "fd00::/8"),
    ("fd00:ec2::254", "fd00:ec2::254/128"),
    ("2001:db8::1", "2001:db8::/32"),
    ("100::1", "100::/64"),
    ("64:ff9b::a00:1", "64:ff9b::/96,10.0.0.1/32"),
    ("2002:a00:1::1", "2002::/16,10.0.0.1/32"),
]

NAMESPACE_PROBE = r"""
import asyncio, json, sys
from homing.config import Settings
from homing.delivery.sender import Request, Sender

async def send(url, allow):
    async with Sender(Settings(request_timeout=3.0, allow_networks=allow)) as sender:
        return await sender.send(Request(url, b"{}", {}))

async def main(pairs):
    hits = {}
    servers = []
    for address, _ in pairs:
        hits[address] = 0
        async def handle(reader, writer, address=address):
            hits[address] += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
        servers.append(await asyncio.start_server(handle, address, 8080))
    report = {}
    for address, allow in pairs:
        url = f"http://[{address}]:8080/" if ":" in address else f"http://{address}:8080/"
        row = {"default": (await send(url, "")).failure_class}
        if ":" not in address:
            row["mapped"] = (await send(f"http://[::ffff:{address}]:8080/", allow)).failure_class
        row["hits_before_allowing"] = hits[address]
        row["allowed"] = (await send(url, allow)).status
        row["hits"] = hits[address]
        report[address] = row
    for server in servers:
        server.close()
    print(json.dumps(report))

asyncio.run(main(json.loads(sys.argv[1])))
"""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh network namespace with its loopback up, deleted afterwards (skips when the
    machine cannot make one)."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed: cannot create a network namespace")
    name = f"homing-ssrf-{os.getpid()}-{secrets.token_hex(3)}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _ip("netns", "del", name)


def test_other_ranges_are_refused_inside_a_namespace(namespace: str) -> None:
    """Listeners on private, link-local (metadata), CGNAT, benchmarking, documentation,
    reserved, ULA, NAT64 and 6to4 addresses get nothing by default (nor via IPv4-mapped
    forms) and get the delivery once their network is allowed."""
    usable = []
    for address, allow in NAMESPACE_ADDRESSES:
        prefix = "128" if ":" in address else "32"
        if _ip("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", "lo").returncode == 0:
            usable.append((address, allow))
    missing = {a for a, _ in NAMESPACE_ADDRESSES} - {a for a, _ in usable}
    assert missing <= {"240.0.0.1"}, missing  # some kernels refuse class E addresses
    probe = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            sys.executable,
            "-c",
            NAMESPACE_PROBE,
            json.dumps(usable),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    for address, _ in usable:
        row = report[address]
        assert row["default"] == "blocked", (address, row)
        assert row.get("mapped", "blocked") == "blocked", (address, row)
        assert row["hits_before_allowing"] == 0, (address, row)
        assert (row["allowed"], row["hits"]) == (204, 1), (address, row)


# -- endpoint URLs through the API -------------------------------------------------------------


def _sqlite(directory: Path) -> str:
    return "sqlite:///" + str(directory / "homing.db")


async def test_api_refuses_tricky_endpoint_urls(tmp_path: Path, api_factory: ApiFactory) -> None:
    """Creating an endpoint with user info or an odd address spelling is a 422 on body.url."""
    async with api_factory(_sqlite(tmp_path)) as api:
        app = (await api.post("/api/v1/app", json={"name": "a"})).json()["id"]
        for url in ["http://user:pw@hooks.example/", "http://2130706433/", "http://a\\@b/"]:
            resp = await api.post(f"/api/v1/app/{app}/endpoint", json={"url": url})
            assert resp.status_code == 422, resp.text
            assert resp.json()["detail"][0]["loc"] == ["body", "url"]
        ok = await api.post(f"/api/v1/app/{app}/endpoint", json={"url": "http://127.0.0.1:9/"})
        assert ok.status_code == 201, ok.text  # addresses are judged at delivery time


async def test_https_only_refuses_plain_http_endpoints(
    tmp_path: Path, api_factory: ApiFactory
) -> None:
    """With https_only, creating, replacing or patching to an http:// URL is a 422 on body.url,
    naming the setting; https:// URLs are accepted."""
    async with api_factory(_sqlite(tmp_path), https_only=True) as api:
        app = (await api.post("/api/v1/app", json={"name": "a"})).json()["id"]
        eps = f"/api/v1/app/{app}/endpoint"
        made = await api.post(eps, json={"url": "https://hooks.example/"})
        assert made.status_code == 201, made.text
        ep = made.json()["id"]
        refused = [
            await api.post(eps, json={"url": "http://hooks.example/"}),
            await api.put(f"{eps}/{ep}", json={"url": "http://hooks.example/"}),
            await api.put(f"{eps}/new-uid", json={"url": "http://hooks.example/"}),
            await api.patch(f"{eps}/{ep}", json={"url": "http://hooks.example/"}),
        ]
        for resp in refused:
            assert resp.status_code == 422, resp.text
            [error] = resp.json()["detail"]
            assert error["loc"] == ["body", "url"] and "HOMING_HTTPS_ONLY" in error["msg"]
        assert (await api.patch(f"{eps}/{ep}", json={"description": "d"})).status_code == 200
        assert (await api.get(f"{eps}/{ep}")).json()["url"] == "https://hooks.example/"
