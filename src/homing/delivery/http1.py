"""A lean HTTP/1.1 client for webhook POSTs, on asyncio protocols and ``httptools``' parser.

Why not aiohttp's ``ClientSession`` here: a delivery is one POST of ready bytes whose answer
matters only up to 64 KiB, and the session's general machinery (request and response objects,
header merging, payload registry, cookie and timeout handling) cost four to five times the
CPU of the exchange itself (``bench/``, ``docs/architecture.md``). aiohttp stays the client
for deliveries through the egress proxy (CONNECT tunnels) and for injected sessions.

What the ``Client`` guarantees:

- **Egress guard at connect time**: every connection goes to an address the ``GuardedResolver``
  returned for the URL's host (literal IPs checked without a lookup), and the socket connects
  to exactly that address, so a name cannot be re-resolved (rebound) in between. Addresses are
  tried in the order given until one connects.
- **Bounded reads**: at most ``limit`` body bytes are kept; past that the connection is closed
  rather than drained.
  Status lines and headers, interim (1xx) answers and trailers included, may take
  ``HEAD_LIMIT`` bytes (and chunk framing a few bytes per body byte); trailers are ignored.
  An answer the server sends beyond the one asked for makes the connection unusable.
  Nothing is decompressed; nothing is followed (a 3xx is returned like any answer).
- **Keep-alive**: an exchange that ended cleanly on a persistent connection returns it to a
  per-origin pool (at most ``IDLE_PER_ORIGIN`` idle, each for at most ``KEEPALIVE`` seconds).
  A pooled connection the server closed before answering is replaced once by a fresh one (the
  request may have reached the server: deliveries are at-least-once anyway).
- **No deadline of its own**: the caller wraps ``post`` in its one deadline; a cancelled
  exchange closes its connection.

Failures raise: ``BlockedAddressError`` (from the guard), ``DnsError``, ``OSError`` for
connecting, ``ssl.SSLError`` for TLS, ``InvalidResponse`` for an answer that is not HTTP/1.x
or breaks off, and ``Disconnected`` for a connection closed without any answer.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import cast

import httptools
from yarl import URL

from homing.ssrf import BlockedAddressError, GuardedResolver

__all__ = [
    "Client",
    "Disconnected",
    "DnsError",
    "InvalidResponse",
    "InvalidTarget",
    "Response",
    "target_of",
]

HEAD_LIMIT = 64 * 1024  # bytes of status lines and headers, interim answers included
FRAMING_PER_BYTE = 8  # chunk framing allowed per body byte kept (b"1\r\nx\r\n" is 6)
IDLE_PER_ORIGIN = 64  # idle keep-alive connections kept per scheme, host and port
KEEPALIVE = 15.0  # seconds an idle connection is kept
_SWEEP_EVERY = 5.0  # seconds between sweeps of idle connections past KEEPALIVE
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110 token)
_BREAK = re.compile(r"[\r\n\x00]")  # what may not appear in a header value


class DnsError(OSError):
    """The host name could not be resolved."""


class InvalidResponse(Exception):
    """The server's answer is not valid HTTP/1.x."""


class Disconnected(ConnectionError):
    """The connection closed before any answer arrived."""


class InvalidTarget(ValueError):
    """The URL cannot be addressed (not http/https, no host)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart once: where to connect and the request line with its Host header."""

    scheme: str
    host: str  # as resolved and checked: IDNA-encoded, IPv6 without brackets
    port: int
    tls_name: str | None  # the name TLS verifies (https only)
    head: bytes  # b"POST /path?query HTTP/1.1\r\nHost: ...\r\n"

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    """The ``Target`` of ``url``; raises ``InvalidTarget``."""
    try:
        parsed = URL(url)
        host, port = parsed.raw_host, parsed.port
    except (ValueError, TypeError) as exc:
        raise InvalidTarget("invalid URL") from exc
    if parsed.scheme not in ("http", "https") or not host or port is None:
        raise InvalidTarget("invalid URL")
    path = parsed.raw_path_qs or "/"
    host_header = parsed.host_port_subcomponent or host
    if any(c in path or c in host_header for c in "\r\n\x00 "):
        raise InvalidTarget("invalid URL")
    head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii", "strict")
    tls_name = host.rstrip(".") if parsed.scheme == "https" else None
    return Target(parsed.scheme, host, port, tls_name, head)


