"""URL lists over the synthetic web. Network timeouts are generous failure bounds; the slow URL is
checked against a server that waits far longer than the client does, so no outcome depends on the
machine's speed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from curation.synth import SynthWeb, SynthWebServer, write_url_list
from curation.synth.urls import N_FLAKY, N_MISSING, N_REFUSED, SYNTH_URL_LIST_SCHEMA, build_url_list
from schemas import URL_LIST_SCHEMA, validate

TIMEOUT = 60.0  # seconds a good request may take on a loaded machine before the test fails


def outcome(url: str, timeout: float) -> str:
    """What a plain one-try downloader sees."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return "ok"
    except urllib.error.HTTPError as err:
        return {404: "not_found", 503: "unavailable"}.get(err.code, str(err.code))
    except urllib.error.URLError as err:
        if isinstance(err.reason, ConnectionRefusedError):
            return "refused"
        if isinstance(err.reason, TimeoutError):
            return "timeout"
        raise
    except TimeoutError:
        return "timeout"


def test_url_list_composition(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    table = write_url_list(
        small_synth_web, "http://127.0.0.1:9", tmp_path / "urls.parquet", refused_port=1, flaky=True
    )
    assert table.schema.equals(SYNTH_URL_LIST_SCHEMA)
    validate(table, URL_LIST_SCHEMA, allow_extra=True)
    written = pq.read_table(tmp_path / "urls.parquet")
    assert written.equals(table)
    rows = table.to_pylist()
    expected = Counter(r["expected"] for r in rows)
    n_bad = small_synth_web.read("bad").num_rows
    n_pool = small_synth_web.config.n_served_pool
    assert len(rows) == n_pool + n_bad + N_MISSING + N_REFUSED
    assert expected["slow"] == 1 and expected["flaky"] == N_FLAKY
    assert expected["ok"] == n_pool - 1 - N_FLAKY
    assert expected["not_found"] == N_MISSING and expected["refused"] == N_REFUSED
    assert sum(1 for r in rows if "/redirect/" in r["url"]) == 1
    assert all(
        r["url"].startswith("http://127.0.0.1:1/") for r in rows if r["expected"] == "refused"
    )
    pool_keys = set(small_synth_web.read("pool").column("key").to_pylist())
    assert pool_keys <= {r["expected_key"] for r in rows}
    assert all(r["caption"] for r in rows)
    # Shuffled: the first rows are not simply the pool in key order.
    assert [r["expected_key"] for r in rows[:20]] != sorted(pool_keys)[:20]


def test_url_list_order_is_deterministic(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    a = write_url_list(small_synth_web, "http://h", tmp_path / "a.parquet", refused_port=5)
    b = write_url_list(small_synth_web, "http://h", tmp_path / "b.parquet", refused_port=5)
    assert a.equals(b)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_url_list_depends_only_on_the_server_ports(small_synth_web: SynthWeb) -> None:
    with SynthWebServer(small_synth_web.root) as srv:
        by_server = build_url_list(small_synth_web, srv, flaky=True)
        by_base_url = build_url_list(small_synth_web, srv.base_url, flaky=True)
        by_ports = build_url_list(
            small_synth_web, srv.base_url, refused_port=srv.refused_port, flaky=True
        )
        refused_base_url = srv.refused_base_url
    assert by_server.equals(by_base_url) and by_server.equals(by_ports)
    refused = [r["url"] for r in by_server.to_pylist() if r["expected"] == "refused"]
    assert len(refused) == N_REFUSED
    assert all(url.startswith(refused_base_url + "/") for url in refused)


def test_a_base_url_without_a_server_needs_a_refused_port(small_synth_web: SynthWeb) -> None:
    with pytest.raises(ValueError, match="refused_port"):
        build_url_list(small_synth_web, "http://127.0.0.1:9")


def test_optional_parts(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    table = write_url_list(
        small_synth_web,
        "http://h",
        tmp_path / "u.parquet",
        include_bad=False,
        slow=False,
        refused_port=5,
    )
    expected = set(table.column("expected").to_pylist())
    assert expected == {"ok", "not_found", "refused"}


def test_csv_and_jsonl(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    table = write_url_list(small_synth_web, "http://h", tmp_path / "u.csv", refused_port=5)
    assert (
        pacsv.read_csv(tmp_path / "u.csv").column("url").to_pylist()
        == table.column("url").to_pylist()
    )
    write_url_list(small_synth_web, "http://h", tmp_path / "u.jsonl", refused_port=5)
    lines = (tmp_path / "u.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == table.to_pylist()
    with pytest.raises(ValueError, match="must end in"):
        write_url_list(small_synth_web, "http://h", tmp_path / "u.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.csv", "u.jsonl"]


def test_every_url_behaves_as_expected(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    # The slow route waits 10 minutes (shutdown wakes it): a 1 s client timeout always fires on it,
    # and every other URL gets a generous timeout.
    with SynthWebServer(small_synth_web.root, slow_seconds=600) as srv:
        table = write_url_list(small_synth_web, srv, tmp_path / "urls.parquet", flaky=True)
        rows = table.to_pylist()

        def first_try(row: dict) -> str:
            return outcome(row["url"], timeout=1.0 if row["expected"] == "slow" else TIMEOUT)

        with ThreadPoolExecutor(max_workers=8) as pool:
            seen = list(pool.map(first_try, rows))
        flaky = [r["url"] for r in rows if r["expected"] == "flaky"]
        retried = {url: outcome(url, timeout=TIMEOUT) for url in flaky}
    bad_expectations = set(small_synth_web.read("bad").column("expected").to_pylist())
    for row, got in zip(rows, seen):
        want = {"slow": "timeout", "flaky": "unavailable"}.get(row["expected"], row["expected"])
        if row["expected"] in bad_expectations:
            want = "ok"  # bad files download fine; decoding them is what fails
        assert got == want, row
    assert len(retried) == N_FLAKY and set(retried.values()) == {"ok"}
