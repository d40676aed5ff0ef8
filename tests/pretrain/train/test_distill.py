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
from pretrain.data.augmentations import MultiCropConfig
from pretrain.data.batches import TrainingBatchMaker
from pretrain.data.shards import write_parquet_shards
from pretrain.layers.dino_head import DINOHeadConfig
from pretrain.train.checkpoint import (
    consolidate_checkpoint,
    latest_checkpoint,
    read_teacher_backbone,
)
from pretrain.train.config import BackboneConfig, DistillConfig
from pretrain.train.distill import (
    DistillationError,
    build_frozen_teacher,
    build_meta_arch,
    check_teacher_fits,
    describe_teacher,
    distillation_config,
    every_patch_as_target,
)
from pretrain.train.loop import train
from pretrain.train.optim import apply_schedules, build_optimizer, build_param_groups

sys.path.insert(0, str(Path(__file__).parent))
from test_meta_arch import tiny_config  # noqa: E402

from tests.pretrain.train.test_pretrain_command import TINY

# The teacher is larger than the student (tiny_config: 32-d, 2 blocks, 2 heads) and has 4
# heads of 12 dims, which its shapes alone would not tell (DINOv2 heads are 64 wide).
TEACHER = BackboneConfig(
    arch="vit", patch_size=8, embed_dim=48, depth=3, num_heads=4, drop_path_rate=0.0
)
STUDENT_ARGS = TINY  # the student: test_pretrain_command's tiny ViT


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A teacher run folder (one iteration of training) and its consolidated file."""
    root = tmp_path_factory.mktemp("distill_teacher")
    images = [(f"k{i}", image) for i, image in enumerate(_images())]
    write_parquet_shards(images, str(root / "shards"), samples_per_shard=8)
    cfg = dataclasses.replace(tiny_config(), backbone=TEACHER, num_workers=0)
    train(cfg, str(root / "shards"), root / "run", max_iterations=1)
    consolidated = consolidate_checkpoint(root / "run", root / "teacher.pth")
    return {"run": root / "run", "file": consolidated, "root": root}


def student_config(teacher_path, **overrides):
    cfg = dataclasses.replace(tiny_config(), distill=DistillConfig(str(teacher_path)))
    return distillation_config(dataclasses.replace(cfg, **overrides))


def unmasked_batch(cfg, batch_size=4):
    crops = MultiCropConfig(
        global_crops_size=cfg.crops.global_crops_size,
        local_crops_size=cfg.crops.local_crops_size,
        local_crops_number=cfg.crops.local_crops_number,
    )
    maker = TrainingBatchMaker(crops, cfg.backbone.patch_size, mask_probability=0.0)
    return maker(_images(batch_size), [str(i) for i in range(batch_size)], 0)


def test_distillation_config_is_the_papers_recipe(teacher):
    cfg = student_config(teacher["run"])
    assert cfg.loss.centering == "sinkhorn_knopp"
    assert cfg.loss.mask_probability == 0
    assert cfg.backbone.drop_path_rate == 0
    plain = tiny_config()
    assert distillation_config(plain) is plain


@pytest.mark.parametrize("where", ["run", "checkpoint", "file"])
def test_teacher_architecture_is_read_from_the_checkpoint(teacher, where):
    path = {
        "run": teacher["run"],
        "checkpoint": latest_checkpoint(teacher["run"] / "checkpoints"),
        "file": teacher["file"],
    }[where]
    spec = describe_teacher(path)
    b = spec.backbone
    assert (b.patch_size, b.embed_dim, b.depth, b.num_heads) == (8, 48, 3, 4)
    assert spec.img_size == 32 and spec.ibot_head is None
    assert spec.dino_head == DINOHeadConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16)


def test_frozen_teacher_holds_the_checkpoints_ema_teacher(teacher):
    network = build_frozen_teacher(describe_teacher(teacher["file"]))
    stored = read_teacher_backbone(teacher["run"])
    torch.testing.assert_close(network.backbone.state_dict(), stored, rtol=0, atol=0)
    heads = torch.load(teacher["file"], weights_only=True)["model"]
    assert torch.equal(
        network.dino_head.last_layer.weight_v, heads["teacher.dino_head.last_layer.weight_v"]
    )
    assert not any(p.requires_grad for p in network.parameters())


def test_steps_move_the_student_and_leave_the_teacher_bitwise(teacher):
    cfg = student_config(teacher["run"])
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    model.train()
    assert not model.frozen_teacher.training
    frozen_before = {k: v.clone() for k, v in model.frozen_teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    ema_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    groups = build_param_groups(
        model.student.backbone, model.student.heads(), model.depth, cfg.optim
    )
    optimizer = build_optimizer(groups, cfg.optim)
    batch = unmasked_batch(cfg)
    losses = []
    for _ in range(5):
        apply_schedules(optimizer, lr=1e-3, weight_decay=0.04, last_layer_lr=1e-3)
        optimizer.zero_grad(set_to_none=True)
        _, loss_dict = model.forward_backward(batch, teacher_temp=0.04)
        model.clip_gradients(3.0)
        optimizer.step()
        model.update_teacher(0.9)
        losses.append(loss_dict["total_loss"])
    for name, value in model.frozen_teacher.state_dict().items():
        assert torch.equal(value, frozen_before[name]), name
    assert all(p.grad is None for p in model.frozen_teacher.parameters())
    moved = [
        k for k, v in model.student.state_dict().items() if not torch.equal(v, student_before[k])
    ]
    assert "backbone.blocks.1.attn.qkv.weight" in moved and "dino_head.mlp.0.weight" in moved
    assert not torch.equal(model.teacher.backbone.cls_token, ema_before["backbone.cls_token"])
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 1.0
    assert loss_dict["ibot_loss"] > 0 and loss_dict["dino_global_crops_loss"] > 0


def test_targets_come_from_the_frozen_teacher_not_the_ema(teacher):
    cfg = student_config(teacher["run"])
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    batch = every_patch_as_target(unmasked_batch(cfg))
    before = model.teacher_targets(batch, 0.04)
    with torch.no_grad():
        model.teacher.dino_head.mlp[0].weight.mul_(3.0)  # the student's EMA: no effect
    same = model.teacher_targets(batch, 0.04)
    torch.testing.assert_close(same.dino, before.dino)
    torch.testing.assert_close(same.ibot, before.ibot)
    with torch.no_grad():
        model.frozen_teacher.dino_head.mlp[0].weight.mul_(3.0)
    changed = model.teacher_targets(batch, 0.04)
    assert not torch.allclose(changed.dino, before.dino)
    # Sinkhorn-Knopp: each prototype gets about the same share of the batch.
    shares = before.dino.flatten(0, 1).sum(dim=0)
    torch.testing.assert_close(
        shares, torch.full_like(shares, shares.mean().item()), rtol=0.05, atol=0
    )


def test_ibot_targets_every_patch_of_both_unmasked_global_crops(teacher):
    cfg = student_config(teacher["run"])
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    batch = unmasked_batch(cfg)
    assert not batch["collated_masks"].any()
    patches = (cfg.crops.global_crops_size // 8) ** 2
    every = every_patch_as_target(batch)
    student = model.student_outputs(every)
    assert student.masked_patch_logits.shape == (2 * 4 * patches, 64)
    assert model.teacher_targets(every, 0.04).ibot.shape == (2 * 4 * patches, 64)
    assert every["masks_weight"].sum().item() == pytest.approx(2 * 4)  # each crop counts once
    masked = dict(batch, collated_masks=torch.ones_like(batch["collated_masks"]))
    with pytest.raises(DistillationError, match="must be unmasked"):
        every_patch_as_target(masked)


def test_checkpoints_without_heads_are_refused(teacher, tmp_path):
    backbone_only = consolidate_checkpoint(
        teacher["run"], tmp_path / "backbone.pth", teacher_backbone=True
    )
    with pytest.raises(DistillationError, match="holds a backbone without DINO/iBOT heads"):
        describe_teacher(backbone_only)
    official = tmp_path / "dinov2_vits14_pretrain.pth"  # a release: a bare backbone state dict
    torch.save(
        build_frozen_teacher(describe_teacher(teacher["file"])).backbone.state_dict(), official
    )
    with pytest.raises(DistillationError, match="without DINO/iBOT heads.*training checkpoint"):
        describe_teacher(official)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DistillationError, match="is not a torch checkpoint"):
        describe_teacher(junk)


def test_students_that_do_not_pair_with_the_teacher_are_refused(teacher):
    spec = describe_teacher(teacher["run"])
    fewer = tiny_config().loss
    fewer = dataclasses.replace(fewer, dino_head=dataclasses.replace(fewer.dino_head, out_dim=32))
    with pytest.raises(
        DistillationError,
        match="DINO head has 64 prototypes, the student's 32: set loss.dino_head.out_dim=64",
    ):
        check_teacher_fits(student_config(teacher["run"], loss=fewer), spec)
    separate = dataclasses.replace(
        tiny_config().loss, separate_ibot_head=True, ibot_head=DINOHeadConfig(out_dim=128)
    )
    with pytest.raises(DistillationError, match="iBOT head has 64 prototypes, the student's 128"):
        check_teacher_fits(student_config(teacher["run"], loss=separate), spec)
    patch16 = dataclasses.replace(tiny_config().backbone, patch_size=16)
    with pytest.raises(DistillationError, match="patch size 8, the student 16"):
        check_teacher_fits(student_config(teacher["run"], backbone=patch16), spec)
    check_teacher_fits(student_config(teacher["run"]), spec)  # the matching student passes


def _teacher_tensors(checkpoint, prefix):
    metadata = dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    wanted = {
        k: torch.empty(m.size, dtype=m.properties.dtype)
        for k, m in metadata.items()
        if k.startswith(prefix) and hasattr(m, "size")
    }
    dcp.load(wanted, checkpoint_id=str(checkpoint), no_dist=True)
    return {k[len(prefix) :]: v for k, v in wanted.items()}


def test_cli_distills_resumes_and_refuses(teacher, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(_images(4, seed=1)):
        Image.fromarray(image).save(images / f"{i}.png")
    out = tmp_path / "student"
    args = ["pretrain", "--images", str(images), "--out", str(out), *STUDENT_ARGS]
    distill = ["--distill-from", str(teacher["run"])]
    assert main([*args, *distill, "--max-iterations", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iterations"] == 2 and np.isfinite(summary["last_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["distill"]["teacher_checkpoint"] == str(teacher["run"])
    assert config["loss"]["centering"] == "sinkhorn_knopp"
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint.name == "iter_00000002"
    # The frozen teacher went through two optimizer steps unchanged; the student is 32-d.
    frozen = _teacher_tensors(checkpoint, "model.frozen_teacher.")
    original = _teacher_tensors(latest_checkpoint(teacher["run"] / "checkpoints"), "model.teacher.")
    assert frozen.keys() == original.keys()
    assert all(torch.equal(frozen[k], original[k]) for k in frozen)
    assert read_teacher_backbone(out)["cls_token"].shape == (1, 1, 32)  # the released EMA

    assert main([*args, "--max-iterations", "3"]) == 2
    assert "is from a distillation run: resume it with --distill-from" in capsys.readouterr().err
    assert main([*args, *distill, "--max-iterations", "3"]) == 0
    assert latest_checkpoint(out / "checkpoints").name == "iter_00000003"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1, 2]

    headless = consolidate_checkpoint(teacher["run"], tmp_path / "b.pth", teacher_backbone=True)
    other = tmp_path / "other"
    # --max-iterations 1: quick even if it were not refused
    bad = ["pretrain", "--images", str(images), "--out", str(other), "--max-iterations", "1"]
    bad += STUDENT_ARGS
    assert main([*bad, "--distill-from", str(headless)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("lvd pretrain: error: ")
    assert "holds a backbone without DINO/iBOT heads" in errors[0]
    assert main([*bad, "loss.dino_head.out_dim=32", *distill]) == 2
    assert "set loss.dino_head.out_dim=64" in capsys.readouterr().err
    assert not other.exists()
