"""Download to object storage (issue 13): ``lvd download`` then ``lvd ingest`` with
``runs_dir=s3://...`` on a real S3-compatible server (moto), img2dataset writing its shards to the
store through fsspec (s3fs), give the same samples and ingest outputs as the same run on local
disk, and nothing of the run lands on local disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation import storage
from curation.cli import main
from curation.config import ConfigError, load_config
from curation.download.img2dataset_job import check_output_filesystem
from curation.download.shards import finished_shards
from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.download import download_layout, run_download, run_retry_failed
from curation.jobs.ingest import run_ingest
from curation.readers.image_bytes import image_bytes_loaders, resolve_lineage
from curation.synth import SynthWebServer
from curation.synth.urls import build_url_list
from tests.curation.storage.conftest import BUCKET

SETTINGS = [
    "download.number_sample_per_shard=40",
    "download.processes_count=1",
    "download.thread_count=8",
    "download.timeout=10",
    "download.allow_private_networks=true",
]
STAGES = ("ingest", "phash", "unique_images")
SAMPLE_COLUMNS = ["key", "url", "status", "error_message", "sha256", "width", "height"]


@pytest.fixture(scope="module")
def served(small_web):
    with SynthWebServer(small_web.root) as server:
        yield server


@pytest.fixture(scope="module")
def url_list(small_web, served, tmp_path_factory) -> Path:
    """The synthetic web's URL list with every kind of failure but the slow one (a timeout per
    run is time this test does not need to spend)."""
    path = tmp_path_factory.mktemp("urls") / "urls.parquet"
    pq.write_table(build_url_list(small_web, served, slow=False), path)
    return path


def _config(runs_dir: str, url_list: Path) -> CurationConfig:
    overrides = [f"runs_dir={runs_dir}", "name=web", f"download.url_list={url_list}", *SETTINGS]
    return load_config(CurationConfig, [], overrides)


def _outputs(cfg: CurationConfig) -> dict[str, pa.Table]:
    """What the run left: samples (every URL's status) with the tar each success lies in, named
    relative to the download folder, and each ingest stage's committed outputs."""
    layout = download_layout(cfg)
    samples = storage.read_table(layout.sample_parts()).sort_by("key")
    root = storage.absolute(layout.root) + "/"
    tars = [value[len(root) :] if value else None for value in samples["source_file"].to_pylist()]
    found = {"samples": samples.select(SAMPLE_COLUMNS).append_column("tar", pa.array(tars))}
    for name in STAGES:
        table = storage.read_table(cfg.run_dir.stage(name).outputs()).sort_by("key")
        # img2dataset writes a tar's members in completion order: offsets differ run to run.
        offsets = [c for c in table.column_names if c == "source_offset"]
        found[name] = table.drop_columns(offsets).replace_schema_metadata(None)
    return found


@pytest.fixture(scope="module")
def local_run(url_list, tmp_path_factory):
    cfg = _config(str(tmp_path_factory.mktemp("runs")), url_list)
    with get_engine("local", progress=False) as engine:
        run_download(cfg, engine)
        run_ingest(cfg, engine)
    return cfg


def test_download_and_ingest_on_s3_equal_local(s3_server, url_list, local_run, small_web, require):
    require("s3fs")  # img2dataset writes to the store through fsspec
    runs_dir = f"s3://{BUCKET}/download-runs"
    run = ["--run", "web", f"runs_dir={runs_dir}"]
    assert main(["download", "--url-list", str(url_list), *run, *SETTINGS]) == 0
    assert main(["ingest", *run]) == 0

    cfg = _config(runs_dir, url_list)
    layout = download_layout(cfg)
    assert isinstance(layout.raw, storage.ObjectPath)
    # img2dataset wrote its shards to the store: every shard's tar, metadata and stats are there.
    raw = {p.name for p in storage.list_files(layout.raw)}
    assert finished_shards(layout.raw, "webdataset") == {0, 1, 2, 3, 4}
    assert {"00000.tar", "00000.parquet", "00000_stats.json", "00003.tar"} <= raw
    assert cfg.run_dir.stage("download").is_complete()
    assert cfg.run_dir.stage("unique_images").is_complete()

    expected, found = _outputs(local_run), _outputs(cfg)
    samples = found["samples"]
    assert samples.equals(expected["samples"])
    statuses = set(samples["status"].to_pylist())
    assert {"success", "failed_to_download"} <= statuses
    # The pool's images came through whole: their digests are the served files' digests.
    success = samples.filter(pc.equal(samples["status"], "success"))
    truth = set(small_web.read("pool").column("sha256").to_pylist())
    assert sum(sha in truth for sha in success["sha256"].to_pylist()) >= 100
    for name in STAGES:
        assert found[name].equals(expected[name]), name
    assert found["unique_images"].num_rows == expected["unique_images"].num_rows > 0

    # Every unique image, read by lineage from the tars on the store, has the downloaded bytes.
    unique = storage.read_table(cfg.run_dir.stage("unique_images").outputs())
    unique = resolve_lineage(unique, cfg.run_dir.root)
    assert all(v.startswith(f"s3://{BUCKET}/") for v in unique["source_file"].to_pylist())
    loaders = image_bytes_loaders(unique)
    digests = [hashlib.sha256(load()).hexdigest() for load in loaders]
    assert digests == unique["sha256"].to_pylist()
    # The run's config records the store, and nothing of the run touched local disk.
    saved = storage.read_bytes(storage.join(runs_dir, "web", "_config.yaml")).decode()
    assert f"runs_dir: {runs_dir}" in saved
    assert not Path("s3:").exists()


@pytest.mark.slow  # ~55 s on 2 CPUs (Ray start, img2dataset's ray tasks): make test-slow
def test_download_and_ingest_on_ray_and_s3_equal_local(s3_server, url_list, local_run, require):
    """img2dataset's ray distributor: its tasks, not the driver, write the shards to the store."""
    require("s3fs")
    ray = require("ray")
    # A Ray started by an earlier test has workers without this session's S3 environment
    # (credentials, endpoint): start a fresh one, as a job submitted with that environment.
    if ray.is_initialized():
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # as ray_runtime
    cfg = _config(f"s3://{BUCKET}/download-ray", url_list)
    with get_engine("ray") as engine:
        stats = run_download(cfg, engine)
        run_ingest(cfg, engine)
    assert stats["distributor"] == "ray"
    assert cfg.run_dir.stage("unique_images").read_stats()["engine"] == "ray"
    expected, found = _outputs(local_run), _outputs(cfg)
    for name in ("samples", *STAGES):
        assert found[name].equals(expected[name]), name
    assert not Path("s3:").exists()


def test_retry_failed_on_a_store_is_refused_in_one_line(s3_server):
    cfg = CurationConfig(name="web", runs_dir=f"s3://{BUCKET}/download-runs")
    with (
        get_engine("local", progress=False) as engine,
        pytest.raises(ConfigError, match="--retry-failed runs on local disk only"),
    ):
        run_retry_failed(cfg, engine)


def test_a_store_img2dataset_cannot_write_to_is_named_before_any_work(monkeypatch):
    import fsspec

    check_output_filesystem("s3://bucket/run/download/_raw")  # s3fs is installed
    check_output_filesystem("/tmp/run/download/_raw")
    with pytest.raises(ConfigError, match=r"cannot open nosuchfs:// \(Protocol not known"):
        check_output_filesystem("nosuchfs://bucket/raw")

    def without_s3fs(protocol):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "get_filesystem_class", without_s3fs)
    with pytest.raises(ConfigError, match=r"needs s3fs \(pip install 'lvd\[s3\]'\)"):
        check_output_filesystem("s3://bucket/raw")
