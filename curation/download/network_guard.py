"""Network guard: a URL list comes from the open web, and the downloader runs inside a cluster.

Two halves of one policy (:class:`NetworkPolicy`):

- **at plan time** (:func:`check_urls`), a URL is refused (status ``blocked_address``, never
  requested) when its scheme is not http(s) or its host resolves to an address that is not
  globally routable: loopback, private (RFC 1918, unique-local), link-local (169.254.0.0/16, where
  cloud metadata endpoints live), multicast, reserved, unspecified, shared (100.64.0.0/10) or
  documentation ranges;
- **at connection time**, in every download worker (:func:`install_guard`), ``urllib.request``'s
  process-wide opener is replaced by one that resolves each host itself, refuses the connection if
  any address is blocked and connects to the address it checked (a DNS answer that changes between
  check and connect cannot slip through); checks every redirect hop the same way and refuses
  redirects to schemes other than http(s); has no ``file:``, ``ftp:`` or ``data:`` handler; and
  refuses response bodies above ``download.max_response_bytes`` (status ``response_too_large``).

``allow_private_networks`` lifts the address check: ``True`` for every address (tests against
localhost), or a list of networks (``["10.0.0.0/8", "127.0.0.1"]``) for addresses inside them only
(an internal mirror, without opening the metadata endpoint). The scheme check always stays.
Connections to a configured HTTP(S) proxy are allowed as such: behind a proxy, the proxy resolves
the target, so only the plan-time check applies to it.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import logging
import socket
import ssl
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from curation.config import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_SCHEMES",
    "STATUS_BLOCKED",
    "STATUS_INVALID_URL",
    "STATUS_RESPONSE_TOO_LARGE",
    "BlockedAddressError",
    "NetworkPolicy",
    "ResponseTooLarge",
    "address_block_reason",
    "build_guarded_opener",
    "check_urls",
    "guarded_create_connection",
    "install_guard",
    "parse_networks",
    "resolve",
]

STATUS_BLOCKED = "blocked_address"
STATUS_INVALID_URL = "invalid_url"
STATUS_RESPONSE_TOO_LARGE = "response_too_large"
ALLOWED_SCHEMES = ("http", "https")

_CATEGORIES = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local (cloud metadata endpoints live here)"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
)


class BlockedAddressError(OSError):
    """A connection the network policy refuses. An OSError, so urllib reports it like any other
    connection failure; its message starts with ``blocked_address:`` so the status survives."""

    def __init__(self, message: str):
        super().__init__(f"{STATUS_BLOCKED}: {message}")


class ResponseTooLarge(OSError):
    def __init__(self, message: str):
        super().__init__(f"{STATUS_RESPONSE_TOO_LARGE}: {message}")


# Address policy ------------------------------------------------------------------------------


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def address_block_reason(ip: str) -> str | None:
    """Why ``ip`` must not be contacted (a short phrase), or None if it is globally routable."""
    address = _address(ip)
    for attribute, label in _CATEGORIES:
        if getattr(address, attribute):
            return label
    if not address.is_global:
        return "not globally routable"
    return None


def parse_networks(networks: tuple[str, ...] | list[str]) -> tuple:
    """``ipaddress`` networks of an allow-list (CIDRs or single addresses); ConfigError if one
    is not a network."""
    parsed = []
    for network in networks:
        try:
            parsed.append(ipaddress.ip_network(str(network), strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"download.allow_private_networks: {network!r} is not an address or network "
                "(use true, false, or a list such as ['10.0.0.0/8', '127.0.0.1'])"
            ) from exc
    return tuple(parsed)


def resolve(host: str, port: int | None = None) -> list[str]:
    """Every address ``host`` resolves to (IP literals, decimal forms and names alike)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class NetworkPolicy:
    """Which addresses may be contacted: globally routable ones, plus ``allow_private_networks``
    (``True``: every address; a tuple of networks: the addresses inside them)."""

    allow_private_networks: bool | tuple[str, ...] = False

    def __post_init__(self):
        allowed = self.allow_private_networks
        if not isinstance(allowed, bool):
            allowed = tuple(str(n) for n in allowed)
            parse_networks(allowed)  # fail when the policy is built, not at the first request
            object.__setattr__(self, "allow_private_networks", allowed)

    @property
    def allows_every_address(self) -> bool:
        return self.allow_private_networks is True

    @functools.cached_property
    def _allowed_networks(self) -> tuple:
        allowed = self.allow_private_networks
        return () if isinstance(allowed, bool) else parse_networks(allowed)

    def host_block_reason(self, host: str, addresses: list[str]) -> str | None:
        """Why connecting to ``host`` (resolved to ``addresses``) is refused, or None."""
        if self.allows_every_address:
            return None
        for ip in addresses:
            reason = address_block_reason(ip)
            if reason and not any(_address(ip) in n for n in self._allowed_networks):
                return f"host {host!r} resolves to {ip}, a {reason} address"
        return None


