"""`lvd download` against the synthetic web served on localhost, then ingest on its output."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli import main
from curation.commands.common import load_job_config
from curation.engines import get_engine
from curation.io import read_parquet
from curation.jobs.download import downloaded_sample_shards, encoded_image_shards
from curation.jobs.ingest import run_ingest, unique_image_shards
from curation.synth import SynthWebServer
from curation.synth.urls import build_url_list
from schemas import DOWNLOADED_SAMPLE_SCHEMA, ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA

FAILING = {"slow": "timed out", "not_found": "HTTP Error 404", "refused": "Connection refused"}
OPTED_OUT = "disallowed by X-Robots-Tag"
# A timeout with room for a loaded machine; "slow" URLs answer only when the server stops.
TIMEOUT = 10
SETTINGS = [
    "download.number_sample_per_shard=20",
    "download.processes_count=2",
    "download.thread_count=8",
    f"download.timeout={TIMEOUT}",
]


@pytest.fixture(scope="module")
def served(small_web):
    with SynthWebServer(small_web.root, slow_seconds=30 * TIMEOUT) as server:
        yield server


class _RobotsHandler(BaseHTTPRequestHandler):
    """Serves one JPEG under several names, each with an X-Robots-Tag; records user agents."""

    tags = {"/noai.jpg": "noai", "/lvd.jpg": "lvd: noimageai", "/otherbot.jpg": "otherbot: noai"}
    agents: list[str] = []
    body = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.agents.append(self.headers.get("User-Agent", ""))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("X-Robots-Tag", self.tags.get(self.path, "all"))
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture(scope="module")
def robots(small_web):
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")  # unlike any pool image
    _RobotsHandler.body = buffer.getvalue()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RobotsHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    rows = [
        {"url": f"{base}/noai.jpg", "expected": "opted_out"},
        {"url": f"{base}/lvd.jpg", "expected": "opted_out"},
        {"url": f"{base}/otherbot.jpg", "expected": "ok"},  # addressed to another crawler
    ]
    yield rows, _RobotsHandler.agents
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def downloaded(small_web, served, robots, tmp_path_factory):
    """One download of the whole URL list through the CLI: (args, url list table, run root)."""
    root = tmp_path_factory.mktemp("runs")
    # Refused URLs point at a port the server holds bound and not listening.
    url_list = build_url_list(small_web, served)
    extra = [{**row, "caption": None, "expected_key": "robots"} for row in robots[0]]
    url_list = pa.concat_tables([url_list, pa.Table.from_pylist(extra, schema=url_list.schema)])
    with open(root / "urls.jsonl", "w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in url_list.to_pylist())
    args = [
        "download",
        "--url-list",
        str(root / "urls.jsonl"),
        "--allow-private-networks",
        "--run",
        "web",
        f"runs_dir={root}",
        *SETTINGS,
    ]
    assert main(args) == 0
    return args, url_list, root


def _cfg(root, name="web"):
    class Namespace:
        overrides = [f"runs_dir={root}", f"name={name}"]
        config = []

    return load_job_config(Namespace())


def _samples(root, name="web"):
    return read_parquet(downloaded_sample_shards(_cfg(root, name)), DOWNLOADED_SAMPLE_SCHEMA)


def test_every_good_image_lands_once_and_every_failure_has_a_reason(downloaded, small_web):
    _, url_list, root = downloaded
    samples = _samples(root)
    keys = samples.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == url_list.num_rows
    by_url = {row["url"]: row for row in samples.to_pylist()}
    truth = {r["key"]: r["sha256"] for r in small_web.read("pool").to_pylist()}
    for row in url_list.to_pylist():
        sample = by_url[row["url"]]
        if row["expected"] in FAILING:
            assert sample["status"] == "failed_to_download"
            assert FAILING[row["expected"]] in sample["error_message"]
            assert sample["source_file"] is None
        elif row["expected"] == "opted_out":
            assert sample["status"] == "opted_out"
            assert OPTED_OUT in sample["error_message"]
        else:
            assert sample["status"] == "success", sample
            assert sample["error_message"] is None
            if row["expected_key"] in truth:  # pool images: the bytes served are the bytes kept
                assert sample["sha256"] == truth[row["expected_key"]]


def test_outputs_are_readable_by_webdataset_and_encoded_offsets_point_at_the_bytes(downloaded):
    import webdataset as wds

    _, _, root = downloaded
    cfg = _cfg(root)
    samples = _samples(root)
    success = samples.filter(pc.equal(samples.column("status"), "success"))
    tars = sorted({row for row in success.column("source_file").to_pylist()})
    seen = {}
    for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
        assert sample["__key__"] not in seen
        seen[sample["__key__"]] = hashlib.sha256(sample["jpg"]).hexdigest()
        assert json.loads(sample["json"])["status"] == "success"
    assert seen == dict(zip(success.column("key").to_pylist(), success["sha256"].to_pylist()))
    encoded = read_parquet(encoded_image_shards(cfg), ENCODED_IMAGE_SCHEMA)
    assert encoded.num_rows == success.num_rows
    for row in encoded.to_pylist()[:40]:
        with open(row["source_file"], "rb") as fh:
            fh.seek(row["source_offset"])
            assert hashlib.sha256(fh.read(row["source_size"])).hexdigest() == seen[row["key"]]


def test_stats_count_every_status_and_a_rerun_does_nothing(downloaded, served):
    args, url_list, root = downloaded
    stats = _cfg(root).run_dir.stage("download").read_stats()
    n_failing = sum(e in FAILING for e in url_list.column("expected").to_pylist())
    assert stats["rows_in"] == url_list.num_rows
    assert stats["status_failed_to_download"] == n_failing
    assert stats["status_opted_out"] == 2
    assert stats["status_success"] + n_failing + 2 == stats["rows_in"]
    assert stats["errors"]["HTTP Error 404: Not Found"] == 3
    assert stats["seconds"] > 0 and stats["images_per_second"] > 0
    before = served.request_counts
    assert main(args) == 0
    assert served.request_counts == before


def test_robots_opt_out_is_honoured_and_the_user_agent_names_lvd(downloaded, robots):
    _, agents = robots
    assert len(agents) == 3
    assert all("(compatible; lvd;" in agent for agent in agents)


def test_a_changed_setting_refuses_to_resume(downloaded, capsys):
    args, _, _ = downloaded
    assert main([*args, "download.number_sample_per_shard=30"]) == 2
    assert "number_sample_per_shard: was 20, now 30" in capsys.readouterr().err


def test_default_policy_refuses_private_addresses_and_other_schemes(tmp_path, served):
    urls = tmp_path / "urls.csv"
    rows = [
        f"{served.base_url}/images/bad/cmyk.jpg",
        "http://10.11.12.13/a.jpg",
        "http://169.254.169.254/latest/meta-data/iam",
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.jpg",
    ]
    urls.write_text("url\n" + "\n".join(rows) + "\n")
    before = served.request_counts
    assert main(["download", "--url-list", str(urls), "--run", "safe", f"runs_dir={tmp_path}"]) == 0
    samples = _samples(tmp_path, "safe")
    assert samples.column("status").to_pylist() == ["blocked_address"] * 5
    messages = samples.column("error_message").to_pylist()
    assert all(m for m in messages)
    assert served.request_counts == before  # nothing was requested


def test_ingest_gives_every_downloaded_file_a_status(downloaded, small_web):
    _, url_list, root = downloaded
    cfg = _cfg(root)
    assert main(["ingest", "--run", "web", f"runs_dir={root}"]) == 0
    stats = run_ingest(cfg, get_engine("local", progress=False))  # finished: reads the stats back
    records = read_parquet(cfg.run_dir.stage("ingest").outputs(), IMAGE_RECORD_SCHEMA)
    by_url = {r["url"]: r for r in records.to_pylist()}
    expected_status = {
        "corrupt": "decode_error",
        "not_an_image": "decode_error",
        "empty": "empty",
        "too_large": "rejected_too_large",
    }
    bad = {r["key"]: r for r in small_web.read("bad").to_pylist()}
    for row in url_list.to_pylist():
        if row["expected"] in FAILING or row["expected"] == "opted_out":
            assert row["url"] not in by_url
            continue
        record = by_url[row["url"]]
        status = expected_status.get(row["expected"], "ok")
        assert record["status"] == status, (row, record)
        if status != "ok":
            assert record["error_message"]
        if row["expected"] in ("ok_convert", "ok_rotated"):
            truth = bad[row["expected_key"]]
            assert (record["width"], record["height"]) == (truth["width"], truth["height"])
    unique = read_parquet(unique_image_shards(cfg), IMAGE_RECORD_SCHEMA)
    assert unique.num_rows == stats["unique_images"]["rows_out"]
    assert set(unique.column("status").to_pylist()) == {"ok"}
    assert stats["dedup_exact"]["reason_exact_duplicate"] == small_web.config.n_exact_duplicates
    assert stats["ingest"]["images_per_second"] > 0
    assert pq.read_table(cfg.run_dir.stage("dedup_near").path / "part-00000.parquet").num_rows


def test_lineage_of_a_shard_sample_reaches_its_url(downloaded, small_web, capsys):
    """Downloaded -> ingested -> written to LVD shards: `lvd lineage` of a sample in a shard
    gives the URL it was fetched from, its download status, sha256, hash-dedup drops and shard."""
    from curation.jobs.shards import run_shards
    from curation.readers.image_bytes import resolve_lineage
    from schemas import SHARD_SOURCE_SCHEMA

    _, url_list, root = downloaded
    cfg = _cfg(root)
    engine = get_engine("local", progress=False)
    run_ingest(cfg, engine)
    records = pq.read_table(unique_image_shards(cfg))
    n = records.num_rows
    provenance = {
        "image": pa.nulls(n, pa.binary()),
        "seed_dataset": pa.array(["web"] * n),
        "mode": pa.array(["balanced"] * n),
        "seed_key": pa.nulls(n, pa.string()),
        "rank": pa.array(range(1, n + 1), pa.int32()),
        "similarity": pa.nulls(n, pa.float32()),
        "cluster_id": pa.nulls(n, pa.int64()),
    }
    # Sources outside the run folder: their lineage absolute (a run's own are run-relative).
    sources = resolve_lineage(records.select(IMAGE_RECORD_SCHEMA.names), cfg.run_dir.root)
    for name, column in provenance.items():
        sources = sources.append_column(name, column)
    path = root / "lineage_sources" / "part-00000.parquet"
    path.parent.mkdir()
    pq.write_table(sources.cast(SHARD_SOURCE_SCHEMA), path)
    cfg = dataclasses.replace(cfg, shards=dataclasses.replace(cfg.shards, samples_per_shard=16))
    run_shards(cfg, engine, sources=[path])
    index = pq.read_table(sorted((cfg.run_dir.root / "shards").glob("*.index.parquet")))
    key, shard = index["key"][0].as_py(), index["shard"][0].as_py()
    # A key whose image had an exact copy dropped by hash dedup shows that copy too.
    exact = pq.read_table(cfg.run_dir.stage("dedup_exact").outputs()).to_pylist()
    kept_with_copy = next(
        r["duplicate_of"] for r in exact if r["duplicate_of"] in set(index["key"].to_pylist())
    )
    capsys.readouterr()
    assert main(["lineage", "--run-dir", str(cfg.run_dir.root), key, kept_with_copy]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    record = {r["key"]: r for r in records.to_pylist()}[key]
    assert lines[0]["url"] == record["url"] and lines[0]["url"].startswith("http://127.0.0.1")
    assert lines[0]["url"] in set(url_list.column("url").to_pylist())
    assert lines[0]["download"]["status"] == "success"
    assert lines[0]["sha256"] == record["sha256"]
    assert lines[0]["shard"]["shard"] == shard and lines[0]["retrieval"][0]["mode"] == "balanced"
    dropped = lines[1]["hash_duplicates_dropped"]
    assert any(d["reason"] == "exact_duplicate" for d in dropped)
    assert main(["lineage", "--run-dir", str(cfg.run_dir.root), "no-such-key"]) == 2
