"""One signed webhook POST, turned into an ``Outcome`` value (never an exception).

Guarantees, whatever the receiver does:

- the exact stored body bytes are signed and sent (never re-serialised);
- ONE deadline (``settings.request_timeout``) covers connecting, the headers and the body;
- redirects are never followed (a 3xx is the failure class ``redirect``);
- at most ``RESPONSE_BODY_LIMIT`` bytes of the answer are read and nothing is decompressed,
  so a huge or zip-bomb answer costs 64 KiB;
- request headers are stored redacted (``signing.redact_headers``).

Two transports: direct deliveries go through ``http1.Client`` (lean keep-alive HTTP/1.1 on
asyncio, several times cheaper per request than a general client); deliveries through the
egress proxy, and any injected session or connector, go through aiohttp.

Egress safety (``homing.ssrf``): every direct connection goes to an address the guard allowed
(``settings.allow_networks`` re-allows networks), literal IPs included, and the socket connects
to that very address; a refusal is the failure class ``blocked`` with a message saying how to
allow it. With ``settings.proxy`` every request goes through that HTTP proxy, and the target is
resolved and checked *here* first and the request addressed to the checked IP (``Host`` and
TLS name keep the original host), so the proxy never resolves, and cannot rebind, the name.

The transport is injectable: pass a ready ``aiohttp.ClientSession`` or a ``connector_factory``
(either replaces the connect-time guard: build it with ``ssrf.build_connector``), or just a
``resolver`` that answers names for the guard (tests).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from homing import __version__
from homing.config import Settings
from homing.core.keys import live_keys
from homing.core.models import Endpoint, Message
from homing.core.states import FailureClass, Outcome
from homing.delivery import http1
from homing.errors import ConfigError
from homing.signing import github_signature, redact_headers, signature_header
from homing.ssrf import (
    BlockedAddressError,
    GuardedConnector,
    GuardedResolver,
    Network,
    build_connector,
    parse_networks,
    proxy_endpoint,
)

__all__ = [
    "RESPONSE_BODY_LIMIT",
    "USER_AGENT",
    "BlockedAddressError",
    "ConnectorFactory",
    "Proxy",
    "Request",
    "Sender",
    "build_request",
    "classify",
    "default_connector",
    "describe",
    "parse_retry_after",
]

RESPONSE_BODY_LIMIT = 64 * 1024
USER_AGENT = f"Homing/{__version__}"

_CHUNK = 16 * 1024
_MESSAGE_LIMIT = 500
# Retry-After values longer than this are all "far too long"; the policy caps them anyway.
_MAX_RETRY_AFTER_DIGITS = 12
# Headers Homing owns: an endpoint's custom headers may not replace them (or the framing).
_RESERVED = frozenset(
    {
        "content-type",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
    }
)

ConnectorFactory = Callable[[], aiohttp.BaseConnector]


@dataclass(frozen=True, slots=True)
class Request:
    """One POST ready to go: the URL, the exact body bytes and every header, signature included."""

    url: str
    body: bytes
    headers: dict[str, str]


def build_request(message: Message, endpoint: Endpoint, now: datetime) -> Request:
    """The signed POST of ``message`` to ``endpoint`` at ``now``.

    Signs with every key of the endpoint still live at ``now`` (one ``v1,`` entry each), with
    the current key in ``X-Hub-Signature-256`` too when the endpoint asks for it, and adds the
    endpoint's custom headers, except those Homing sets itself. Raises
    ``signing.InvalidSecretError`` when the endpoint has no live key or a key is malformed.
    """
    timestamp = int(now.timestamp())
    body = message.payload.encode("utf-8")
    keys = [secret.key for secret in live_keys(endpoint.secrets, now)]
    headers = {k: v for k, v in endpoint.headers.items() if k.lower() not in _RESERVED}
    headers.update(
        {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(keys, message.id, timestamp, body),
        }
    )
    if endpoint.github_signature and not keys[0].startswith("whsk_"):  # HMAC keys only
        headers["x-hub-signature-256"] = github_signature(keys[0], body)
    return Request(url=endpoint.url, body=body, headers=headers)


def default_connector(
    resolver: AbstractResolver | None = None, allow: Sequence[Network] = ()
) -> aiohttp.TCPConnector:
    """A pooled TCP connector behind the SSRF guard: only globally routable addresses and the
    ``allow`` networks are reached. ``resolver`` answers names (aiohttp's threaded one if None)."""
    return GuardedConnector(GuardedResolver(allow, resolver))


@dataclass(frozen=True, slots=True)
class Proxy:
    """The egress proxy: its URL without credentials, and the headers that carry them."""

    url: URL
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Proxy | None:
        """``settings.proxy`` parsed, or None; raises ``ConfigError`` when it is not usable."""
        if settings.proxy is None:
            return None
        text = settings.proxy.reveal()
        host, port = proxy_endpoint(text)
        url = URL(text)
        headers = {}
        if url.user is not None:  # yarl gives them percent-decoded
            if ":" in url.user:
                raise ConfigError("proxy: the user name must not contain ':' (Basic auth)")
            credentials = aiohttp.encode_basic_auth(url.user, url.password or "")
            headers["Proxy-Authorization"] = credentials
        return cls(URL.build(scheme="http", host=host, port=port, encoded=True), headers)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), or None.

    A date in the past gives 0; an unreadable value gives None. Never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        return float(int(digits)) if len(digits) <= _MAX_RETRY_AFTER_DIGITS else 1e12
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify(exc: BaseException) -> FailureClass:
    """The failure class of an exception raised while sending."""
    if isinstance(exc, TimeoutError):  # includes aiohttp's ServerTimeoutError
        return "timeout"
    if _caused_by(exc, BlockedAddressError):
        return "blocked"
    if isinstance(exc, aiohttp.ClientConnectorDNSError | http1.DnsError):
        return "dns"
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch | ssl.SSLError):
        return "tls"
    if isinstance(
        exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError | http1.InvalidResponse
    ):
        return "invalid_response"
    return "connect"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return _cause(exc, kind) is not None


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of ``kind`` in its chain (``__cause__`` / ``os_error``)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short walk: exception chains are shallow, and may be cyclic
        if seen is None or isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or getattr(seen, "os_error", None)
    return None


