"""`lvd run PIPELINE.yaml` on the synthetic web: the whole curation from a URL list to a manifest,
and a run killed at several stages and rerun each time ends with the same manifest, byte for byte,
as a run that was never killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from curation.cli import main
from curation.config import load_config
from curation.jobs.config import CurationConfig
from curation.synth import SynthWebServer, write_url_list

REPO = Path(__file__).resolve().parents[3]
# Runner kill points, counted per process: the 3rd shard any stage commits (ingest), the 12th
# (copy-detection embeddings, dedup, retrieval: wherever the count lands), and the first LVD shard.
KILLS = ("shard_output_written#3", "shard_output_written#12", "lvd_shard_written")
EPOCH = "1764547200"  # SOURCE_DATE_EPOCH: the manifest's created_at, the same for both runs


def _pipeline(small_web, urls: Path, runs: Path, name: str) -> dict:
    return {
        "name": name,
        "runs_dir": str(runs),
        "download": {
            "url_list": str(urls),
            "allow_private_networks": True,
            "number_sample_per_shard": 40,
            "processes_count": 1,
            "thread_count": 8,
        },
        "demo": {  # the descriptor recipe pipeline.train_descriptor uses: a few steps here
            "descriptor": {
                "max_steps": 3,
                "time_budget_s": None,
                "autocast": "fp32",
                "num_workers": 0,
            }
        },
        "embed": {"device": "cpu", "threads": 1, "num_workers": 0},
        # A 3-step descriptor maps most images close together: thresholds that keep a pool.
        # A 3-step descriptor puts thousands of pairs just under 0.9999: no pixel check of them.
        "dedup": {"threshold": 0.9999, "eval_threshold": 0.9999, "verify": False},
        "pipeline": {
            "train_descriptor": True,
            "eval_sets": [{"name": "bench", "images": str(small_web.eval_dir)}],
        },
        "retrieve": {
            "seeds": [
                {"name": "web", "mode": "as_is", "images": str(small_web.seed_dir)},
                {"name": "web", "mode": "sample", "images": str(small_web.seed_dir), "n": 2},
            ]
        },
        "shards": {"samples_per_shard": 16},
    }


def _run(pipeline: Path, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONPATH": str(REPO)}
    env.pop("LVD_KILL_AT", None)
    if kill:
        env["LVD_KILL_AT"] = kill
    command = [sys.executable, "-m", "curation.cli", "run", str(pipeline)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(small_web, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    with SynthWebServer(small_web.root) as server:
        urls = root / "urls.parquet"
        write_url_list(small_web, server.base_url, urls, include_bad=False, slow=False)
        pipeline = root / "pipeline.yaml"
        pipeline.write_text(yaml.safe_dump(_pipeline(small_web, urls, root / "runs", "p")))
        # The same pipeline twice, in the same place (paths are part of what is recorded):
        # uninterrupted, moved aside, then killed three times and rerun to the end.
        whole = _run(pipeline)
        (root / "runs" / "p").rename(root / "whole")
        killed = [_run(pipeline, kill) for kill in KILLS]
        # The last rerun in this process, through the CLI's entry point.
        saved = os.environ.get("SOURCE_DATE_EPOCH")
        os.environ["SOURCE_DATE_EPOCH"] = EPOCH
        try:
            finished = main(["run", str(pipeline)])
        finally:
            if saved is None:
                os.environ.pop("SOURCE_DATE_EPOCH")
            else:
                os.environ["SOURCE_DATE_EPOCH"] = saved
    return root, whole, killed, finished


def test_the_pipeline_runs_from_urls_to_a_manifest(runs, small_web):
    root, whole, _, _ = runs
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = root / "whole"
    manifest = json.loads((run / "manifest.json").read_text())
    selection = pq.read_table(run / "retrieval")
    modes = set(pc.unique(selection["mode"]).to_pylist())
    assert modes == {"as_is", "sample"}
    seeds = len(list(small_web.seed_dir.iterdir()))
    assert manifest["num_samples"] == pq.read_table(run / "retrieved_images").num_rows > seeds
    assert {(c["seed_dataset"], c["mode"]) for c in manifest["composition"]} >= {
        ("web", "as_is"),
        ("web", "sample"),
    }
    # decontamination ran against the evaluation set (its images were embedded and searched)
    dedup = json.loads((run / "dedup_copy" / "_stats.json").read_text())
    assert dedup["eval_bench"]["eval_images"] == len(list(small_web.eval_dir.iterdir()))


def test_a_killed_run_rerun_ends_with_the_same_manifest(runs):
    root, whole, killed, finished = runs
    assert [k.returncode for k in killed] == [-9, -9, -9], [k.stderr[-2000:] for k in killed]
    assert finished == 0
    whole_manifest = (root / "whole" / "manifest.json").read_bytes()
    assert (root / "runs" / "p" / "manifest.json").read_bytes() == whole_manifest


def test_the_example_pipelines_are_valid_configs():
    for example in sorted((REPO / "examples").glob("*.yaml")):
        cfg = load_config(CurationConfig, [example], [])
        assert cfg.retrieve.seeds and cfg.pipeline.eval_sets, example
