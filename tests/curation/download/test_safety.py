"""The network guard: refused addresses and schemes, at plan time and at connection time."""

from __future__ import annotations

import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.config import ConfigError, from_dict
from curation.download.config import DownloadConfig, resume_signature
from curation.download.network_guard import (
    STATUS_BLOCKED,
    STATUS_INVALID_URL,
    NetworkPolicy,
    address_block_reason,
    build_guarded_opener,
    check_urls,
)


@pytest.mark.parametrize(
    "ip, reason",
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not globally routable"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_non_global_addresses_are_blocked(ip, reason):
    assert reason in address_block_reason(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_global_addresses_pass(ip):
    assert address_block_reason(ip) is None


def test_check_urls_refuses_private_hosts_and_other_schemes_by_default():
    urls = [
        "http://127.0.0.1:8000/a.jpg",
        "http://10.0.0.5/b.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/c.jpg",
        "http://2130706433/d.jpg",  # 127.0.0.1 written as one decimal number
        "http://[::1]/e.jpg",
        "file:///etc/passwd",
        "ftp://127.0.0.1/f.jpg",
        "ftp://example.org/f.jpg",
        "",
        "http:///no-host.jpg",
        "http://host:notaport/x.jpg",
    ]
    results = check_urls(urls, NetworkPolicy())
    assert [r[0] for r in results[:9]] == [STATUS_BLOCKED] * 9
    assert "loopback" in results[0][1] and "private" in results[1][1]
    assert "link-local" in results[2][1]
    assert "scheme 'file'" in results[6][1] and "scheme 'ftp'" in results[8][1]
    assert [r[0] for r in results[9:]] == [STATUS_BLOCKED, STATUS_INVALID_URL, STATUS_INVALID_URL]


def test_allow_private_networks_lifts_the_address_check_but_not_the_scheme_check():
    urls = ["http://127.0.0.1:8000/a.jpg", "http://10.0.0.5/b.jpg", "file:///etc/passwd"]
    results = check_urls(urls, NetworkPolicy(allow_private_networks=True))
    assert results[:2] == [None, None]
    assert results[2][0] == STATUS_BLOCKED


def test_an_allow_list_admits_only_the_addresses_inside_it():
    policy = NetworkPolicy(allow_private_networks=("127.0.0.1", "10.1.0.0/16"))
    urls = [
        "http://127.0.0.1:8000/a.jpg",
        "http://127.0.0.2:8000/b.jpg",  # loopback too, but outside the list
        "http://10.1.200.3/c.jpg",
        "http://10.2.0.1/d.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ]
    results = check_urls(urls, policy)
    assert [r and r[0] for r in results] == [
        None,
        STATUS_BLOCKED,
        None,
        STATUS_BLOCKED,
        STATUS_BLOCKED,
        STATUS_BLOCKED,
    ]
    assert "127.0.0.2, a loopback address" in results[1][1]
    assert policy.host_block_reason("public", ["8.8.8.8"]) is None
    # Any blocked address of a host blocks it, even if another one is on the list.
    assert policy.host_block_reason("both", ["127.0.0.1", "127.0.0.2"])


def test_the_allow_list_is_checked_and_kept_when_the_config_is_built():
    cfg = from_dict(DownloadConfig, {"allow_private_networks": ["127.0.0.1", "10.0.0.0/8"]})
    assert cfg.allow_private_networks == ("127.0.0.1", "10.0.0.0/8")
    # plan.json stores lists: the signature must compare equal after a JSON round trip.
    assert resume_signature(cfg)["allow_private_networks"] == ["127.0.0.1", "10.0.0.0/8"]
    assert from_dict(DownloadConfig, {"allow_private_networks": True}).allow_private_networks
    with pytest.raises(ConfigError, match="'10.0.0.300' is not an address or network"):
        from_dict(DownloadConfig, {"allow_private_networks": ["10.0.0.300"]})
    with pytest.raises(ConfigError, match="not an address or network"):
        NetworkPolicy(allow_private_networks=("localhost",))


class _Redirector(BaseHTTPRequestHandler):
    """``/ok`` answers 200; ``/to?<url>`` redirects to <url>."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path in ("/big", "/stream"):
            self.send_response(200)
            if self.path == "/big":
                self.send_header("Content-Length", "5000")
            self.end_headers()  # /stream: no length, the body ends when the connection closes
            self.wfile.write(b"z" * 5000)
            self.close_connection = True
            return
        if self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"fine"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def redirector():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _BlockLocalhostName(NetworkPolicy):
    """Treats 127.0.0.1 as public but the name "localhost" as blocked, to test redirects."""

    def host_block_reason(self, host, addresses):
        return "test: localhost is blocked" if host == "localhost" else None


def test_guard_refuses_a_blocked_address_at_connection_time(redirector):
    opener = build_guarded_opener(NetworkPolicy())
    with pytest.raises(urllib.error.URLError, match="blocked_address: host '127.0.0.1'"):
        opener.open(f"http://{redirector}/ok", timeout=30)
    allowed = build_guarded_opener(NetworkPolicy(allow_private_networks=True))
    assert allowed.open(f"http://{redirector}/ok", timeout=30).read() == b"fine"


def test_guard_with_an_allow_list_refuses_a_redirect_out_of_it(redirector):
    opener = build_guarded_opener(NetworkPolicy(allow_private_networks=("127.0.0.1",)))
    port = redirector.split(":")[1]
    assert opener.open(f"http://{redirector}/to?/ok", timeout=30).read() == b"fine"
    with pytest.raises(urllib.error.URLError, match="blocked_address: host '127.0.0.2'"):
        opener.open(f"http://{redirector}/to?http://127.0.0.2:{port}/ok", timeout=30)


def test_guard_checks_every_redirect_hop(redirector):
    opener = build_guarded_opener(_BlockLocalhostName(allow_private_networks=False))
    port = redirector.split(":")[1]
    assert opener.open(f"http://{redirector}/to?/ok", timeout=30).read() == b"fine"
    with pytest.raises(urllib.error.URLError, match="blocked_address: test: localhost"):
        opener.open(f"http://{redirector}/to?http://localhost:{port}/ok", timeout=30)
    with pytest.raises(OSError, match="blocked_address"):
        opener.open(f"http://{redirector}/to?ftp://{redirector}/x", timeout=30)


def test_guard_has_no_file_or_ftp_handler():
    opener = build_guarded_opener(NetworkPolicy(allow_private_networks=True))
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "data:text/plain,hi"):
        with pytest.raises(OSError, match="blocked_address: scheme"):
            opener.open(url, timeout=30)


def test_guard_caps_response_bodies(redirector):
    opener = build_guarded_opener(
        NetworkPolicy(allow_private_networks=True), max_response_bytes=1000
    )
    with pytest.raises(OSError, match="response_too_large: Content-Length 5000"):
        opener.open(f"http://{redirector}/big", timeout=30)
    with opener.open(f"http://{redirector}/stream", timeout=30) as response:
        with pytest.raises(OSError, match="response_too_large: body exceeds 1000"):
            response.read()
    assert opener.open(f"http://{redirector}/ok", timeout=30).read() == b"fine"
