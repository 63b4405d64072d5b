"""Tests for homing.ssrf: the address policy, allow lists, literal hosts, endpoint URL checks and
the guard's filtering, without any network."""

from __future__ import annotations

import base64
import socket
from ipaddress import ip_address, ip_network

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from homing.config import Secret, Settings
from homing.delivery.sender import Proxy
from homing.errors import ConfigError, HomingError
from homing.ssrf import (
    ALLOW_VAR,
    BlockedAddressError,
    GuardedResolver,
    check_endpoint_url,
    is_forbidden,
    literal_address,
    parse_networks,
    proxy_endpoint,
)

# (address, expected reason or None): every denied range at both ends, and its neighbours
IPV4 = [
    ("0.0.0.0", "unspecified"),
    ("0.255.255.255", "unspecified"),
    ("1.0.0.0", None),
    ("9.255.255.255", None),
    ("10.0.0.0", "private"),
    ("10.255.255.255", "private"),
    ("11.0.0.0", None),
    ("100.63.255.255", None),
    ("100.64.0.0", "CGNAT"),
    ("100.127.255.255", "CGNAT"),
    ("100.128.0.0", None),
    ("126.255.255.255", None),
    ("127.0.0.0", "loopback"),
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("127.255.255.255", "loopback"),
    ("128.0.0.0", None),
    ("169.253.255.255", None),
    ("169.254.0.0", "link-local (cloud metadata)"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("169.254.255.255", "link-local (cloud metadata)"),
    ("169.255.0.0", None),
    ("172.15.255.255", None),
    ("172.16.0.0", "private"),
    ("172.31.255.255", "private"),
    ("172.32.0.0", None),
    ("191.255.255.255", None),
    ("192.0.0.0", "IETF protocol assignment"),
    ("192.0.0.255", "IETF protocol assignment"),
    ("192.0.1.0", None),
    ("192.0.2.0", "documentation"),
    ("192.0.2.255", "documentation"),
    ("192.0.3.0", None),
    ("192.88.98.255", None),
    ("192.88.99.0", "6to4 relay anycast"),
    ("192.88.99.255", "6to4 relay anycast"),
    ("192.88.100.0", None),
    ("192.167.255.255", None),
    ("192.168.0.0", "private"),
    ("192.168.255.255", "private"),
    ("192.169.0.0", None),
    ("198.17.255.255", None),
    ("198.18.0.0", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.20.0.0", None),
    ("198.51.99.255", None),
    ("198.51.100.0", "documentation"),
    ("198.51.100.255", "documentation"),
    ("198.51.101.0", None),
    ("203.0.112.255", None),
    ("203.0.113.0", "documentation"),
    ("203.0.113.255", "documentation"),
    ("203.0.114.0", None),
    ("223.255.255.255", None),
    ("224.0.0.0", "multicast"),
    ("239.255.255.255", "multicast"),
    ("240.0.0.0", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("8.8.8.8", None),
    ("93.184.215.14", None),
]

IPV6 = [
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::2", "IPv4-compatible IPv6 of an unspecified address"),
    ("::127.0.0.1", "IPv4-compatible IPv6 of a loopback address"),
    ("::8.8.8.8", "IPv4-compatible IPv6"),
    ("::ffff:0:0", "IPv4-mapped IPv6 of an unspecified address"),
    ("::ffff:127.0.0.1", "IPv4-mapped IPv6 of a loopback address"),
    ("::ffff:10.0.0.1", "IPv4-mapped IPv6 of a private address"),
    ("::ffff:169.254.169.254", "IPv4-mapped IPv6 of a link-local (cloud metadata) address"),
    ("::ffff:100.64.0.1", "IPv4-mapped IPv6 of a CGNAT address"),
    ("::ffff:8.8.8.8", "IPv4-mapped IPv6"),
    ("::ffff:255.255.255.255", "IPv4-mapped IPv6 of a broadcast address"),
    ("::1:0:0", "reserved"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of a link-local (cloud metadata) address"),
    ("64:ff9b::7f00:1", "NAT64 of a loopback address"),
    ("64:ff9b::808:808", "NAT64"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "local-use NAT64"),
    ("100::1", "discard-only"),
    ("100::ffff:ffff:ffff:ffff", "discard-only"),
    ("2001::1", "Teredo of an unspecified address"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo of a documentation address"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo"),
    ("2001:0:808:808:0:0:80ff:fffe", "Teredo of a loopback address"),
    ("2001:1::1", "IETF protocol assignment"),
    ("2001:2::", "benchmarking"),
    ("2001:2:0:ffff:ffff:ffff:ffff:ffff", "benchmarking"),
    ("2001:10::1", "IETF protocol assignment"),
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "IETF protocol assignment"),
    ("2001:200::1", None),
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ("2001:db8::", "documentation"),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"),
    ("2001:db9::", None),
    ("2002::", "6to4 of an unspecified address"),
    ("2002:7f00:1::", "6to4 of a loopback address"),
    ("2002:a00:1::1", "6to4 of a private address"),
    ("2002:808:808::1", "6to4"),
    ("2003::1", None),
    ("3ffe::1", None),
    ("3fff::", "documentation"),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "documentation"),
    ("3fff:1000::", None),
    ("4000::1", "reserved"),
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"),
    ("2000::", None),
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"),
    ("fc00::", "private"),
    ("fd00::1", "private"),
    ("fd00:ec2::254", "private"),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "private"),
    ("fe00::", "reserved"),
    ("fe80::", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"),
    ("fec0::1", "site-local"),
    ("ff00::", "multicast"),
    ("ff02::1", "multicast"),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"),
    ("2606:4700:4700::1111", None),
    ("2a00:1450:4001:81b::200e", None),
]


@pytest.mark.parametrize(("address", "reason"), IPV4 + IPV6)
def test_default_policy(address: str, reason: str | None) -> None:
    """Without an allow list, every address that is not globally routable is refused, by name."""
    assert is_forbidden(ip_address(address)) == reason


# (allow list, address, expected reason or None)
ALLOWED = [
    ("10.0.0.0/8", "10.1.2.3", None),
    ("10.0.0.0/8", "172.16.0.1", "private"),
    ("127.0.0.3/32", "127.0.0.3", None),
    ("127.0.0.3/32", "127.0.0.2", "loopback"),
    ("127.0.0.3", "127.0.0.4", "loopback"),
    ("169.254.169.254/32", "169.254.169.254", None),
    ("100.64.0.0/10", "100.100.100.100", None),
    ("240.0.0.0/4", "255.255.255.255", None),
    ("0.0.0.0/0", "192.168.1.1", None),
    ("0.0.0.0/0", "::1", "loopback"),
    ("::/0", "10.0.0.1", "private"),
    ("fd00::/8", "fd00::1", None),
    ("fd00::/8", "fc00::1", "private"),
    ("::1/128", "::1", None),
    # an embedded IPv4 address is judged with the same allow list, and the form range too
    ("127.0.0.0/8", "::ffff:127.0.0.1", "IPv4-mapped IPv6"),
    ("::ffff:0:0/96", "::ffff:127.0.0.1", "IPv4-mapped IPv6 of a loopback address"),
    ("::ffff:0:0/96", "::ffff:8.8.8.8", None),
    ("127.0.0.0/8, ::ffff:0:0/96", "::ffff:127.0.0.1", None),
    ("127.0.0.0/8,::ffff:127.0.0.0/104", "::ffff:127.0.0.9", None),
    (
        "127.0.0.0/8,::ffff:127.0.0.0/104",
        "::ffff:10.0.0.1",
        "IPv4-mapped IPv6 of a private address",
    ),
    ("2002::/16", "2002:7f00:1::", "6to4 of a loopback address"),
    ("2002::/16,127.0.0.0/8", "2002:7f00:1::", None),
    ("64:ff9b::/96", "64:ff9b::808:808", None),
    ("2001::/32", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo of a documentation address"),
]


@pytest.mark.parametrize(("allow", "address", "reason"), ALLOWED)
def test_allow_list_re_allows_networks(allow: str, address: str, reason: str | None) -> None:
    """An allowed network wins over the default denial, but only for the addresses it holds."""
    assert is_forbidden(ip_address(address), parse_networks(allow)) == reason


def test_parse_networks_reads_a_comma_separated_list() -> None:
    """Blank entries are skipped and a bare address is a single-address network."""
    assert parse_networks("") == ()
    assert parse_networks(" 10.0.0.0/8 , ,fd00::/8,127.0.0.3 ") == (
        ip_network("10.0.0.0/8"),
        ip_network("fd00::/8"),
        ip_network("127.0.0.3/32"),
    )


@pytest.mark.parametrize(
    "text", ["nope", "10.0.0.1/8", "10.0.0.0/33", "0177.0.0.0/8", "\uff11\uff10.0.0.0/8", "10/8"]
)
def test_parse_networks_refuses_bad_entries(text: str) -> None:
    """Anything but a plain CIDR (host bits, bad prefix, odd spellings) is a ConfigError."""
    with pytest.raises(ConfigError, match="allow_networks"):
        parse_networks(f"192.168.0.0/16,{text}")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("8.8.8.8", "8.8.8.8"),
        ("::1", "::1"),
        ("::ffff:7f00:2", "::ffff:127.0.0.2"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("example.com", None),
        ("xn--bcher-kva.de", None),
        ("1e100.net", None),
        ("localhost", None),
    ],
)
def test_literal_address_reads_canonical_literals(host: str, expected: str | None) -> None:
    """Dotted quads and IPv6 literals are addresses; DNS names are not."""
    found = literal_address(host)
    assert found == (None if expected is None else ip_address(expected))


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f000001",
        "0X7F000001",
        "017700000001",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f.1",
        "127.1",
        "127.0.1",
        "127.000.000.001",
        "127.0.0.1.",
        "0",
        "999.1.1.1",
        "1.2.3.4.5",
        "\u0661\u0662\u0667.0.0.1",
    ],
)
def test_literal_address_refuses_unusual_ipv4_spellings(host: str) -> None:
    """Decimal, hex, octal, short, padded, dotted-trailing and non-ASCII forms are refused."""
    with pytest.raises(BlockedAddressError, match="unusual spelling"):
        literal_address(host)


