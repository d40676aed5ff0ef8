"""Network safety: a URL list comes from the open web, and the downloader runs inside a cluster.

By default a URL is refused (status ``blocked_address``, never requested) when its scheme is not
http(s) or its host resolves to an address that is not globally routable: loopback, private
(RFC 1918, unique-local), link-local (169.254.0.0/16, where cloud metadata endpoints live),
multicast, reserved, unspecified, shared (100.64.0.0/10) or documentation ranges.
``allow_private_networks`` lifts the address check (tests against localhost); the scheme check
always stays. The same check runs again in the download workers at connection time
(:mod:`curation.download.guard`), which covers redirects and DNS answers that change.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

STATUS_BLOCKED = "blocked_address"
STATUS_INVALID_URL = "invalid_url"
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


def address_block_reason(ip: str) -> str | None:
    """Why ``ip`` must not be contacted (a short phrase), or None if it is globally routable."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for attribute, label in _CATEGORIES:
        if getattr(address, attribute):
            return label
    if not address.is_global:
        return "not globally routable"
    return None


def resolve(host: str, port: int | None = None) -> list[str]:
    """Every address ``host`` resolves to (IP literals, decimal forms and names alike)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class NetworkPolicy:
    allow_private_networks: bool = False

    def host_block_reason(self, host: str, addresses: list[str]) -> str | None:
        """Why connecting to ``host`` (resolved to ``addresses``) is refused, or None."""
        if self.allow_private_networks:
            return None
        for ip in addresses:
            reason = address_block_reason(ip)
            if reason:
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
    if hosts and not policy.allow_private_networks:

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
