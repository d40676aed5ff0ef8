"""The network guard during a real download (img2dataset's workers, not a unit opener).

The policy admits 127.0.0.1 only (``download.allow_private_networks=[127.0.0.1]``), so a server on
127.0.0.2 stands for a private target: a redirect into it must end as ``blocked_address`` with no
request reaching it, and a body over ``download.max_response_bytes`` as ``response_too_large``,
whether or not the server declares its length.
"""

from __future__ import annotations

import threading
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.download.config import DownloadLayout
from curation.synth import SynthWebServer


class _Redirector(BaseHTTPRequestHandler):
    """``/to/<path>``: 302 to ``<target>/<path>``; ``/stream/<path>``: the file without a
    Content-Length (the body ends when the connection closes). Counts requests per path."""

    target = ""
    root = Path()
    counts: Counter = Counter()

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.counts[self.path] += 1
        route, _, rest = self.path.lstrip("/").partition("/")
        if route == "to":
            self.send_response(302)
            self.send_header("Location", f"{self.target}/{rest}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "stream" and ".." not in rest and (self.root / rest).is_file():
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write((self.root / rest).read_bytes())
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def guarded_run(small_web, tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    pool = small_web.read("pool").to_pylist()
    for row in pool:
        row["bytes"] = (Path(small_web.root) / row["file"]).stat().st_size
    pool.sort(key=lambda r: r["bytes"])
    small, big = pool[:4], pool[-2:]
    assert small[-1]["bytes"] < big[0]["bytes"]
    limit = (small[-1]["bytes"] + big[0]["bytes"]) // 2
    with (
        SynthWebServer(small_web.root) as origin,
        SynthWebServer(small_web.root, host="127.0.0.2") as private,
    ):
        _Redirector.target, _Redirector.root = private.base_url, Path(small_web.root)
        _Redirector.counts = Counter()
        redirector = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
        threading.Thread(target=redirector.serve_forever, daemon=True).start()
        hop = f"http://127.0.0.1:{redirector.server_address[1]}"
        try:
            # The private server does answer: a request that never reaches it is a refusal.
            with urllib.request.urlopen(private.url_for(small[0]["file"]), timeout=60) as answer:
                assert answer.status == 200
            private.reset_counts()
            expected = {
                origin.url_for(small[0]["file"]): "success",
                origin.url_for(small[1]["file"]): "success",
                origin.url_for(small[2]["file"], route="redirect"): "success",  # same host
                f"{hop}/to/{small[3]['file']}": "blocked_address",
                f"{hop}/to/{small[0]['file']}": "blocked_address",
                private.url_for(small[1]["file"]): "blocked_address",  # refused at plan time
                origin.url_for(big[0]["file"]): "response_too_large",  # by Content-Length
                f"{hop}/stream/{big[1]['file']}": "response_too_large",  # while reading
            }
            pq.write_table(pa.table({"url": list(expected)}), root / "urls.parquet")
            args = [
                "download",
                "--url-list",
                str(root / "urls.parquet"),
                "--run",
                "guarded",
                f"runs_dir={root}",
                "download.allow_private_networks=[127.0.0.1]",
                f"download.max_response_bytes={limit}",
                "download.processes_count=1",
                "download.thread_count=4",
                "download.timeout=60",
            ]
            assert main(args) == 0
            yield {
                "expected": expected,
                "layout": DownloadLayout(root / "guarded" / "download"),
                "private_requests": private.request_counts,
                "hop_requests": dict(_Redirector.counts),
                "sha256": {
                    origin.url_for(small[0]["file"]): small[0]["sha256"],
                    origin.url_for(small[1]["file"]): small[1]["sha256"],
                    origin.url_for(small[2]["file"], route="redirect"): small[2]["sha256"],
                },
            }
        finally:
            redirector.shutdown()
            redirector.server_close()


def _samples(layout: DownloadLayout) -> dict[str, dict]:
    return {row["url"]: row for row in pq.read_table(layout.sample_parts()).to_pylist()}


def test_each_url_ends_with_the_status_the_guard_gives_it(guarded_run):
    samples = _samples(guarded_run["layout"])
    assert {url: row["status"] for url, row in samples.items()} == guarded_run["expected"]
    for url, row in samples.items():
        if row["status"] == "success":
            assert row["error_message"] is None and row["source_file"], url
        else:
            assert row["source_file"] is None and row["error_message"], url
    for url, digest in guarded_run["sha256"].items():
        assert samples[url]["sha256"] == digest


def test_a_redirect_into_a_private_address_never_reaches_it(guarded_run):
    assert guarded_run["private_requests"] == {}
    samples = _samples(guarded_run["layout"])
    redirected = [u for u in samples if "/to/" in u]
    for url in redirected:
        assert "blocked_address: host '127.0.0.2'" in samples[url]["error_message"]
        # The first hop was requested (once): the refusal came at the redirect.
        assert guarded_run["hop_requests"]["/" + url.split("/", 3)[3]] == 1


def test_oversized_bodies_are_refused_with_the_limit_in_the_message(guarded_run):
    samples = _samples(guarded_run["layout"])
    messages = [r["error_message"] for r in samples.values() if r["status"] == "response_too_large"]
    assert len(messages) == 2
    assert any("Content-Length" in m for m in messages)
    assert any("body exceeds" in m for m in messages)
