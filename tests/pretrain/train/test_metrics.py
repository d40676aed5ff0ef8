"""Per-iteration metrics say how long each step waited for data (issue 16: the trainer should
never wait for augmentation) and the peak memory (issue 14)."""

from __future__ import annotations

import json
import time

import numpy as np
from PIL import Image

from curation.cli import main
from pretrain.data.batches import TrainingBatchMaker
from tests.pretrain.train.test_pretrain_command import TINY


def test_metrics_record_the_data_wait_and_peak_memory(tmp_path, monkeypatch):
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    make = TrainingBatchMaker.__call__

    def slow(self, *args, **kwargs):  # a loader slower than the step: the wait must show
        time.sleep(0.4)
        return make(self, *args, **kwargs)

    monkeypatch.setattr(TrainingBatchMaker, "__call__", slow)
    out = tmp_path / "run"
    args = ["--images", str(images), "--out", str(out), *TINY, "--max-iterations", "3"]
    assert main(["pretrain", *args]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert 0.4 <= r["data_wait_s"] <= r["step_s"]
        assert 0 < r["data_wait_fraction"] <= 1
        assert r["peak_memory_mib"] > 50  # the process's peak RSS: torch alone is more
    assert records[-1]["data_wait_fraction"] >= 0.4 / max(r["step_s"] for r in records) * 0.8


def test_progress_lines_every_few_seconds_not_every_iteration(tmp_path, monkeypatch, caplog):
    """A long run logs a progress line (loss, images/s, data wait, time left) at its first and
    last iteration and every PROGRESS_EVERY_S between, each iteration only at DEBUG."""
    import logging

    from pretrain.train import loop

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(images / f"{i}.png")
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 3600.0)
    caplog.set_level(logging.INFO, logger="pretrain.train.loop")
    args = ["--images", str(images), "--out", str(tmp_path / "run"), *TINY, "--max-iterations", "4"]
    assert main(["pretrain", *args]) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration ")]
    assert [line.split()[1] for line in lines] == ["1/4", "4/4"]
    assert "images/s" in lines[0] and "waiting for data" in lines[0] and "left" in lines[0]