def test_literal_address_refuses_a_bad_ipv6_literal() -> None:
    """A colon makes a host an IPv6 literal, which must then parse."""
    with pytest.raises(BlockedAddressError, match="not a valid IPv6"):
        literal_address("::g")


def test_blocked_address_error_is_an_os_error_and_a_homing_error() -> None:
    """aiohttp wraps OSErrors from resolving; Homing code catches HomingError."""
    error = BlockedAddressError()
    assert isinstance(error, OSError) and isinstance(error, HomingError)
    assert str(error) == "The destination is an address that deliveries may not reach."


ACCEPTED_URLS = [
    "https://hooks.example.com/path?x=1#f",
    "http://hooks.example.com:8080/",
    "HTTPS://Hooks.Example.COM/",
    "https://hooks.example.com./",
    "https://under_score.example/",
    "https://b\u00fccher.de/hook",
    "https://fa\u00df.de/",
    "https://a\u3002b.example\uff0ecom/",
    "http://a:80#@b/",
    "http://127.0.0.1:8071/hook",
    "http://10.0.0.1/",
    "http://[::1]:8080/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",
    "https://hooks.example.com:65535/",
]


@pytest.mark.parametrize("url", ACCEPTED_URLS)
def test_check_endpoint_url_accepts_plain_urls(url: str) -> None:
    """Ordinary http(s) URLs pass unchanged (addresses are judged at connect time, not here)."""
    assert check_endpoint_url(url) == url


