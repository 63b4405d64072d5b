"""The lean delivery client (``homing.delivery.http1``) against raw TCP servers on 127.0.0.1
that answer byte for byte what each test scripts: keep-alive and its limits, framing (length,
chunked, until close, interim 1xx), the read cap, broken answers, the egress guard."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homing.delivery.http1 import (
    Client,
    Disconnected,
    InvalidResponse,
    InvalidTarget,
    encode_request,
    target_of,
)
from homing.ssrf import BlockedAddressError, GuardedResolver, parse_networks

Answer = Callable[[int], bytes]  # request number on the connection -> bytes to send back


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def serving(
    answer: Answer, *, close_after: int | None = None, hang: bool = False
) -> AsyncIterator[Server]:
    """A server answering each request with ``answer(n)``; it closes a connection after
    ``close_after`` answers, or never answers when ``hang``."""
    server = Server()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        writers.append(writer)
        try:
            n = 0
            while close_after is None or n < close_after:
                server.requests.append(await read_request(reader))
                if hang:
                    await asyncio.sleep(3600)
                reply = answer(n)
                if not reply:  # hang up without answering
                    break
                writer.write(reply)
                await writer.drain()
                n += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        for writer in writers:
            writer.close()
        listener.close()
        await listener.wait_closed()


def ok(body: bytes = b"ok", extra: bytes = b"") -> Answer:
    return lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    made = Client(GuardedResolver(parse_networks("127.0.0.1/32")))
    try:
        yield made
    finally:
        await made.close()


async def post(client: Client, url: str, limit: int = 65536) -> tuple[int, bytes]:
    async with asyncio.timeout(5):
        answer = await client.post(url, {"content-type": "application/json"}, b'{"n":1}', limit)
    return answer.status, answer.body


async def test_request_bytes_are_exact_and_the_connection_is_kept_alive(client: Client) -> None:
    async with serving(ok()) as server:
        assert await post(client, server.url("/a?x=1")) == (200, b"ok")
        assert await post(client, server.url("/b")) == (200, b"ok")
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port)
    assert b"content-type: application/json\r\n" in first
    assert first.endswith(b'Content-Length: 7\r\n\r\n{"n":1}')


async def test_idle_connection_closed_by_the_server_is_replaced_once(client: Client) -> None:
    """The server closes each connection after one answer (a keep-alive timeout): the next
    request finds the pooled connection dead and goes out once more on a fresh one."""
    async with serving(ok(), close_after=1) as server:
        assert await post(client, server.url()) == (200, b"ok")
        await asyncio.sleep(0.05)  # the close reaches the idle connection
        assert await post(client, server.url()) == (200, b"ok")
    assert server.connections == 2
    assert len(server.requests) == 2


async def test_pooled_connection_dropped_without_an_answer_is_retried_once(
    client: Client,
) -> None:
    """The server takes the second request on a kept-alive connection and hangs up without
    a byte (a keep-alive race): the request goes out once more on a new connection."""
    async with serving(lambda n: ok()(n) if n == 0 else b"") as server:
        assert await post(client, server.url()) == (200, b"ok")
        assert await post(client, server.url()) == (200, b"ok")
    assert server.connections == 2
    assert len(server.requests) == 3  # the dropped one, then the same request again


async def test_connection_close_answer_is_not_reused(client: Client) -> None:
    async with serving(ok(extra=b"Connection: close\r\n"), close_after=1) as server:
        await post(client, server.url())
        await post(client, server.url())
    assert server.connections == 2


async def test_chunked_answer_and_header_names_in_lower_case(client: Client) -> None:
    chunked = (
        b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with serving(lambda n: chunked) as server:
        async with asyncio.timeout(5):
            answer = await client.post(server.url(), {}, b"", 65536)
    assert (answer.status, answer.body) == (503, b"hello world")
    assert answer.headers["retry-after"] == "7"


async def test_answer_delimited_by_closing_the_connection(client: Client) -> None:
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    async with serving(lambda n: until_close, close_after=1) as server:
        assert await post(client, server.url()) == (200, b"all of it")


async def test_interim_answers_are_skipped(client: Client) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    async with serving(lambda n: interim + ok(b"final")(n)) as server:
        assert await post(client, server.url()) == (200, b"final")


async def test_body_past_the_limit_is_cut_and_the_connection_dropped(client: Client) -> None:
    async with serving(ok(b"x" * 100_000)) as server:
        assert await post(client, server.url(), limit=1000) == (200, b"x" * 1000)
        await post(client, server.url(), limit=1000)
    assert server.connections == 2


@pytest.mark.parametrize(
    "reply",
    [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"],
    ids=["garbage", "broken-off"],
)
async def test_broken_answers_are_invalid_responses(client: Client, reply: bytes) -> None:
    async with serving(lambda n: reply, close_after=1) as server:
        with pytest.raises(InvalidResponse):
            await post(client, server.url())


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 10_000,
    ],
    ids=["one-huge-header", "endless-interim-answers"],
)
async def test_headers_are_read_only_up_to_a_bound(client: Client, reply: bytes) -> None:
    async with serving(lambda n: reply) as server:
        with pytest.raises(InvalidResponse, match="headers exceed"):
            await post(client, server.url())


async def test_trailers_are_bounded_and_never_replace_headers(client: Client) -> None:
    """Trailers after a chunked body are ignored (a Retry-After there changes nothing), and a
    trailer that never ends is cut, not buffered until the deadline."""
    ends = b"HTTP/1.1 429 Slow\r\nTransfer-Encoding: chunked\r\nRetry-After: 5\r\n\r\n"
    ends += b"2\r\nok\r\n0\r\nRetry-After: 99999\r\n\r\n"
    async with serving(lambda n: ends) as server:
        async with asyncio.timeout(5):
            answer = await client.post(server.url(), {}, b"", 65536)
    assert (answer.status, answer.body, answer.headers["retry-after"]) == (429, b"ok", "5")
    endless = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: "
    endless += b"a" * 2_000_000
    async with serving(lambda n: endless) as server:
        with pytest.raises(InvalidResponse, match="headers exceed"):
            await post(client, server.url(), limit=1000)


@pytest.mark.parametrize("coding", [b"chunked", b"Chunked", b"gzip, CHUNKED"])
async def test_chunked_answer_cut_off_is_invalid_whatever_the_spelling(
    client: Client, coding: bytes
) -> None:
    cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n10\r\npartial" % coding
    async with serving(lambda n: cut, close_after=1) as server:
        with pytest.raises(InvalidResponse):
            await post(client, server.url())


async def test_answer_beyond_the_one_asked_for_spoils_the_connection(client: Client) -> None:
    """Two answers to one request: the first is the outcome, untouched by the second, and the
    connection is not reused (its next answer could be the stray one)."""
    two = ok(b"first", b"X-N: 1\r\n")(0) + ok(b"second", b"X-N: 2\r\n")(0)
    async with serving(lambda n: two) as server:
        async with asyncio.timeout(5):
            answer = await client.post(server.url(), {}, b"", 65536)
        await asyncio.sleep(0.05)
        assert (answer.body, answer.headers["x-n"]) == (b"first", "1")
        await post(client, server.url())
    assert server.connections == 2


async def test_fresh_connection_closed_without_an_answer_is_not_retried(client: Client) -> None:
    async with serving(ok(), close_after=0) as server:
        with pytest.raises(Disconnected):
            await post(client, server.url())
    assert server.connections == 1


async def test_cancelled_exchange_drops_its_connection(client: Client) -> None:
    async with serving(ok(), hang=True) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.post(server.url(), {}, b"", 100)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.post(server.url(), {}, b"", 100)
    assert server.connections == 2  # the first, cut mid-exchange, was never reused


async def test_guard_refuses_before_any_connection() -> None:
    refusing = Client(GuardedResolver(parse_networks("")))
    try:
        async with serving(ok()) as server:
            with pytest.raises(BlockedAddressError):
                await post(refusing, server.url())
        assert server.connections == 0
    finally:
        await refusing.close()


@pytest.mark.parametrize(
    "url",
    ["ftp://h/x", "http:///x", "http://[::1/x", "nonsense"],
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidTarget):
        target_of(url)


@pytest.mark.parametrize("url", ["http://h/a b", "http://h/a\r\nX: y", "http://h/?q=a\r\nb c"])
def test_spaces_and_line_breaks_in_urls_are_percent_encoded(url: str) -> None:
    """Nothing in a URL can end the request line or add a header: the request line is
    exactly three words and one line."""
    line, host, rest = target_of(url).head.split(b"\r\n")
    assert len(line.split(b" ")) == 3 and host == b"Host: h" and rest == b""


def test_targets_keep_host_port_path_and_tls_name() -> None:
    v6 = target_of("https://[::1]:8443/p?q=1")
    assert (v6.host, v6.port, v6.tls_name) == ("::1", 8443, "::1")
    assert v6.head == b"POST /p?q=1 HTTP/1.1\r\nHost: [::1]:8443\r\n"
    plain = target_of("http://Example.COM/")
    assert (plain.host, plain.port, plain.tls_name) == ("example.com", 80, None)
    assert plain.head.endswith(b"Host: example.com\r\n")


@pytest.mark.parametrize(
    "headers", [{"x-a": "1\r\nX-Injected: 1"}, {"x-a\r\nb": "1"}, {"": "1"}, {"x a": "1"}]
)
def test_headers_that_could_split_the_request_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_request(target_of("http://h/"), headers, b"")


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homing test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_delivery_verifies_the_certificate_and_keeps_the_connection(
    tmp_path: Path,
) -> None:
    """Over TLS the answer arrives and the connection is reused when the certificate is
    trusted; with the system's trust store alone the same server is refused (TLS error)."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(ok(b"secure")(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}/hook"
    guard = GuardedResolver(parse_networks("127.0.0.1/32"))
    trusting = Client(guard, ssl.create_default_context(cafile=str(cert)))
    default = Client(guard)
    try:
        assert await post(trusting, url) == (200, b"secure")
        assert await post(trusting, url) == (200, b"secure")
        assert connections == 1
        with pytest.raises(ssl.SSLError):
            await post(default, url)
    finally:
        await trusting.close()
        await default.close()
        listener.close()
        await listener.wait_closed()