def encode_request(target: Target, headers: dict[str, str], body: bytes) -> bytes:
    """The request bytes: head, ``headers`` (which must not set framing headers), length, body.

    Raises ``ValueError`` for a header name or value that could split the request."""
    lines = [target.head]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _BREAK.search(value):
            raise ValueError("header name or value not allowed")
        lines.append(f"{name}: {value}\r\n".encode())
    lines.append(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii"))
    lines.append(body)
    return b"".join(lines)


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of a repeated header
    body: bytes  # at most the limit asked for


@dataclass(slots=True, eq=False)
class _Exchange:
    limit: int
    waiter: asyncio.Future[Response]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    headers_done: bool = False
    got_bytes: bool = False
    head_size: int = 0  # bytes of headers handed over by the parser
    received: int = 0  # bytes received in all
    body_seen: int = 0  # body bytes the parser handed over, kept or not
    unparsed: int = 0  # bytes received since the last header block ended, if it has not


class _Connection(asyncio.Protocol):
    """One connection; at most one exchange at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.reusable = False
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        exchange.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidResponse("the server switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponse(f"not an HTTP/1.x answer ({exc})"))
            return
        # bound what is not body: the parser holds on to the bytes of an unfinished header
        # block or trailer, and hands over headers (interim answers' and trailers included);
        # chunk framing may add a few bytes per body byte kept
        exchange.unparsed = 0 if exchange.headers_done else exchange.unparsed + len(data)
        exchange.received += len(data)
        framing = exchange.received - exchange.body_seen
        if max(exchange.head_size, exchange.unparsed) > HEAD_LIMIT or framing > (
            HEAD_LIMIT + FRAMING_PER_BYTE * exchange.limit
        ):
            self._fail(InvalidResponse(f"the answer's headers exceed {HEAD_LIMIT} bytes"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides what the answer was

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is None or exchange.waiter.done():
            return
        if exchange.headers_done and self._ends_at_close():
            self._finish()  # the body was delimited by the end of the connection
        elif exchange.got_bytes:
            self._fail(InvalidResponse("the connection closed before the answer was complete"))
        else:
            self._fail(Disconnected("the server closed the connection without answering"))

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.waiter.done():  # a second answer to one request
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.head_size += len(name) + len(value) + 4
        if exchange.headers_done or exchange.waiter.done():  # a trailer, or not ours
            return
        exchange.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        if not exchange.waiter.done():
            exchange.status = self.parser.get_status_code()
            exchange.headers_done = True

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.body_seen += len(body)
        room = exchange.limit - exchange.size
        if room > 0:
            exchange.chunks.append(body[:room])
            exchange.size += min(room, len(body))
        if exchange.size >= exchange.limit and not exchange.waiter.done():
            self._finish(reusable=False)  # enough: the rest is never read

    def on_message_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        if 100 <= exchange.status < 200:  # an interim answer: the final one follows
            exchange.headers.clear()
            exchange.headers_done = False
            return
        if not exchange.waiter.done():
            self._finish(reusable=self.parser.should_keep_alive())

    # -- the exchange ------------------------------------------------------------------------

    def _ends_at_close(self) -> bool:
        """Whether the answer's body is delimited by closing the connection (RFC 9112 6.3):
        no Content-Length, and no Transfer-Encoding whose last coding is chunked."""
        headers = self.exchange.headers if self.exchange else {}
        coding = headers.get("transfer-encoding", "").lower().rstrip(" \t")
        return "content-length" not in headers and not coding.endswith("chunked")

    def _finish(self, reusable: bool = False) -> None:
        exchange = self.exchange
        assert exchange is not None
        self.reusable = reusable and not self.closed
        body = b"".join(exchange.chunks)
        exchange.waiter.set_result(Response(exchange.status, exchange.headers, body))

    def _fail(self, error: Exception) -> None:
        exchange = self.exchange
        if exchange is not None and not exchange.waiter.done():
            exchange.waiter.set_exception(error)
        self.close()

    async def request(self, data: bytes, limit: int) -> Response:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.exchange = _Exchange(limit, loop.create_future())
        self.reusable = False
        self.transport.write(data)
        try:
            return await self.exchange.waiter
        finally:
            if not self.reusable:
                self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class Client:
    """POSTs over pooled HTTP/1.1 connections to addresses ``guard`` allows; ``close()`` it."""

    def __init__(self, guard: GuardedResolver, tls: ssl.SSLContext | None = None) -> None:
        self._guard = guard
        self._tls = tls or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._swept_at = time.monotonic()

    async def post(self, url: str, headers: dict[str, str], body: bytes, limit: int) -> Response:
        """POST ``body`` to ``url`` with ``headers``; the answer with at most ``limit`` body
        bytes. Raises what the module text lists (and ``InvalidTarget``, ``ValueError``)."""
        target = target_of(url)
        data = encode_request(target, headers, body)
        connection = self._pooled(target)
        if connection is not None:
            try:
                return await self._exchange(target, connection, data, limit)
            except Disconnected:
                pass  # closed while idle (a keep-alive timeout): once more, on a new one
        connection = await self._connect(target)
        return await self._exchange(target, connection, data, limit)

    async def _exchange(
        self, target: Target, connection: _Connection, data: bytes, limit: int
    ) -> Response:
        try:
            response = await connection.request(data, limit)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            self._put(target, connection)
        return response

    def _pooled(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE:
                connection.exchange = None
                return connection
            connection.close()
        return None

    def _put(self, target: Target, connection: _Connection) -> None:
        now = time.monotonic()
        connection.exchange = None
        connection.idle_since = now
        idle = self._idle.setdefault(target.origin, [])
        if len(idle) >= IDLE_PER_ORIGIN:
            connection.close()
        else:
            idle.append(connection)
        if now - self._swept_at >= _SWEEP_EVERY:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._swept_at = now
        for origin, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < KEEPALIVE]
            for connection in idle:
                if connection not in keep:
                    connection.close()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    async def _connect(self, target: Target) -> _Connection:
        try:
            answers = await self._guard.resolve(target.host, target.port, socket.AF_UNSPEC)
        except BlockedAddressError:
            raise
        except OSError as exc:
            raise DnsError(f"cannot resolve the host: {exc}") from exc
        loop = asyncio.get_running_loop()
        error: BaseException | None = None
        for answer in answers:
            try:
                _, protocol = await loop.create_connection(
                    _Connection,
                    host=answer["host"],
                    port=answer["port"],
                    family=answer["family"],
                    ssl=self._tls if target.tls_name is not None else None,
                    server_hostname=target.tls_name,
                )
            except ssl.SSLError:
                raise
            except OSError as exc:
                error = exc
                continue
            return protocol
        assert error is not None
        raise error

    async def close(self) -> None:
        """Close every idle connection (the next ``post`` opens new ones)."""
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
