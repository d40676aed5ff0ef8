"""The local HTTP server of the synthetic web. Network timeouts here are generous failure bounds
(a loaded machine must not fail a good request); no test asserts that something is fast."""

from __future__ import annotations

import errno
import http.client
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from curation.synth import SynthWeb, SynthWebServer

TIMEOUT = 60.0  # seconds a good request may take on a loaded machine before the test fails


def fetch(url: str, timeout: float = TIMEOUT) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def raw_status(server: SynthWebServer, path: str) -> int:
    """Send ``path`` verbatim (urllib would normalise ``..`` away)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture()
def server(small_synth_web: SynthWeb):
    with SynthWebServer(small_synth_web.root, slow_seconds=0.6) as srv:
        yield srv


def first_pool_file(web: SynthWeb) -> str:
    return web.read("pool").column("file")[0].as_py()


def test_serves_bytes_identical_to_disk(server: SynthWebServer, small_synth_web: SynthWeb) -> None:
    rows = small_synth_web.read("pool").to_pylist()[:5] + small_synth_web.read("bad").to_pylist()
    for row in rows:
        if row["file"].endswith("empty.jpg"):
            continue
        status, body, _ = fetch(server.url_for(row["file"]))
        assert status == 200
        assert body == (small_synth_web.root / row["file"]).read_bytes()
    status, body, _ = fetch(server.url_for("images/bad/empty.jpg"))
    assert (status, body) == (200, b"")


@pytest.mark.parametrize(
    "relative, content_type",
    [
        ("images/bad/huge.png", "image/png"),
        ("images/bad/animated.gif", "image/gif"),
        ("images/bad/cmyk.jpg", "image/jpeg"),
        ("ground_truth/pool.parquet", "application/vnd.apache.parquet"),
        ("synth_config.json", "application/json"),
    ],
)
def test_content_type_by_suffix(server: SynthWebServer, relative: str, content_type: str) -> None:
    status, _, got = fetch(server.url_for(relative))
    assert status == 200 and got == content_type


def test_missing_and_unknown_paths_are_404(server: SynthWebServer) -> None:
    assert fetch(server.base_url + "/missing/images/pool/pool-000000.jpg")[0] == 404
    assert fetch(server.base_url + "/images/pool/no-such-file.jpg")[0] == 404
    assert fetch(server.base_url + "/images/pool")[0] == 404  # directories are not listed


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/images/../../etc/passwd",
        "/images/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
        "/images/..%5c..%5cetc%5cpasswd",
        "/redirect/../../etc/passwd",
        "/slow/../etc/passwd",
    ],
)
def test_traversal_is_refused(server: SynthWebServer, path: str) -> None:
    assert raw_status(server, path) in (400, 404)


def test_flaky_fails_once_per_path(server: SynthWebServer, small_synth_web: SynthWeb) -> None:
    relative = first_pool_file(small_synth_web)
    url = server.url_for(relative, route="flaky")
    assert fetch(url)[0] == 503
    status, body, _ = fetch(url)
    assert status == 200 and body == (small_synth_web.root / relative).read_bytes()
    assert fetch(url)[0] == 200
    other = server.url_for("images/bad/cmyk.jpg", route="flaky")
    assert fetch(other)[0] == 503  # each path fails once on its own
    assert server.request_counts["/flaky/" + relative] == 3


def test_slow_really_delays(small_synth_web: SynthWeb) -> None:
    # A lower bound only: a loaded machine can make the answer later, never earlier.
    with SynthWebServer(small_synth_web.root, slow_seconds=0.5) as srv:
        url = srv.url_for(first_pool_file(small_synth_web), route="slow")
        started = time.monotonic()
        assert fetch(url)[0] == 200
        assert time.monotonic() - started >= 0.5


def test_slow_beyond_the_client_timeout_times_out(small_synth_web: SynthWeb) -> None:
    # The server waits 10 minutes (shutdown wakes it), so a 1 s client timeout always fires.
    with SynthWebServer(small_synth_web.root, slow_seconds=600) as srv:
        url = srv.url_for(first_pool_file(small_synth_web), route="slow")
        with pytest.raises((TimeoutError, urllib.error.URLError)) as info:
            fetch(url, timeout=1.0)
    reason = getattr(info.value, "reason", info.value)
    assert isinstance(reason, TimeoutError)


def test_redirect(server: SynthWebServer, small_synth_web: SynthWeb) -> None:
    relative = first_pool_file(small_synth_web)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    conn.request("GET", "/redirect/" + relative)
    response = conn.getresponse()
    assert response.status == 302 and response.getheader("Location") == "/" + relative
    conn.close()
    status, body, _ = fetch(server.url_for(relative, route="redirect"))  # urllib follows it
    assert status == 200 and body == (small_synth_web.root / relative).read_bytes()


def test_set_down_makes_everything_503(server: SynthWebServer, small_synth_web: SynthWeb) -> None:
    url = server.url_for(first_pool_file(small_synth_web))
    server.set_down(True)
    assert fetch(url)[0] == 503
    server.set_down(False)
    assert fetch(url)[0] == 200


def wait_for_requests(server: SynthWebServer, n: int, deadline_s: float = TIMEOUT) -> None:
    """Wait until the server has seen ``n`` requests (a failure bound, not a speed claim)."""
    deadline = time.monotonic() + deadline_s
    while sum(server.request_counts.values()) < n:
        assert time.monotonic() < deadline, f"server saw {server.request_counts}, wanted {n}"
        time.sleep(0.01)


def test_concurrent_requests_overlap(small_synth_web: SynthWeb) -> None:
    files = small_synth_web.read("pool").column("file").to_pylist()[:8]
    # Each slow request waits 10 minutes unless shutdown wakes it: a server answering one request
    # at a time would see only the first while it waits, so seeing all 8 proves they overlap.
    srv = SynthWebServer(small_synth_web.root, slow_seconds=600).start()
    try:
        urls = [srv.url_for(f, route="slow") for f in files]
        with ThreadPoolExecutor(max_workers=8) as pool:
            pending = [pool.submit(fetch, url) for url in urls]
            wait_for_requests(srv, 8)
            assert not any(future.done() for future in pending)
            counts = srv.request_counts
            srv.shutdown()  # wakes the slow requests, which then get their files
            results = [future.result(timeout=TIMEOUT) for future in pending]
    finally:
        srv.shutdown()
    assert [status for status, _, _ in results] == [200] * 8
    assert counts == {"/slow/" + f: 1 for f in files}


def test_shutdown_is_clean_and_port_then_refuses(small_synth_web: SynthWeb) -> None:
    srv = SynthWebServer(small_synth_web.root, slow_seconds=600).start()
    port = srv.port
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch, srv.url_for(first_pool_file(small_synth_web), route="slow"))
        wait_for_requests(srv, 1)
        srv.shutdown()  # wakes the slow request instead of leaving it waiting 10 minutes
        assert pending.result(timeout=TIMEOUT)[0] == 200
    srv.shutdown()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.base_url
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.refused_port


def test_refused_port_is_held_and_refuses_while_the_server_runs(small_synth_web: SynthWeb) -> None:
    with SynthWebServer(small_synth_web.root) as srv:
        port = srv.refused_port
        assert port not in (0, srv.port)
        assert srv.refused_base_url == f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.URLError) as info:
            urllib.request.urlopen(f"{srv.refused_base_url}/x.jpg", timeout=TIMEOUT)
        assert isinstance(info.value.reason, ConnectionRefusedError)
        # Held, not merely free: nothing else can bind (and then answer on) that port meanwhile.
        with socket.socket() as other, pytest.raises(OSError) as bind_error:
            other.bind(("127.0.0.1", port))
        assert bind_error.value.errno == errno.EADDRINUSE
        base_url = srv.base_url
        assert SynthWebServer.running_at(base_url + "/") is srv
    assert SynthWebServer.running_at(base_url) is None
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))  # released with the server


def test_ports_of_an_earlier_run_can_be_asked_for(small_synth_web: SynthWeb) -> None:
    with SynthWebServer(small_synth_web.root) as first:
        ports = first.port, first.refused_port
        base_url = first.base_url
    assert SynthWebServer.running_at(base_url) is None
    with SynthWebServer(small_synth_web.root, port=ports[0], refused_port=ports[1]) as again:
        assert (again.port, again.refused_port) == ports
        assert SynthWebServer.running_at(base_url) is again


def test_rejects_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SynthWebServer(tmp_path / "nope")
