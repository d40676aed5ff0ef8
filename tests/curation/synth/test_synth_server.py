from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from curation.synth import SynthWeb, SynthWebServer
from curation.synth.urls import free_port


def fetch(url: str, timeout: float = 5.0) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def raw_status(server: SynthWebServer, path: str) -> int:
    """Send ``path`` verbatim (urllib would normalise ``..`` away)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
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


def test_slow_really_delays(server: SynthWebServer, small_synth_web: SynthWeb) -> None:
    url = server.url_for(first_pool_file(small_synth_web), route="slow")
    started = time.perf_counter()
    assert fetch(url)[0] == 200
    assert time.perf_counter() - started >= 0.55
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        fetch(url, timeout=0.2)


def test_redirect(server: SynthWebServer, small_synth_web: SynthWeb) -> None:
    relative = first_pool_file(small_synth_web)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
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


def test_concurrent_requests_overlap(small_synth_web: SynthWeb) -> None:
    files = small_synth_web.read("pool").column("file").to_pylist()[:8]
    with SynthWebServer(small_synth_web.root, slow_seconds=0.5) as srv:
        urls = [srv.url_for(f, route="slow") for f in files]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(fetch, urls))
        elapsed = time.perf_counter() - started
        counts = srv.request_counts
    assert [status for status, _, _ in results] == [200] * 8
    assert elapsed < 2.0  # eight 0.5 s requests served in parallel, not one after another
    assert sum(counts.values()) == 8


def test_shutdown_is_clean_and_port_then_refuses(small_synth_web: SynthWeb) -> None:
    srv = SynthWebServer(small_synth_web.root, slow_seconds=30).start()
    port = srv.port
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(
            fetch, srv.url_for(first_pool_file(small_synth_web), route="slow"), 10
        )
        time.sleep(0.2)
        started = time.perf_counter()
        srv.shutdown()  # wakes the slow request instead of waiting 30 s
        assert time.perf_counter() - started < 5
        pending.result(timeout=10)
    srv.shutdown()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.base_url


def test_refused_port_refuses() -> None:
    port = free_port()
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/x.jpg", timeout=2)
    assert isinstance(info.value.reason, ConnectionRefusedError)


def test_rejects_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SynthWebServer(tmp_path / "nope")
