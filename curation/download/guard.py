"""The connection-time half of network safety, installed in every download worker.

img2dataset fetches with ``urllib.request.urlopen``, which uses the process-wide opener. We install
one that:

- resolves each host itself, refuses the connection if any address is blocked by the
  :class:`~curation.download.safety.NetworkPolicy`, and connects to the address it checked, so a
  DNS answer that changes between check and connect (rebinding) cannot slip through;
- checks every redirect the same way (each hop opens a new, checked connection) and refuses
  redirects to schemes other than http(s);
- has no ``file:``, ``ftp:`` or ``data:`` handler at all;
- refuses response bodies above a size (``download.max_response_bytes``).

Connections to a configured HTTP(S) proxy are allowed as such: behind a proxy, the proxy resolves
the target, so only the plan-time check applies to it.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import urllib.request
from urllib.parse import urlsplit

from curation.download.safety import ALLOWED_SCHEMES, BlockedAddressError, NetworkPolicy

STATUS_RESPONSE_TOO_LARGE = "response_too_large"


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


class ResponseTooLarge(OSError):
    def __init__(self, message: str):
        super().__init__(f"{STATUS_RESPONSE_TOO_LARGE}: {message}")


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
