"""Fetch user-supplied URLs (``audio_url``, webhook URLs) without SSRF.

A client must not be able to make the server reach its own network: loopback,
private ranges, link-local (and so cloud metadata at 169.254.169.254),
multicast, reserved, unspecified, shared (CGNAT) or any other non-global
address. The rules:

- only ``http`` and ``https``; no credentials in the URL;
- cloud metadata host names are refused by name, and every address a host
  name resolves to must be global unicast - checked *after* DNS resolution,
  inside the connection itself: :class:`GuardedBackend` resolves, checks and
  then connects to the checked IP, so DNS rebinding (a second, different
  answer at connect time) cannot slip through; TLS still verifies the name;
- redirects are followed by hand, at most ``max_redirects``, and each hop
  goes through the same checks;
- the body is streamed and dropped past ``max_bytes``; the whole fetch,
  redirects included, has one deadline; proxies from the environment are
  ignored (a proxy would resolve names for us);
- an allow-list (CIDRs, IPs or host names) permits chosen internal targets,
  e.g. ``["127.0.0.1"]`` in tests or ``["10.1.2.0/24", "minio.internal"]``.

Errors are :class:`URLFetchError` with a ``code``: ``invalid_url_scheme``,
``url_not_allowed``, ``url_fetch_failed``, ``url_not_found`` (404/410),
``url_too_large``, ``url_timeout``; the API layer (``app/api/errors.py``) maps
them to HTTP statuses - this module knows nothing about HTTP answers.

IPv6 forms that carry an IPv4 address inside are judged by that address:
IPv4-mapped (``::ffff:0:0/96``), IPv4-compatible (``::/96``), NAT64
(``64:ff9b::/96`` and the local-use ``64:ff9b:1::/48``), 6to4 (``2002::/16``),
Teredo (``2001::/32``, the client address XOR-ed) and ISATAP interface ids
(``...:0:5efe:a.b.c.d``). So ``http://[2002:7f00:1::]/`` is loopback, refused.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_MAX_REDIRECTS = 5

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: the v4 is in the last 32 bits
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class URLFetchError(Exception):
    """A URL was refused or could not be fetched; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # keep the code when Ray ships the error between processes
        return (type(self), (self.code, self.message))


# --- allow-list and address checks ----------------------------------------------


class AllowList:
    """Targets that are permitted although internal: networks/IPs and host names."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hosts: set[str] = set()
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(_normalize_host(entry))

    @classmethod
    def parse(cls, allow: AllowList | Iterable[str] | None) -> AllowList:
        if isinstance(allow, AllowList):
            return allow
        if isinstance(allow, str):
            return cls(allow.split(","))
        return cls(allow or ())

    def permits_host(self, host: str) -> bool:
        return _normalize_host(host) in self.hosts

    def permits_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)


def _normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 transition form carries (see the module doc), else ``ip``."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): the client is the host that is reached
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return low32
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # not :: or ::1, which are judged as they are
        return low32
    if (int(ip) >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP: ...:0:5efe:v4 or ...:200:5efe:v4
        return low32
    return ip


def refusal_reason(ip: IPAddress) -> str | None:
    """Why connecting to ``ip`` is refused, or ``None`` if it is a public unicast address."""
    inner = _embedded_ipv4(ip)
    if inner is not ip:
        reason = refusal_reason(inner)
        if reason:
            return f"{reason} tunnelled in {ip}"
        if ip.ipv4_mapped is not None or ip in _NAT64 or ip in _NAT64_LOCAL:
            return None  # a translator reaches exactly that public IPv4 address
        # 6to4, Teredo, ISATAP, IPv4-compatible: the outer address is judged as well.
    if ip in METADATA_IPS:
        return "cloud metadata address"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address"
    if not ip.is_global:  # shared 100.64/10, documentation, benchmarking, ...
        return "non-global address"
    return None


def check_ip(ip: str | IPAddress, allow: AllowList | Iterable[str] | None = None) -> None:
    """Raise ``url_not_allowed`` unless ``ip`` is public or allow-listed."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    allow_list = AllowList.parse(allow)
    mapped = getattr(addr, "ipv4_mapped", None)  # the same host, written as IPv6
    if allow_list.permits_ip(addr) or (mapped is not None and allow_list.permits_ip(mapped)):
        return
    reason = refusal_reason(addr)
    if reason:
        raise URLFetchError("url_not_allowed", f"refusing to connect to {addr}: {reason}")