REFUSED_URLS = [
    ("", "http:// or https://"),
    ("hooks.example.com/x", "http:// or https://"),
    ("ftp://hooks.example.com/", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("https:///hook", "must have a host"),
    ("https://hooks.example.com:0/", "must have a host"),
    ("https://hooks.example.com:65536/", "not a valid URL"),
    ("https://hooks.example.com:-1/", "not a valid URL"),
    ("https://hooks.example.com:http/", "not a valid URL"),
    ("http://[::1/hook", "not a valid URL"),
    ("https://user:pass@hooks.example.com/", "user information"),
    ("https://hooks.example.com@127.0.0.1/", "user information"),
    ("https://@hooks.example.com/", "user information"),
    ("https://hooks.example.com\\@127.0.0.1/", "backslashes"),
    ("https://hooks.example.com\\.evil/", "backslashes"),
    ("https://hooks example.com/", "whitespace"),
    ("https://hooks.example.com/ ", "whitespace"),
    ("https://hooks.example.com/\r\nX-Evil: 1", "whitespace"),
    ("https://hooks.example.com/\x00", "whitespace"),
    ("https://hooks.example.com/\x7f", "whitespace"),
    ("https://hooks.example.com/\u00a0", "whitespace"),
    ("https://exa\u00admple.com/", "invisible"),
    ("https://example.com\u200b/", "invisible"),
    ("https://example.com/\u202e", "invisible"),
    ("https://\ud800.example/", "invisible"),
    ("http://2130706433/", "unusually"),
    ("http://0x7f000001/", "unusually"),
    ("http://0x7f.1/", "unusually"),
    ("http://0177.0.0.1/", "unusually"),
    ("http://017700000001/", "unusually"),
    ("http://127.1/", "unusually"),
    ("http://127.000.000.001/", "unusually"),
    ("http://127.0.0.1./", "unusually"),
    ("http://0/", "unusually"),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "unusually"),
    ("http://\u2460\u2461\u2466.0.0.1/", "unusually"),
    ("http://%31%32%37.0.0.1/", "percent-encode"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://[::g]/", "not a valid URL"),
    ("http://[v1.abc]/", "invalid IPv6 address"),
    ("http://exa$mple.com/", "not a valid domain name"),
    ("http://-example.com/", "not a valid domain name"),
    ("http://" + "a" * 64 + ".com/", "not a valid domain name"),
    ("http://" + "a." * 127 + "com/", "not a valid domain name"),
    ("http://[::1]x/", "ambiguous"),
    ("http://[::1]]/", "ambiguous"),
    ("http://\u2488.com/", r"not a valid \(internationalised\) domain name"),
    ("http://a\x85b/", "whitespace"),
    ("http://a..b/", "not a valid domain name"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED_URLS)
def test_check_endpoint_url_refuses_tricky_urls(url: str, message: str) -> None:
    """Bad schemes, ports, user info, backslashes, controls and odd address spellings are refused
    with a message saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        check_endpoint_url(url)


def test_https_only_refuses_plain_http() -> None:
    """With https_only, http:// is refused and names the setting; https:// still passes."""
    with pytest.raises(ValueError, match="HOMING_HTTPS_ONLY"):
        check_endpoint_url("http://hooks.example.com/", https_only=True)
    assert check_endpoint_url("https://hooks.example.com/", https_only=True)


def _answer(host: str, ip: str, port: int = 80) -> ResolveResult:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return ResolveResult(hostname=host, host=ip, port=port, family=family, proto=0, flags=0)


class FakeResolver(AbstractResolver):
    """Answers every name with fixed addresses and counts the questions."""

    def __init__(self, *ips: str) -> None:
        self.ips = ips
        self.asked: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [_answer(host, ip, port) for ip in self.ips]

    async def close(self) -> None:
        self.closed = True


def test_keep_allowed_drops_forbidden_answers_and_canonicalises() -> None:
    """Only permitted answers are kept, rewritten to the canonical text of the checked address."""
    guard = GuardedResolver(parse_networks("127.0.0.3/32"))
    answers = [_answer("h", "127.0.0.2"), _answer("h", "127.0.0.3"), _answer("h", "8.8.8.8")]
    kept = guard.keep_allowed("h", answers)
    assert [a["host"] for a in kept] == ["127.0.0.3", "8.8.8.8"]
    mapped = guard.keep_allowed("h", [_answer("h", "2606:4700:0:0:0:0:0:1")])
    assert mapped[0]["host"] == "2606:4700::1"
    assert mapped[0]["family"] == socket.AF_INET6


def test_keep_allowed_refuses_when_nothing_is_left() -> None:
    """No permitted answer is a BlockedAddressError naming each address, its reason and the fix."""
    guard = GuardedResolver()
    answers = [_answer("h", "10.0.0.1"), _answer("h", "::1"), _answer("h", "bogus")]
    with pytest.raises(BlockedAddressError) as caught:
        guard.keep_allowed("h", answers)
    text = str(caught.value)
    assert "10.0.0.1 (private)" in text and "::1 (loopback)" in text
    assert "bogus (not an IP address)" in text
    assert ALLOW_VAR in text and "10.0.0.1/32" in text


def test_keep_allowed_suggests_a_128_for_ipv6() -> None:
    """The suggested allow entry fits the address family."""
    with pytest.raises(BlockedAddressError, match="fd00::1/128"):
        GuardedResolver().keep_allowed("h", [_answer("h", "fd00::1")])


def test_keep_allowed_with_no_answers_is_a_plain_lookup_failure() -> None:
    """An empty answer is a DNS failure, not a refusal."""
    with pytest.raises(OSError, match="no addresses") as caught:
        GuardedResolver().keep_allowed("h", [])
    assert not isinstance(caught.value, BlockedAddressError)


def test_check_literal_judges_ip_hosts_without_lookup() -> None:
    """Literal hosts are checked directly; names are left to the resolver."""
    guard = GuardedResolver(parse_networks("127.0.0.3"))
    assert guard.check_literal("example.com", 80) is None
    assert guard.check_literal("127.0.0.3", 8080) == [_answer("127.0.0.3", "127.0.0.3", 8080)]
    with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.2 \(loopback\)"):
        guard.check_literal("127.0.0.2", 80)
    with pytest.raises(BlockedAddressError, match="unusual spelling"):
        guard.check_literal("2130706435", 80)


async def test_resolve_filters_the_inner_answers() -> None:
    """Names go to the inner resolver and only permitted answers come back."""
    inner = FakeResolver("127.0.0.2", "93.184.215.14")
    guard = GuardedResolver((), inner)
    assert [a["host"] for a in await guard.resolve("h", 443)] == ["93.184.215.14"]
    assert [a["host"] for a in await guard.resolve("8.8.4.4", 443)] == ["8.8.4.4"]
    assert inner.asked == ["h"]  # a literal needs no lookup
    await guard.close()
    assert not inner.closed  # an injected resolver stays its owner's


async def test_resolve_trusts_the_proxy_endpoint_only() -> None:
    """The operator's proxy (host and port) is exempt; the same host on another port is not."""
    inner = FakeResolver("10.0.0.8")
    guard = GuardedResolver((), inner, trusted=[("proxy.internal", 3128), ("127.0.0.1", 3128)])
    assert guard.is_trusted("proxy.internal", 3128)
    assert [a["host"] for a in await guard.resolve("proxy.internal", 3128)] == ["10.0.0.8"]
    assert [a["host"] for a in await guard.resolve("127.0.0.1", 3128)] == ["10.0.0.8"]
    with pytest.raises(BlockedAddressError):
        await guard.resolve("proxy.internal", 80)
    with pytest.raises(BlockedAddressError):
        await guard.resolve("127.0.0.1", 80)


async def test_resolve_makes_and_closes_a_default_resolver() -> None:
    """Without an inner resolver the guard makes aiohttp's threaded one and closes it."""
    guard = GuardedResolver()
    assert [a["host"] for a in await guard.resolve("8.8.8.8", 53)] == ["8.8.8.8"]
    await guard.close()  # nothing made yet: nothing to close
    guard._inner = FakeResolver("1.1.1.1")
    await guard.close()
    assert guard._inner.closed


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://127.0.0.1:3128", ("127.0.0.1", 3128)),
        ("http://user:p%40ss@proxy.internal:8080/", ("proxy.internal", 8080)),
        ("http://proxy.internal", ("proxy.internal", 80)),
        ("http://[::1]:3128", ("::1", 3128)),
    ],
)
def test_proxy_endpoint_reads_http_proxies(url: str, endpoint: tuple[str, int]) -> None:
    """An http:// proxy URL gives the host and port the connector trusts."""
    assert proxy_endpoint(url) == endpoint


