"""The descriptor training loop: schedules, mixup targets, a short run, the checkpoint, the CLI."""

import json
import tarfile
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from curation.cli import main
from curation.models.descriptor import load_descriptor_checkpoint
from curation.models.embedder import load_embedder
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.train_descriptor import DescriptorTrainConfig, train_descriptor
from curation.train_descriptor import train as train_module
from curation.train_descriptor.augment import AugmentConfig, CopyAugment
from curation.train_descriptor.data import (
    EpochSampler,
    TwoViewDataset,
    collect_loaders,
    folder_loaders,
)
from curation.train_descriptor.mixing import mix_batch
from curation.train_descriptor.train import entropy_schedule, lr_schedule

TINY = dict(width=8, dim=16, augment=AugmentConfig(size=32), batch_size=8, num_workers=0)


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = DescriptorTrainConfig(lr=1.0, warmup_fraction=0.1, min_lr_fraction=0.01)
    lrs = lr_schedule(cfg, 100)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert np.all(np.diff(lrs[10:]) <= 1e-12)
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_entropy_weight_ramps_up():
    weights = entropy_schedule(
        DescriptorTrainConfig(entropy_weight=10, entropy_ramp_fraction=0.5), 10
    )
    assert weights[0] == 0 and weights[5] == 10 and weights[-1] == 10
    assert np.all(np.diff(weights) >= 0)


def test_mix_batch_spreads_membership_over_both_images():
    x = torch.randn(8, 3, 16, 16)
    instance = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    membership = mix_batch(x, instance, 1.0, 2.0, np.random.default_rng(0))
    assert torch.allclose(membership.sum(dim=1), torch.ones(8))
    assert (membership > 0).sum(dim=1).max() > 2  # some row now shows two instances


