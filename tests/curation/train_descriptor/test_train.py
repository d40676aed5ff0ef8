"""The descriptor training loop: schedules, mixup targets, a short run, the checkpoint, the CLI."""

import json
import tarfile

import numpy as np
import pytest
import torch

from curation.cli import main
from curation.models.descriptor import load_descriptor_checkpoint
from curation.models.embedder import load_embedder
from curation.sources import list_image_files, write_encoded_shards
from curation.train_descriptor import DescriptorTrainConfig, train_descriptor
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
        **TINY, max_steps=3, autocast="fp32", inference_scales=(32, 48), mix_p=0.5
    )
    result = train_descriptor(cfg, loaders, tmp_path / "d.pt", init_checkpoint=tmp_path / "i.pt")
    assert result.steps == 3 and np.isfinite(result.history[-1]["loss"])
    trained, meta = load_descriptor_checkpoint(result.checkpoint)
    initial, _ = load_descriptor_checkpoint(tmp_path / "i.pt")
    assert meta["train"]["steps"] == 3
    assert not torch.equal(trained.backbone.conv1.weight, initial.backbone.conv1.weight)
    embedder = load_embedder("descriptor", result.checkpoint)
    assert embedder.dim == 16 and embedder.scales == (32, 48)


def test_time_budget_stops_training(small_web, tmp_path):
    loaders = [loader for _, loader in folder_loaders(small_web.pool_dir)[:40]]
    cfg = DescriptorTrainConfig(**TINY, max_steps=10_000, time_budget_s=3.0, autocast="auto")
    result = train_descriptor(cfg, loaders, tmp_path / "d.pt")
    assert 8 <= result.steps < 10_000
    assert result.seconds < 30
    assert result.autocast in ("fp32", "bf16")


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
