import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from PIL import Image

from curation.cli import main
from pretrain.data.shards import write_parquet_shards
from pretrain.models.vision_transformer import DinoVisionTransformer
from pretrain.train.checkpoint import latest_checkpoint
from pretrain.train.config import HighResConfig, OptimConfig, PretrainConfigError
from pretrain.train.high_res import crops_at, phase_start
from pretrain.train.loop import METRICS_FILE, train
from pretrain.train.meta_arch import build_backbone

sys.path.insert(0, str(Path(__file__).parent))
from test_meta_arch import tiny_config  # noqa: E402

ITERATIONS = 6
PHASE = 3  # the last 3 iterations at 64 px (32 px before)
KILLED_INSIDE = 4


def high_res_config(**high_res):
    optim = OptimConfig(
        epochs=2,
        iterations_per_epoch=ITERATIONS // 2,
        base_lr=0.1,
        warmup_epochs=0.5,
        warmup_teacher_temp_epochs=0,
        freeze_last_layer_epochs=0,
    )
    phase = HighResConfig(
        **({"iterations": PHASE, "global_crops_size": 64, "local_crops_size": 24} | high_res)
    )
    return dataclasses.replace(
        tiny_config(), optim=optim, high_res=phase, num_workers=0, checkpoint_every=2
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = [(f"k{i:02d}", rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)) for i in range(16)]
    folder = tmp_path_factory.mktemp("high_res") / "shards"
    write_parquet_shards(images, str(folder), samples_per_shard=8)
    return str(folder)


def _recording_input_sizes(monkeypatch):
    """Record (global, local) crop sizes of every student call of the backbone."""
    seen = []
    forward = DinoVisionTransformer.forward

    def recording(self, x, *args, **kwargs):
        if isinstance(x, list):  # the student: [global crops, local crops]
            seen.append(tuple(tuple(t.shape[-2:]) for t in x))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(DinoVisionTransformer, "forward", recording)
    return seen


def test_phase_is_the_tail_of_the_run_with_larger_crops():
    cfg = high_res_config()
    assert phase_start(cfg) == ITERATIONS - PHASE
    assert crops_at(cfg, phase_start(cfg) - 1) == cfg.crops
    late = crops_at(cfg, phase_start(cfg))
    assert (late.global_crops_size, late.local_crops_size) == (64, 24)
    assert late.local_crops_number == cfg.crops.local_crops_number
    kept_local = crops_at(high_res_config(local_crops_size=None), ITERATIONS - 1)
    assert kept_local.local_crops_size == cfg.crops.local_crops_size
    no_phase = high_res_config(iterations=0)
    assert crops_at(no_phase, ITERATIONS - 1) == no_phase.crops


@pytest.mark.parametrize(
    ("high_res", "message"),
    [
        (
            {"global_crops_size": 60},
            "high_res.global_crops_size=60 is not a multiple of the patch size 8",
        ),
        (
            {"local_crops_size": 20},
            "high_res.local_crops_size=20 is not a multiple of the patch size 8",
        ),
        ({"iterations": ITERATIONS + 1}, "high_res.iterations=7 must be between 0 and"),
    ],
)
def test_config_refuses_a_phase_that_cannot_run(high_res, message):
    with pytest.raises(PretrainConfigError, match=message):
        high_res_config(**high_res).check()


def test_sizes_of_a_phase_that_is_off_are_not_checked():
    # The default 518 px is no multiple of 8; without a phase it is never used.
    high_res_config(iterations=0, global_crops_size=518).check()


def test_position_embedding_interpolates_to_the_larger_grid_and_learns():
    cfg = high_res_config()
    torch.manual_seed(0)
    backbone = build_backbone(cfg.backbone, cfg.crops.global_crops_size, teacher=False)
    stored = backbone.pos_embed.shape
    assert stored[1] == 1 + (32 // 8) ** 2
    tokens = backbone.prepare_tokens_with_masks(torch.zeros(2, 3, 64, 64))
    assert tokens.shape[1] == 1 + (64 // 8) ** 2
    grid = backbone.interpolate_pos_encoding(tokens, 64, 64)
    assert grid.shape == (1, 65, stored[2])
    torch.testing.assert_close(grid[:, :1], backbone.pos_embed[:, :1])  # CLS entry kept
    # An upsampled grid, not a fresh one: smooth, its mean close to the stored grid's.
    assert grid[:, 1:].mean().item() == pytest.approx(
        backbone.pos_embed[:, 1:].mean().item(), abs=2e-3
    )
    out = backbone(torch.randn(2, 3, 64, 64), is_training=True)
    out["x_norm_patchtokens"].square().sum().backward()
    assert backbone.pos_embed.shape == stored and backbone.pos_embed.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def runs(source, tmp_path_factory):
    root = tmp_path_factory.mktemp("high_res_runs")
    mp = pytest.MonkeyPatch()
    seen = _recording_input_sizes(mp)
    full = train(high_res_config(), source, root / "full")
    mp.undo()
    first = train(high_res_config(), source, root / "resumed", max_iterations=KILLED_INSIDE)
    resumed = train(high_res_config(), source, root / "resumed")
    crossing_first = train(high_res_config(), source, root / "crossing", max_iterations=2)
    crossing = train(high_res_config(), source, root / "crossing")
    return {
        "root": root,
        "seen": seen,
        "full": full.losses,
        "first": first.losses,
        "resumed": resumed.losses,
        "crossing": crossing_first.losses + crossing.losses,
    }


def test_model_sees_larger_crops_in_the_phase(runs):
    seen = runs["seen"]
    assert len(seen) == ITERATIONS
    before = [((32, 32), (16, 16))] * (ITERATIONS - PHASE)
    assert seen == before + [((64, 64), (24, 24))] * PHASE
    assert all(np.isfinite(runs["full"]))
    # The stored position embeddings keep their 4x4 grid: only their interpolation changed.
    checkpoint = latest_checkpoint(runs["root"] / "full" / "checkpoints")
    metadata = dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    for network in ("student", "teacher"):
        assert tuple(metadata[f"model.{network}.backbone.pos_embed"].size) == (1, 17, 32)
    config = json.loads((runs["root"] / "full" / "config.json").read_text())
    assert config["high_res"] == {"iterations": 3, "global_crops_size": 64, "local_crops_size": 24}


def test_kill_inside_the_phase_resumes_in_it_with_the_same_losses(runs):
    assert runs["first"] == pytest.approx(runs["full"][:KILLED_INSIDE], rel=1e-5)
    assert len(runs["resumed"]) == ITERATIONS - KILLED_INSIDE
    assert runs["resumed"] == pytest.approx(runs["full"][KILLED_INSIDE:], rel=1e-4, abs=1e-5)
    lines = (runs["root"] / "resumed" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == list(range(ITERATIONS))
    assert latest_checkpoint(runs["root"] / "resumed" / "checkpoints").name == "iter_00000006"


def test_resume_before_the_phase_enters_it_like_an_uninterrupted_run(runs):
    assert runs["crossing"] == pytest.approx(runs["full"], rel=1e-4, abs=1e-5)


def test_cli_refuses_a_high_res_crop_off_the_patch_grid(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "imgs" / "a.png")
    args = [
        "pretrain",
        "--images",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "run"),
        "backbone.patch_size=8",
        "crops.global_crops_size=32",
        "crops.local_crops_size=16",
        "high_res.iterations=1",
        "high_res.global_crops_size=70",
        "--max-iterations",
        "1",  # quick even if it were not refused
    ]
    assert main(args) == 2
    assert "high_res.global_crops_size=70 is not a multiple of the patch size 8" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()