@pytest.mark.parametrize(
    "url",
    [
        "https://proxy:3128",
        "socks5://proxy:1080",
        "http://proxy:3128/path",
        "proxy:3128",
        "http://",
    ],
)
def test_proxy_endpoint_refuses_other_proxies(url: str) -> None:
    """Only a plain http:// CONNECT proxy without a path is accepted."""
    with pytest.raises(ConfigError, match="proxy"):
        proxy_endpoint(url)


def test_proxy_endpoint_refuses_an_unparseable_url() -> None:
    """A URL the client cannot parse is a ConfigError that does not echo it (credentials)."""
    with pytest.raises(ConfigError, match="proxy: not a URL") as caught:
        proxy_endpoint("http://user:s3cr3t@[::1/")
    assert "s3cr3t" not in str(caught.value)


def test_proxy_settings_split_credentials_from_the_url() -> None:
    """Percent-encoded credentials become a Proxy-Authorization header, out of URL and repr."""
    proxy = Proxy.from_settings(Settings(proxy=Secret("http://us%40er:p%3A%40ss@127.0.0.1:3128")))
    assert proxy is not None
    assert str(proxy.url) == "http://127.0.0.1:3128"
    token = base64.b64encode(b"us@er:p:@ss").decode()
    assert proxy.headers == {"Proxy-Authorization": f"Basic {token}"}
    assert token not in repr(proxy)
    bare = Proxy.from_settings(Settings(proxy=Secret("http://127.0.0.1:3128")))
    assert bare is not None and bare.headers == {}
    assert Proxy.from_settings(Settings()) is None
    with pytest.raises(ConfigError, match="user name"):
        Proxy.from_settings(Settings(proxy=Secret("http://us%3Aer:pw@127.0.0.1:3128")))
