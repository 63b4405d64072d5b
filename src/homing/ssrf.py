"""Egress safety: which addresses deliveries may reach, and the guard aiohttp connects through.

Three layers:

- ``is_forbidden`` (pure) refuses every address that is not globally routable, unless a network
  of ``HOMING_ALLOW_NETWORKS`` (``parse_networks``) contains it. IPv6 forms that embed an IPv4
  address are judged by the embedded address *and* refused as whole ranges unless allowed.
- ``check_endpoint_url`` refuses unusable or tricky URLs when an endpoint is saved. It never
  resolves names: the answer could change before the first delivery.
- ``GuardedResolver`` and ``GuardedConnector`` apply the policy at connect time to the very
  addresses aiohttp is about to connect to, names and literal IPs alike, so no second lookup can
  rebind a name in between. A refusal is a ``BlockedAddressError`` (an ``OSError``, which aiohttp
  wraps in ``ClientConnectorDNSError`` and the sender reports as the failure class ``blocked``).
"""

from __future__ import annotations

import re
import socket
import unicodedata
from collections.abc import Collection, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import idna
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.tracing import Trace
from yarl import URL

from homing.config import Settings
from homing.errors import ConfigError, HomingError

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
ALLOW_VAR = "HOMING_ALLOW_NETWORKS"


class BlockedAddressError(HomingError, OSError):
    """The destination is an address that deliveries may not reach."""


def _table(*rows: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ip_network(cidr), reason) for cidr, reason in rows)