_URL = re.compile(r"(https?://[^/\s?#]*)[^\s]*", re.IGNORECASE)


def describe(exc: BaseException, timeout: float) -> str:
    """A short text for the attempt record; never the URL (its query may hold a token)."""
    if isinstance(exc, TimeoutError):
        return f"no complete response within {timeout:g} s"
    if isinstance(exc, aiohttp.InvalidURL | http1.InvalidTarget):
        return "invalid URL"
    blocked = _cause(exc, BlockedAddressError)
    if blocked is not None:  # its own text says why and how to allow the address
        return str(blocked)[:_MESSAGE_LIMIT]
    if isinstance(exc, aiohttp.ClientResponseError):  # its str() carries the URL
        return f"{type(exc).__name__}: {exc.message}"[:_MESSAGE_LIMIT]
    # some aiohttp errors name the URL in their text: keep the host, drop path and query
    text = _URL.sub(lambda m: m.group(1) + "…", str(exc))
    return f"{type(exc).__name__}: {text}"[:_MESSAGE_LIMIT]


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most ``limit`` bytes of a response body, read in chunks (never the whole body)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(min(_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _answered(
    status: int, body: bytes, headers: Mapping[str, str], now: datetime
) -> tuple[FailureClass | None, str, float | None]:
    """Failure class, message and Retry-After seconds of a response that arrived."""
    retry_after = parse_retry_after(headers.get("retry-after"), now)  # names in lower case
    if 200 <= status < 300:
        return None, "", retry_after
    if 300 <= status < 400:
        return "redirect", f"HTTP {status}: redirects are not followed", retry_after
    return "http_status", f"HTTP {status}", retry_after


class Sender:
    """Sends ``Request`` values and reports each as an ``Outcome``; use ``async with`` or
    ``close()``. A session passed in stays the caller's to close (and should be made with
    ``auto_decompress=False``); otherwise one is made on first use from ``connector_factory``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        connector_factory: ConnectorFactory | None = None,
        resolver: AbstractResolver | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Raises ``ConfigError`` for unusable ``allow_networks`` or ``proxy`` settings."""
        self._timeout = settings.request_timeout
        self._session = session
        self._owns_session = session is None
        self._connector_factory = connector_factory or (lambda: build_connector(settings, resolver))
        self._proxy = Proxy.from_settings(settings)
        # checks targets before they are handed to the proxy (the connector only sees the proxy)
        self._target_guard = GuardedResolver(parse_networks(settings.allow_networks), resolver)
        self._clock = clock or (lambda: datetime.now(UTC))
        # direct deliveries go through the lean client; the proxy path and injected
        # transports through aiohttp
        direct = session is None and connector_factory is None and self._proxy is None
        self._http = http1.Client(self._target_guard) if direct else None

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session this sender made (a later ``send`` makes a new one)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._http is not None:
            await self._http.close()
        await self._target_guard.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=self._connector_factory(),
                # the deadline is ``send``'s own (one timer per request, around everything)
                timeout=aiohttp.ClientTimeout(),
                auto_decompress=False,
                # we never decompress, so do not invite compressed answers
                skip_auto_headers=("Accept-Encoding",),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # receivers' cookies are never sent back
            )
        return self._session

    async def send(self, request: Request) -> Outcome:
        """POST ``request`` once and describe what happened. Never raises (but cancellation)."""
        started = time.perf_counter()
        stored_headers = redact_headers(request.headers)
        try:
            # the one deadline: connecting (resolving included), the headers and the body
            async with asyncio.timeout(self._timeout):
                status, body, headers = await self._post(request)
        except Exception as exc:  # every failure must reach the state machine as a value
            return Outcome(
                status=0,
                failure_class=classify(exc),
                message=describe(exc, self._timeout),
                duration_ms=_ms_since(started),
                request_headers=stored_headers,
            )
        failure, message, retry_after = _answered(status, body, headers, self._clock())
        return Outcome(
            status=status,
            failure_class=failure,
            message=message,
            # NUL is valid in a response but not in a PostgreSQL text column
            body=body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
            duration_ms=_ms_since(started),
            retry_after=retry_after,
            request_headers=stored_headers,
        )

    async def _post(self, request: Request) -> tuple[int, bytes, Mapping[str, str]]:
        if self._http is not None:
            answer = await self._http.post(
                request.url, request.headers, request.body, RESPONSE_BODY_LIMIT
            )
            return answer.status, answer.body, answer.headers
        url: str | URL = request.url
        headers, tls_name = request.headers, None
        proxy_url, proxy_headers = None, None
        if self._proxy is not None:
            url, headers, tls_name = await self._pinned(request)
            proxy_url, proxy_headers = self._proxy.url, self._proxy.headers
        async with self._client().post(
            url,
            data=request.body,
            headers=headers,
            allow_redirects=False,
            proxy=proxy_url,
            proxy_headers=proxy_headers,
            server_hostname=tls_name,
        ) as response:
            # leaving the block with the body unread closes the connection instead of
            # draining it, so an endless body costs no more than the bytes read here
            body = await _read_capped(response.content, RESPONSE_BODY_LIMIT)
            return response.status, body, response.headers

    async def _pinned(self, request: Request) -> tuple[URL, dict[str, str], str | None]:
        """The request addressed to a checked IP of its host: URL, headers with the original
        ``Host``, and the name TLS must verify (https only). Raises ``BlockedAddressError``."""
        try:
            url = URL(request.url)
        except ValueError as exc:
            raise aiohttp.InvalidURL(request.url) from exc
        if url.raw_host is None or url.port is None or url.scheme not in ("http", "https"):
            raise aiohttp.InvalidURL(request.url)
        answers = await self._target_guard.resolve(url.raw_host, url.port, socket.AF_UNSPEC)
        owned = {"host", "proxy-authorization"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in owned}
        headers["Host"] = url.host_port_subcomponent or url.raw_host
        tls_name = url.raw_host.rstrip(".") if url.scheme == "https" else None
        if tls_name is None and self._proxy is not None:
            # a plain-http request goes to the proxy as is (aiohttp sends ``proxy_headers``
            # only with CONNECT), so it carries the proxy credentials itself
            headers.update(self._proxy.headers)
        return url.with_host(answers[0]["host"]), headers, tls_name


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
