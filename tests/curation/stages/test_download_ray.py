"""Download (img2dataset's ray distributor, parquet output) and ingest on the Ray engine."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from curation.engines import get_engine
from curation.io import read_parquet
from curation.jobs.config import CurationConfig
from curation.jobs.download import downloaded_sample_shards, run_download
from curation.jobs.ingest import run_ingest
from curation.synth import SynthWebServer
from schemas import DOWNLOADED_SAMPLE_SCHEMA, IMAGE_RECORD_SCHEMA


def test_download_to_parquet_and_ingest_on_ray(small_web, tmp_path, ray_runtime):
    pool = small_web.read("pool").to_pylist()[:30]
    with SynthWebServer(small_web.root) as server:
        urls = [server.url_for(r["file"]) for r in pool]
        pq.write_table(pa.table({"url": urls}), tmp_path / "urls.parquet")
        cfg = CurationConfig(name="ray", runs_dir=tmp_path)
        cfg = replace(
            cfg,
            download=replace(
                cfg.download,
                url_list=str(tmp_path / "urls.parquet"),
                allow_private_networks=True,
                number_sample_per_shard=15,
                thread_count=4,
                timeout=60,
                output_format="parquet",
            ),
        )
        with get_engine("ray") as engine:
            stats = run_download(cfg, engine)
            assert stats["distributor"] == "ray"
            ingest = run_ingest(cfg, engine)
    samples = read_parquet(downloaded_sample_shards(cfg), DOWNLOADED_SAMPLE_SCHEMA)
    assert sorted(samples.column("url").to_pylist()) == sorted(urls)
    assert set(samples.column("status").to_pylist()) == {"success"}
    assert sorted(samples.column("sha256").to_pylist()) == sorted(r["sha256"] for r in pool)
    records = read_parquet(cfg.run_dir.stage("ingest").outputs(), IMAGE_RECORD_SCHEMA)
    assert records.num_rows == 30 and set(records.column("status").to_pylist()) == {"ok"}
    assert ingest["ingest"]["engine"] == "ray"
    # Parquet output: the bytes sit in img2dataset's shard parquet, found by key.
    assert all(f.endswith(".parquet") for f in records.column("source_file").to_pylist())
    assert records.column("source_offset").null_count == 30
    assert ingest["phash"]["rows_out"] == 30
