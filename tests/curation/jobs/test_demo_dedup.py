"""The demo's whole dedup chain on the synthetic web (issue 10's synthetic acceptance): exact and
near-exact dedup at ingest, then copy dedup with the demo recipe's descriptor, its score and
threshold chosen for precision 0.95 on a second web (another seed) and stored in the checkpoint.

Marked slow (the recipe trains ~5 minutes on 2 CPU cores): ``make test-slow`` runs it. The fast
suite checks the same plumbing with a 3-step descriptor (tests/curation/test_run_folders.py).
"""

from __future__ import annotations

import json

import pytest

from curation.config import load_config
from curation.jobs.config import CurationConfig
from curation.jobs.demo import run_demo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # ~8 min of training and dedup


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    overrides = [f"runs_dir={root}", "name=dedup", "synth.n_pool=300", "synth.seed=3"]
    return run_demo(load_config(CurationConfig, [], overrides))


def test_the_dedup_chain_finds_the_planted_copies_at_the_calibrated_precision(demo):
    quality = demo.stats["dedup_quality"]
    assert quality["true_pairs"] > 100
    assert quality["pair_precision"] >= 0.95, quality
    assert quality["pair_recall"] >= 0.9, quality
    # Every planted group down to one image: the crops and frames the descriptor scores just
    # under the threshold are merged by the pixel check (dedup.verify, on by default).
    assert quality["planted_groups_with_one_kept"] == quality["planted_groups"], quality
    edges = json.loads((demo.run_dir / "dedup_edges" / "_stats.json").read_text())
    assert 0 < edges["pairs_verified"] < edges["pairs_checked"]


def test_the_threshold_came_from_the_tuning_web_not_the_deduped_one(demo):
    calibration = demo.stats["calibration"]
    assert calibration["stored"] and calibration["measured_on"] == "synthetic web synth_tuning"
    scoring = json.loads((demo.run_dir / "dedup_copy" / "_stats.json").read_text())["scoring"]
    assert scoring["threshold_from"] == "calibration" and scoring["kind_from"] == "calibration"
    assert scoring["threshold"] == pytest.approx(calibration["threshold"])