def check_url(url: str | httpx.URL, allow: AllowList | Iterable[str] | None = None) -> httpx.URL:
    """Static checks (no DNS): scheme, host present, no credentials, no metadata host name.

    Returns the parsed URL. Call it on submission for a fast 422; the
    address checks happen at connection time (:class:`GuardedBackend`).
    """
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise URLFetchError("url_not_allowed", f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise URLFetchError(
            "invalid_url_scheme", f"only http and https URLs are accepted, not {parsed.scheme!r}"
        )
    host = _normalize_host(parsed.host or "")
    if not host:
        raise URLFetchError("url_not_allowed", "the URL has no host")
    if parsed.userinfo:
        raise URLFetchError("url_not_allowed", "credentials in URLs are not accepted")
    allow_list = AllowList.parse(allow)
    if allow_list.permits_host(host):
        return parsed
    if host in METADATA_HOSTS:
        raise URLFetchError("url_not_allowed", f"refusing cloud metadata host {host}")
    if host == "localhost" or host.endswith(".localhost"):
        raise URLFetchError("url_not_allowed", f"refusing loopback host {host}")
    try:
        check_ip(host, allow_list)  # an IP literal: refuse now, not at connect time
    except ValueError:
        pass  # a host name
    return parsed


def redact_url(url: str | httpx.URL | None) -> str:
    """``url`` as logs and documents may show it: scheme, host, port and path only.

    A query string or fragment often carries a credential (a presigned S3 URL's
    signature, a token), and so may a ``user:password@``; they are left out. Total:
    a URL that does not parse gives a placeholder, never an exception.
    """
    if url is None:
        return ""
    try:
        parts = urlsplit(str(url))
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme and not host:
        return parts.path.split("?", 1)[0].split("#", 1)[0]
    return f"{parts.scheme}://{host}{parts.path}"


async def system_resolver(host: str, port: int) -> list[str]:
    """All addresses of ``host`` (TCP), via the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if addr not in seen:
            seen.append(addr)
    return seen


async def resolve_checked(
    host: str,
    port: int,
    allow: AllowList | Iterable[str] | None = None,
    resolver: Resolver | None = None,
) -> list[str]:
    """Resolve ``host`` and return its addresses if *all* of them are permitted.

    One bad address refuses the host: otherwise a name with a public and a
    private answer would be a coin toss.
    """
    allow_list = AllowList.parse(allow)
    name = _normalize_host(host)
    if name in METADATA_HOSTS and not allow_list.permits_host(name):
        raise URLFetchError("url_not_allowed", f"refusing cloud metadata host {name}")
    try:
        addrs = [str(ipaddress.ip_address(name))]  # an IP literal needs no lookup
    except ValueError:
        addrs = []
    try:
        addrs = addrs or await (resolver or system_resolver)(name, port)
    except OSError as exc:
        raise URLFetchError("url_fetch_failed", f"cannot resolve {name}: {exc}") from exc
    if not addrs:
        raise URLFetchError("url_fetch_failed", f"{name} has no address")
    if not allow_list.permits_host(name):
        for addr in addrs:
            check_ip(addr, allow_list)
    return addrs


# --- transport -------------------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks, then connects to the checked IP."""

    def __init__(
        self,
        allow: AllowList | Iterable[str] | None = None,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow = AllowList.parse(allow)
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addrs = await resolve_checked(host, port, self.allow, self.resolver)
        last_exc: Exception | None = None
        for addr in addrs:
            try:
                return await self.inner.connect_tcp(
                    addr,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_exc = exc
        assert last_exc is not None
        raise last_exc

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise URLFetchError("url_not_allowed", "unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@functools.lru_cache(maxsize=2)
def _ssl_context(verify: bool) -> ssl.SSLContext:
    # Loading the CA bundle takes a noticeable fraction of a second; contexts
    # are safe to share between connections and threads.
    return httpx.create_ssl_context(verify=verify, trust_env=False)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through :class:`GuardedBackend`."""

    def __init__(
        self,
        allow: AllowList | Iterable[str] | None = None,
        resolver: Resolver | None = None,
        *,
        verify: bool = True,
        max_connections: int = 20,
    ) -> None:
        ctx = _ssl_context(verify)
        super().__init__(verify=ctx, trust_env=False)
        # httpx has no public hook for the network backend; swap in a pool
        # built the same way but with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ctx,
            max_connections=max_connections,
            network_backend=GuardedBackend(allow, resolver),
        )


def guarded_client(
    allow: AllowList | Iterable[str] | None = None,
    *,
    timeout_s: float = 30.0,
    resolver: Resolver | None = None,
    **kwargs: typing.Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that can only reach permitted addresses.

    It does not follow redirects (follow them with :func:`check_url` per hop,
    as :func:`fetch_audio` does) and ignores proxy environment variables.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(allow, resolver),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
        **kwargs,
    )


# --- fetching ----------------------------------------------------------------------


async def fetch_audio(
    url: str,
    max_bytes: int,
    timeout_s: float,
    allow: AllowList | Iterable[str] | None = None,
    *,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    resolver: Resolver | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Download ``url`` (at most ``max_bytes``, within ``timeout_s`` overall) safely."""
    allow_list = AllowList.parse(allow)
    request_headers = {"Accept-Encoding": "identity", "User-Agent": "aipp-fetch/1"}
    request_headers.update(headers or {})
    try:
        async with asyncio.timeout(timeout_s):
            async with guarded_client(allow_list, timeout_s=timeout_s, resolver=resolver) as client:
                return await _follow(
                    client, url, max_bytes, max_redirects, allow_list, request_headers
                )
    except URLFetchError:
        raise
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise URLFetchError(
            "url_timeout", f"fetching the URL took longer than {timeout_s}s"
        ) from exc
    except httpx.HTTPError as exc:
        raise URLFetchError("url_fetch_failed", f"fetching the URL failed: {exc}") from exc


async def _follow(
    client: httpx.AsyncClient,
    url: str,
    max_bytes: int,
    max_redirects: int,
    allow: AllowList,
    headers: dict[str, str],
) -> bytes:
    current = check_url(url, allow)
    for _hop in range(max_redirects + 1):
        async with client.stream("GET", current, headers=headers) as response:
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise URLFetchError("url_fetch_failed", "redirect without a Location")
                current = check_url(current.join(location), allow)
                continue
            if response.status_code in (404, 410):
                raise URLFetchError("url_not_found", f"the URL answered {response.status_code}")
            if response.status_code >= 400 or response.status_code < 200:
                raise URLFetchError("url_fetch_failed", f"the URL answered {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise URLFetchError(
                    "url_too_large", f"the file is {declared} bytes, more than {max_bytes}"
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise URLFetchError(
                        "url_too_large", f"the file is larger than {max_bytes} bytes"
                    )
            return bytes(body)
    raise URLFetchError("url_fetch_failed", f"more than {max_redirects} redirects")


__all__ = [
    "DEFAULT_MAX_REDIRECTS",
    "METADATA_HOSTS",
    "METADATA_IPS",
    "AllowList",
    "GuardedBackend",
    "GuardedTransport",
    "URLFetchError",
    "check_ip",
    "check_url",
    "fetch_audio",
    "guarded_client",
    "redact_url",
    "refusal_reason",
    "resolve_checked",
    "system_resolver",
]