def test_sampler_is_an_endless_reshuffled_stream():
    ids = list(zip(range(12), EpochSampler(4, seed=0)))
    epochs = [sorted(i % 4 for _, i in ids[e * 4 : (e + 1) * 4]) for e in range(3)]
    assert epochs == [[0, 1, 2, 3]] * 3
    assert [i // 4 for _, i in ids] == [0] * 4 + [1] * 4 + [2] * 4


def test_dataset_skips_undecodable_images(small_web):
    loaders = [lambda: b"junk"] + [loader for _, loader in folder_loaders(small_web.pool_dir)[:3]]
    dataset = TwoViewDataset(loaders, CopyAugment(AugmentConfig(size=24)))
    views, index = dataset[0]
    assert views.shape == (2, 24, 24, 3) and index == 1


def test_short_run_saves_a_checkpoint_the_embed_stage_loads(small_web, tmp_path):
    loaders = [loader for _, loader in folder_loaders(small_web.pool_dir)[:40]]
    cfg = DescriptorTrainConfig(
        **TINY,
        max_steps=3,
        autocast="fp32",
        inference_scales=(32, 48),
        inference_flip=True,
        inference_trim_borders=True,
        mix_p=0.5,
    )
    result = train_descriptor(cfg, loaders, tmp_path / "d.pt", init_checkpoint=tmp_path / "i.pt")
    assert result.steps == 3 and np.isfinite(result.history[-1]["loss"])
    trained, meta = load_descriptor_checkpoint(result.checkpoint)
    initial, _ = load_descriptor_checkpoint(tmp_path / "i.pt")
    assert meta["train"]["steps"] == 3
    assert not torch.equal(trained.backbone.conv1.weight, initial.backbone.conv1.weight)
    embedder = load_embedder("descriptor", result.checkpoint)
    assert embedder.dim == 16 and embedder.scales == (32, 48)
    assert embedder.preprocessing.trim_borders and embedder.model_id.endswith("+flip+trim")


def test_records_say_how_much_of_the_time_went_to_waiting_for_data(small_web, tmp_path):
    """Each record has the seconds spent waiting for batches since the last one, and their share
    of the time (issue 16): loaders that take 20 ms an image make the loop mostly wait."""
    import time

    loaders = [loader for _, loader in folder_loaders(small_web.pool_dir)[:40]]

    def slow(loader):
        time.sleep(0.02)
        return loader()

    cfg = DescriptorTrainConfig(**TINY, max_steps=4, autocast="fp32", mix_p=0.0)
    fractions = {}
    for name, chosen in (("fast", loaders), ("slow", [lambda f=f: slow(f) for f in loaders])):
        result = train_descriptor(cfg, chosen, tmp_path / f"{name}.pt")
        record = result.history[-1]
        assert 0.0 <= record["data_wait_fraction"] <= 1.0 and record["data_wait_s"] >= 0
        _, meta = load_descriptor_checkpoint(result.checkpoint)
        fractions[name] = meta["train"]["data_wait_fraction"]
    assert fractions["slow"] > 0.5 and fractions["slow"] > fractions["fast"]


def test_same_seed_same_steps_give_identical_weights(small_web, tmp_path):
    # A loader process, mixing and augmentation all draw from seeded generators: on one machine
    # (same thread count) two runs must agree bit for bit.
    loaders = [loader for _, loader in folder_loaders(small_web.pool_dir)[:40]]
    cfg = DescriptorTrainConfig(
        **{**TINY, "num_workers": 1}, max_steps=3, autocast="fp32", mix_p=0.5, seed=3
    )
    weights = []
    for run in ("a", "b"):
        result = train_descriptor(cfg, loaders, tmp_path / f"{run}.pt")
        model, _ = load_descriptor_checkpoint(result.checkpoint)
        weights.append(model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    other, _ = load_descriptor_checkpoint(
        train_descriptor(replace(cfg, seed=4), loaders, tmp_path / "c.pt").checkpoint
    )
    assert any(not torch.equal(t, weights[0][k]) for k, t in other.state_dict().items())


class FakeClock:
    """Training time that passes only when a batch is drawn: ``step_seconds(n)`` for batch n."""

    def __init__(self, step_seconds):
        self.now, self.batches, self.step_seconds = 0.0, 0, step_seconds

    def perf_counter(self) -> float:
        return self.now

    def ticking(self, loader_class):
        clock = self

        class TickingLoader(loader_class):
            def __iter__(self):
                for batch in super().__iter__():
                    clock.batches += 1
                    clock.now += clock.step_seconds(clock.batches)
                    yield batch

        return TickingLoader


def train_on_fake_clock(monkeypatch, small_web, tmp_path, step_seconds, **overrides):
    clock = FakeClock(step_seconds)
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(train_module, "DataLoader", clock.ticking(train_module.DataLoader))
    loaders = [loader for _, loader in folder_loaders(small_web.pool_dir)[:16]]
    # channels_last only slows these tiny CPU steps down; the clock is what is under test.
    tiny = {**TINY, "augment": AugmentConfig(size=16), "channels_last": False}
    cfg = DescriptorTrainConfig(**tiny, **overrides)
    return train_descriptor(cfg, loaders, tmp_path / "d.pt"), cfg


def test_time_budget_sizes_the_schedule_to_the_budget(monkeypatch, small_web, tmp_path):
    # 0.5 s a step and a 10 s budget: 20 steps, over which the whole schedule (warmup to the peak,
    # cosine down towards the floor) is played, instead of the first 20 of 10,000 steps.
    result, cfg = train_on_fake_clock(
        monkeypatch,
        small_web,
        tmp_path,
        lambda batch: 0.5,
        max_steps=10_000,
        time_budget_s=10.0,
        autocast="fp32",
        log_every=1,
    )
    assert result.steps == 20 and result.seconds == 10.0
    lrs = [record["lr"] for record in result.history]
    # Steps 1-8 measure the speed (warming up over a 10,000-step schedule); from then on the
    # schedule is the 20-step one: already in its cosine, ending near the floor.
    assert len(lrs) == 20 and max(lrs[:7]) < 0.02 * cfg.lr
    assert lrs[8] > 0.5 * cfg.lr and lrs[-1] < 0.05 * cfg.lr
    assert all(later <= earlier for earlier, later in zip(lrs[8:], lrs[9:]))
    _, meta = load_descriptor_checkpoint(result.checkpoint)
    assert meta["train"]["steps"] == 20


def test_time_budget_stops_a_run_that_slows_down(monkeypatch, small_web, tmp_path):
    # Fast while the speed is measured (0.1 s a step), then 2 s a step: the schedule fitted to the
    # early speed would run ~120 steps; the budget check stops the run once 12 s are spent.
    result, _ = train_on_fake_clock(
        monkeypatch,
        small_web,
        tmp_path,
        lambda batch: 0.1 if batch <= 8 else 2.0,
        max_steps=10_000,
        time_budget_s=12.0,
        autocast="fp32",
    )
    assert 12.0 <= result.seconds < 14.0  # stopped within one (slow) step of the budget
    assert result.steps == 14  # 0.8 s for 8 steps, then 6 more of 2 s


def test_max_steps_bounds_a_run_with_time_to_spare(monkeypatch, small_web, tmp_path):
    result, _ = train_on_fake_clock(
        monkeypatch, small_web, tmp_path, lambda batch: 0.5, max_steps=6, time_budget_s=1000.0,
        autocast="fp32",
    )  # fmt: skip
    assert result.steps == 6 and result.seconds == 3.0


def test_cli_trains_and_reports_micro_ap(small_web, tmp_path, capsys):
    out = tmp_path / "desc.pt"
    code = main(
        [
            "train-descriptor",
            "--images",
            str(small_web.pool_dir),
            "--out",
            str(out),
            "--baseline",
            "--eval-synth",
            str(small_web.root),
            "width=8",
            "dim=16",
            "augment.size=32",
            "batch_size=8",
            "max_steps=2",
            "num_workers=0",
            "autocast=fp32",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and out.is_file() and (tmp_path / "desc.init.pt").is_file()
    for name in ("trained_single_scale", "untrained_single_scale"):
        assert 0.0 <= summary[name]["micro_ap"] <= 1.0
        assert summary[name]["n_true_pairs"] > 0


def test_sources_folder_shards_and_tars_give_the_same_bytes(small_web, tmp_path):
    files = list_image_files(small_web.seed_dir)[:5]
    write_encoded_shards(files, tmp_path / "shards", rows_per_shard=2)
    (tmp_path / "tars").mkdir()
    with tarfile.open(tmp_path / "tars" / "000.tar", "w") as tar:
        for f in files:
            tar.add(f, arcname=f"{f.stem}.jpg")
    expected = {f.stem: f.read_bytes() for f in files}
    for kwargs in ({"shards": tmp_path / "shards"}, {"tars": tmp_path / "tars"}):
        loaders = collect_loaders(**kwargs, index_dir=tmp_path / "index")
        assert {key: loader() for key, loader in loaders} == expected
    with pytest.raises(FileNotFoundError):
        collect_loaders(shards=tmp_path / "tars")
