"""Every stage folder of a run reads as one dataset (pyarrow and Spark), each stage saves its
resolved config beside its outputs, and run folders of the older layout still read."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from curation.config import load_config
from curation.jobs.config import CurationConfig
from curation.jobs.demo import run_demo
from curation.rundir import StageDir

SMALL = [
    "synth.n_pool=30",
    "synth.n_near_duplicates=8",
    "synth.n_exact_duplicates=2",
    "synth.n_eval=4",
    "synth.n_eval_copies_in_pool=2",
    "synth.n_seed_per_class=3",
    "download.processes_count=1",
    "download.thread_count=8",
    "demo.descriptor.time_budget_s=null",
    "demo.descriptor.max_steps=3",
    "demo.descriptor.autocast=fp32",
    "demo.descriptor.num_workers=0",
    "demo.calibrate=false",
    "dedup.threshold=0.9999",  # a 3-step descriptor maps most images close together
    "dedup.eval_threshold=0.9999",
    "dedup.verify=false",  # nor check with pixels the thousands of pairs it puts near 0.9999
    "demo.clusters=4",
    "demo.cluster_min_seeds=2",
    "demo.pretrain_iterations=2",
    "demo.pretrain_batch_size=8",
    "demo.pretrain_workers=0",
]
STAGES = ("download", "ingest", "dedup_exact", "phash", "dedup_near", "unique_images", "embed_sscd")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(CurationConfig, [], [f"runs_dir={root}", "name=folders", *SMALL])
    return run_demo(cfg).run_dir


def data_rows(folder) -> int:
    """Rows of the data files a dataset reader should see: parquet files under no ``_``/``.``
    component."""
    files = [
        p
        for p in folder.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts)
    ]
    assert files, f"no data files in {folder}"
    return sum(pq.ParquetFile(p).metadata.num_rows for p in files)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_folder_reads_with_pyarrow(run, stage):
    folder = run / stage
    table = pq.read_table(folder)
    assert table.num_rows == data_rows(folder) > 0
    assert "key" in table.column_names


def test_stage_folders_read_with_spark(run, spark_session):
    for stage in STAGES:
        folder = run / stage
        frame = spark_session.read.parquet(str(folder))
        assert frame.count() == data_rows(folder), stage
        assert "key" in frame.columns


def test_every_stage_saves_its_config_and_stats_as_metadata(run):
    for stage in STAGES:
        folder = run / stage
        assert (folder / "_SUCCESS").is_file()
        stats = json.loads((folder / "_stats.json").read_text())
        assert stats["rows_out"] >= 0
        saved = yaml.safe_load((folder / "_config.yaml").read_text())
        assert saved, stage
        assert not (folder / "stats.json").exists() and not (folder / "config.yaml").exists()
    near = yaml.safe_load((run / "dedup_near" / "_config.yaml").read_text())
    assert near == {
        "stage": "near_dedup",
        "config": {"enabled": True, "guard": True, "max_distance": 6, "flat_index_limit": 200000},
    }
    embed = yaml.safe_load((run / "embed_sscd" / "_config.yaml").read_text())
    assert embed["stage"] == "embed" and embed["config"]["model"] == "descriptor"
    assert embed["config"]["dim"] == 128  # resolved from the checkpoint, not left null
    whole = yaml.safe_load((run / "_config.yaml").read_text())
    assert whole["name"] == "folders"


def test_an_older_run_folder_still_reads(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run / "unique_images", old)
    (old / "_stats.json").rename(old / "stats.json")
    for marker in (old / "_shards").glob("*.json"):
        result = json.loads(marker.read_text())
        result["counters_json"] = result.pop("row_counts_json")
        marker.write_text(json.dumps(result))
    stage = StageDir(old)
    assert stage.is_complete()
    assert stage.read_stats() == json.loads((run / "unique_images" / "_stats.json").read_text())
    merged = stage.merge_shard_stats()
    assert merged["rows_out"] == data_rows(old)


def test_the_demo_runs_the_whole_flow(run):
    """After dedup the demo clusters, retrieves in every mode, writes shards with a manifest that
    verifies, pretrains on the shards and scores its teacher (summary lines included)."""
    from curation.jobs.demo_summary import summary_lines
    from curation.jobs.manifest import verify_manifest
    from pretrain.models import load_backbone
    from schemas import validate_manifest

    selection = pq.read_table(run / "retrieval")
    assert set(selection["mode"].to_pylist()) == {"as_is", "sample", "cluster"}
    manifest = json.loads((run / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["num_samples"] == pq.read_table(run / "retrieved_images").num_rows
    assert verify_manifest(run) == []
    metrics = [json.loads(line) for line in (run / "pretrain" / "metrics.jsonl").open()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    load_backbone(run / "pretrain" / "teacher_backbone.pth", arch="vit")
    stats = json.loads((run / "demo_summary.json").read_text())
    for key in ("retrieval_quality", "knn_teacher", "knn_untrained_vit", "retrieval_teacher"):
        assert key in stats, key
    assert 0 <= stats["knn_teacher"]["knn_top1"] <= 1
    lines = summary_lines(stats, run, stats["seconds"])
    assert any(line.strip().startswith("k-NN") for line in lines)
    assert any(str(run / "shards") in line for line in lines)