def _split(url: str) -> tuple[str, str] | str:
    """(scheme, host) of ``url``, or an error message."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return f"malformed URL: {exc}"
    return parts.scheme.lower(), host.lower()


def check_urls(
    urls: list[str], policy: NetworkPolicy, *, max_workers: int = 32
) -> list[tuple[str, str] | None]:
    """For each URL, None if it may be fetched, else ``(status, error_message)``.

    Hosts are resolved once each, in parallel. A host that does not resolve is let through: the
    download reports the DNS error, and the workers check again at connection time.
    """
    split = [_split(url) for url in urls]
    hosts = sorted(
        {s[1] for s in split if isinstance(s, tuple) and s[1] and s[0] in ALLOWED_SCHEMES}
    )
    resolved: dict[str, list[str]] = {}
    if hosts and not policy.allows_every_address:

        def lookup(host: str) -> tuple[str, list[str]]:
            try:
                return host, resolve(host)
            except (OSError, UnicodeError):
                return host, []

        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            resolved = dict(pool.map(lookup, hosts))
    results: list[tuple[str, str] | None] = []
    for url, parts in zip(urls, split):
        if isinstance(parts, str):
            results.append((STATUS_INVALID_URL, parts))
            continue
        scheme, host = parts
        if scheme not in ALLOWED_SCHEMES:
            shown = scheme or "none"
            message = f"scheme {shown!r} is not allowed (only http and https are fetched)"
            results.append((STATUS_BLOCKED, message))
        elif not host:
            results.append((STATUS_INVALID_URL, f"URL {url[:200]!r} has no host"))
        else:
            reason = policy.host_block_reason(host, resolved.get(host, []))
            results.append((STATUS_BLOCKED, reason) if reason else None)
    n_refused = sum(r is not None for r in results)
    if n_refused:
        logger.info("refused %d of %d URL(s) by network policy", n_refused, len(urls))
    return results


# Connection-time guard -----------------------------------------------------------------------


def _proxy_hosts() -> frozenset[str]:
    hosts = set()
    for proxy in urllib.request.getproxies().values():
        host = urlsplit(proxy if "://" in proxy else f"http://{proxy}").hostname
        if host:
            hosts.add(host.lower())
    return frozenset(hosts)


def guarded_create_connection(
    address: tuple[str, int],
    timeout: object = None,
    source_address: tuple[str, int] | None = None,
    *,
    policy: NetworkPolicy,
    trusted_hosts: frozenset[str] = frozenset(),
) -> socket.socket:
    """``socket.create_connection`` that checks every resolved address before connecting."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if host.lower() not in trusted_hosts:
        reason = policy.host_block_reason(host, [info[4][0] for info in infos])
        if reason:
            raise BlockedAddressError(reason)
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)  # the address we checked, not a second lookup
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address to connect to for {host!r}")


class GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, policy: NetworkPolicy, trusted_hosts: frozenset[str], **kwargs):
        super().__init__(*args, **kwargs)
        # http.client opens its socket through this attribute (also for HTTPS, before TLS).
        self._create_connection = functools.partial(
            guarded_create_connection, policy=policy, trusted_hosts=trusted_hosts
        )


class GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, policy: NetworkPolicy, trusted_hosts: frozenset[str], **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(
            guarded_create_connection, policy=policy, trusted_hosts=trusted_hosts
        )


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: NetworkPolicy, trusted_hosts: frozenset[str]):
        super().__init__()
        self.connection = functools.partial(
            GuardedHTTPConnection, policy=policy, trusted_hosts=trusted_hosts
        )

    def http_open(self, req):
        return self.do_open(self.connection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: NetworkPolicy, trusted_hosts: frozenset[str]):
        self.ssl_context = ssl.create_default_context()
        super().__init__(context=self.ssl_context)
        self.connection = functools.partial(
            GuardedHTTPSConnection, policy=policy, trusted_hosts=trusted_hosts
        )

    def https_open(self, req):
        return self.do_open(self.connection, req, context=self.ssl_context)


class _GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            fp.close()
            raise BlockedAddressError(f"redirect to a {scheme!r} URL refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _ResponseSizeLimit(urllib.request.BaseHandler):
    """Refuse bodies over ``limit`` bytes: by Content-Length up front, else while reading (a body
    is read whole into memory by img2dataset, so an endless one would exhaust a worker)."""

    handler_order = 900  # after redirects and errors are handled: applies to the final response

    def __init__(self, limit: int):
        self.limit = limit

    def http_response(self, req, response):
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            response.close()
            raise ResponseTooLarge(f"Content-Length {declared} exceeds {self.limit} bytes")
        read, limit = response.read, self.limit

        def capped_read(amount: int | None = None) -> bytes:
            data = read(limit + 1 if amount is None or amount < 0 else min(amount, limit + 1))
            if len(data) > limit:
                raise ResponseTooLarge(f"body exceeds {limit} bytes")
            return data

        response.read = capped_read
        return response

    https_response = http_response


class _RefuseOtherSchemes(urllib.request.BaseHandler):
    def unknown_open(self, req):
        raise BlockedAddressError(f"scheme {req.type!r} is not allowed")


def build_guarded_opener(
    policy: NetworkPolicy, max_response_bytes: int | None = None
) -> urllib.request.OpenerDirector:
    """An opener with only checked HTTP(S), checked redirects, proxies, error handling and, if
    given, a cap on response sizes."""
    trusted = _proxy_hosts()
    opener = urllib.request.OpenerDirector()
    if max_response_bytes:
        opener.add_handler(_ResponseSizeLimit(max_response_bytes))
    for handler in (
        urllib.request.ProxyHandler(),
        _RefuseOtherSchemes(),
        _GuardedHTTPHandler(policy, trusted),
        _GuardedHTTPSHandler(policy, trusted),
        urllib.request.HTTPDefaultErrorHandler(),
        _GuardedRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_installed: tuple | None = None


def install_guard(policy: NetworkPolicy, max_response_bytes: int | None = None) -> None:
    """Make ``urllib.request.urlopen`` in this process use the guarded opener (idempotent)."""
    global _installed
    if _installed != (policy, max_response_bytes):
        urllib.request.install_opener(build_guarded_opener(policy, max_response_bytes))
        _installed = (policy, max_response_bytes)