# Order matters: the first match names the reason (broadcast before reserved 240/4).
_DENIED_V4 = _table(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "CGNAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_DENIED_V6 = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped IPv6"),
    ("::/96", "IPv4-compatible IPv6"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "IETF protocol assignment"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_GLOBAL_UNICAST_V6 = ip_network("2000::/3")
# forms carrying an IPv4 address in their low 32 bits (:: and ::1 are themselves, not forms)
_LOW32_FORMS = (
    (ip_network("::ffff:0:0/96"), "IPv4-mapped IPv6"),
    (ip_network("::/96"), "IPv4-compatible IPv6"),
    (ip_network("64:ff9b::/96"), "NAT64"),
)
_NOT_EMBEDDING = ip_network("::/127")
_SIXTOFOUR = ip_network("2002::/16")
_TEREDO = ip_network("2001::/32")
_LOW32 = 0xFFFFFFFF


def _embedded(ip: IPv6Address) -> list[tuple[str, IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of its form."""
    n = int(ip)
    for network, form in _LOW32_FORMS:
        if ip in network and ip not in _NOT_EMBEDDING:
            return [(form, IPv4Address(n & _LOW32))]
    if ip in _SIXTOFOUR:  # 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
        return [("6to4", IPv4Address((n >> 80) & _LOW32))]
    if ip in _TEREDO:  # server in bits 32-63, client inverted in the low 32 bits
        return [("Teredo", IPv4Address((n >> 64) & _LOW32)), ("Teredo", IPv4Address(~n & _LOW32))]
    return []


def is_forbidden(ip: Address, allow: Sequence[Network] = ()) -> str | None:
    """Why deliveries may not reach ``ip``, or None when they may.

    ``allow`` re-allows networks (an allowed network wins over the default denial). An IPv6 form
    embedding IPv4 is refused when the embedded address is (judged with the same ``allow``), and
    the whole form range is refused unless ``allow`` covers ``ip`` itself.
    """
    if isinstance(ip, IPv6Address):
        for form, inner in _embedded(ip):
            reason = is_forbidden(inner, allow)
            if reason is not None:
                article = "an" if reason[0].lower() in "aeiou" else "a"
                return f"{form} of {article} {reason} address"
    if any(ip in network for network in allow):
        return None
    for network, reason in _DENIED_V4 if isinstance(ip, IPv4Address) else _DENIED_V6:
        if ip in network:
            return reason
    if isinstance(ip, IPv6Address) and ip not in _GLOBAL_UNICAST_V6:
        return "reserved"
    return None


def parse_networks(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated CIDR list (``HOMING_ALLOW_NETWORKS``); a bare address is
    a /32 or /128. Raises ``ConfigError`` naming the first entry that is not a network."""
    networks: list[Network] = []
    for item in text.split(","):
        cidr = item.strip()
        if not cidr:
            continue
        try:
            networks.append(ip_network(cidr))
        except ValueError as exc:
            raise ConfigError(
                f"allow_networks: {cidr!r} is not a network in CIDR notation ({exc})"
            ) from exc
    return tuple(networks)


def _legacy_ipv4(host: str) -> IPv4Address | None:
    """The address a non-dotted-quad spelling means to the C library (``2130706433``,
    ``0x7f.1``, ``0177.0.0.1``, ``127.1``), or None when ``host`` is no such spelling."""
    bare = host.rstrip(".")
    try:
        return IPv4Address(socket.inet_aton(bare)) if bare.isascii() else None
    except OSError:
        return None


def literal_address(host: str) -> Address | None:
    """The IP address that the URL host ``host`` is, or None when it is a DNS name.

    Raises ``BlockedAddressError`` for a malformed IPv6 literal and for unusual IPv4 spellings
    (decimal, octal, hex, shortened, trailing dot): only ``a.b.c.d`` is accepted.
    """
    if ":" in host:
        try:
            return ip_address(host)
        except ValueError as exc:
            raise BlockedAddressError(f"{host!r} is not a valid IPv6 address") from exc
    try:
        return IPv4Address(host)  # strict: ASCII dotted quad, no leading zeros
    except ValueError:
        pass
    meant = _legacy_ipv4(host)
    if meant is None and not host.replace(".", "").isdigit():
        return None
    raise BlockedAddressError(
        f"{host!r} is an unusual spelling of an IPv4 address"
        + (f" ({meant})" if meant else "")
        + "; deliveries only go to addresses written as a.b.c.d"
    )


# -- endpoint URLs -----------------------------------------------------------------------------

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Zs"})


def _ascii_host(hostname: str) -> str:
    """The ASCII (IDNA) form of a URL host name; raises ``ValueError`` when it has none."""
    try:
        ascii_host = hostname if hostname.isascii() else idna.encode(hostname, uts46=True).decode()
    except idna.IDNAError as exc:
        raise ValueError("has a host that is not a valid (internationalised) domain name") from exc
    ascii_host = ascii_host.lower()
    if len(ascii_host) > 254 or not _HOSTNAME.fullmatch(ascii_host):
        raise ValueError("has a host that is not a valid domain name or IP address")
    if (_legacy_ipv4(ascii_host) or ascii_host.replace(".", "").isdigit()) and (
        ascii_host != hostname or not _is_dotted_quad(ascii_host)
    ):
        raise ValueError("spells an IPv4 address unusually; write it as a.b.c.d")
    return ascii_host


def _is_dotted_quad(host: str) -> bool:
    try:
        IPv4Address(host)
    except ValueError:
        return False
    return True


def _check_host(netloc: str, hostname: str) -> str:
    """The host as the HTTP client will see it; raises ``ValueError`` for a tricky one."""
    if "@" in netloc:
        raise ValueError("must not contain user information (user:password@)")
    if "%" in hostname:
        raise ValueError("must not percent-encode the host or give an IPv6 zone")
    if netloc.startswith("["):
        try:
            return str(IPv6Address(hostname))  # compressed, as the HTTP client writes it
        except ValueError as exc:
            raise ValueError("has an invalid IPv6 address") from exc
    return _ascii_host(hostname)


def check_endpoint_url(url: str, https_only: bool = False) -> str:
    """``url`` unchanged if deliveries may be addressed to it, else ``ValueError`` saying why.

    Requires an absolute http(s) URL (https only with ``https_only``) with a host and a port from
    1 to 65535; refuses whitespace, control and invisible format characters, backslashes,
    user information, percent-encoded hosts and unusual IPv4 spellings. Does not resolve names.
    """
    if any(c.isspace() or unicodedata.category(c) in _REFUSED_CATEGORIES for c in url):
        raise ValueError("must not contain whitespace, control or invisible characters")
    if "\\" in url:
        raise ValueError("must not contain backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError("is not a valid URL (check the host and the port, 1 to 65535)") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if https_only and parts.scheme != "https":
        raise ValueError("must be an https:// URL (this installation sets HOMING_HTTPS_ONLY)")
    if not parts.hostname or port == 0:
        raise ValueError("must have a host (and a port from 1 to 65535)")
    if _client_host(url) != _check_host(parts.netloc, parts.hostname):
        # urllib and the HTTP client (yarl) disagree: refuse rather than guess which is right
        raise ValueError("is ambiguous: the HTTP client reads its host differently")
    return url


def _client_host(url: str) -> str | None:
    """The host aiohttp would connect to for ``url`` (None if it refuses the URL)."""
    try:
        return URL(url).raw_host
    except ValueError:
        return None


# -- the connect-time guard --------------------------------------------------------------------


def _refusal(host: str, refused: Sequence[tuple[str, str]]) -> str:
    """Why ``host`` is refused and how to allow it (for the attempt record)."""
    shown = ", ".join(f"{ip} ({reason})" for ip, reason in refused[:4])
    first = refused[0][0]
    example = f"{first}/128" if ":" in first else f"{first}/32"
    return (
        f"{host} is not reachable for deliveries: {shown}; addresses that are not globally "
        f"routable are refused unless {ALLOW_VAR} lists their network (e.g. {example})"
    )


def _result(host: str, ip: Address, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return ResolveResult(hostname=host, host=str(ip), port=port, family=family, proto=0, flags=0)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses deliveries may reach.

    ``inner`` answers names (aiohttp's ``ThreadedResolver`` by default); ``allow`` re-allows
    networks; ``trusted`` are operator-configured ``(host, port)`` pairs (the egress proxy) whose
    answers are not filtered. Literal IP hosts are checked without a lookup.
    """

    def __init__(
        self,
        allow: Sequence[Network] = (),
        inner: AbstractResolver | None = None,
        trusted: Collection[tuple[str, int]] = (),
    ) -> None:
        self.allow = tuple(allow)
        self._inner = inner
        self._owns_inner = inner is None
        self._trusted = frozenset(trusted)

    def is_trusted(self, host: str, port: int) -> bool:
        """Whether ``host:port`` is operator-configured (the proxy) and exempt from the policy."""
        return (host, port) in self._trusted

    def check_literal(self, host: str, port: int) -> list[ResolveResult] | None:
        """The one address a literal IP host is, None for a name; raises ``BlockedAddressError``."""
        ip = literal_address(host)
        if ip is None:
            return None
        reason = is_forbidden(ip, self.allow)
        if reason is not None:
            raise BlockedAddressError(_refusal(host, [(str(ip), reason)]))
        return [_result(host, ip, port)]

    def keep_allowed(self, host: str, answers: Sequence[ResolveResult]) -> list[ResolveResult]:
        """The answers deliveries may reach, in canonical form; raises ``BlockedAddressError``
        when none is left (and ``OSError`` when there was none to begin with)."""
        if not answers:
            raise OSError(f"{host} has no addresses")
        kept: list[ResolveResult] = []
        refused: list[tuple[str, str]] = []
        for answer in answers:
            try:
                ip = ip_address(answer["host"])
            except ValueError:
                refused.append((answer["host"], "not an IP address"))
                continue
            reason = is_forbidden(ip, self.allow)
            if reason is None:
                kept.append(_result(host, ip, answer["port"]))
            else:
                refused.append((str(ip), reason))
        if not kept:
            raise BlockedAddressError(_refusal(host, refused))
        return kept

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Addresses of ``host`` that deliveries may reach; raises ``BlockedAddressError``."""
        literal = None if self.is_trusted(host, port) else self.check_literal(host, port)
        if literal is not None:
            return literal
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        answers = await self._inner.resolve(host, port, family)
        return answers if self.is_trusted(host, port) else self.keep_allowed(host, answers)

    async def close(self) -> None:
        """Close the inner resolver if this guard made it."""
        if self._owns_inner and self._inner is not None:
            await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` whose every connection goes to an address ``guard`` allowed.

    aiohttp skips the resolver for literal IP hosts; this step checks them too, and re-checks
    whatever the DNS cache hands back, right before the connection is made.
    """

    def __init__(self, guard: GuardedResolver, **kwargs: Any) -> None:
        super().__init__(resolver=guard, **kwargs)
        self.guard = guard

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        if self.guard.is_trusted(host, port):
            return await super()._resolve_host(host, port, traces=traces)
        literal = self.guard.check_literal(host, port)
        if literal is not None:
            return literal
        answers = await super()._resolve_host(host, port, traces=traces)
        return self.guard.keep_allowed(host, answers)


def proxy_endpoint(proxy: str) -> tuple[str, int]:
    """``(host, port)`` of a proxy URL; raises ``ConfigError`` unless it is ``http://host[:port]``."""
    try:
        url = URL(proxy)
    except ValueError as exc:
        raise ConfigError("proxy: not a URL") from exc
    if url.scheme != "http" or not url.raw_host or url.port is None or url.path not in ("", "/"):
        raise ConfigError("proxy: use http://[user:password@]host[:port] (an HTTP CONNECT proxy)")
    return url.raw_host, url.port


def build_connector(
    settings: Settings, resolver: AbstractResolver | None = None
) -> GuardedConnector:
    """The guarded connector for ``settings``: ``allow_networks`` re-allowed, the ``proxy`` (if
    any) trusted. ``resolver`` answers names. Raises ``ConfigError`` for bad settings."""
    trusted = [] if settings.proxy is None else [proxy_endpoint(settings.proxy.reveal())]
    guard = GuardedResolver(parse_networks(settings.allow_networks), resolver, trusted)
    return GuardedConnector(guard)
