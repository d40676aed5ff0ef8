import math

import numpy as np
import pytest
import torch

from pretrain.data.augmentations import MultiCropConfig
from pretrain.data.batches import TrainingBatchMaker
from pretrain.layers.dino_head import DINOHeadConfig
from pretrain.train.config import (
    BackboneConfig,
    CropConfig,
    LossConfig,
    OptimConfig,
    PretrainConfig,
    PretrainConfigError,
)
from pretrain.train.meta_arch import SSLMetaArch
from pretrain.train.optim import apply_schedules, build_optimizer, build_param_groups
from pretrain.train.schedules import build_schedules, cosine_schedule

DEPTH = 2


def tiny_config(**overrides):
    base = dict(
        backbone=BackboneConfig(
            arch="vit", patch_size=8, embed_dim=32, depth=DEPTH, num_heads=2, drop_path_rate=0.0
        ),
        loss=LossConfig(dino_head=DINOHeadConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16)),
        optim=OptimConfig(
            epochs=2,
            iterations_per_epoch=10,
            base_lr=4e-3,
            warmup_epochs=1,
            warmup_teacher_temp_epochs=1,
            freeze_last_layer_epochs=0,
        ),
        crops=CropConfig(global_crops_size=32, local_crops_size=16, local_crops_number=2),
        batch_size_per_rank=4,
    )
    base.update(overrides)
    return PretrainConfig(**base)


def fixed_batch(cfg, seed=0, batch_size=4):
    generator = np.random.default_rng(seed)
    images = [generator.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(batch_size)]
    crops = MultiCropConfig(
        global_crops_size=cfg.crops.global_crops_size,
        local_crops_size=cfg.crops.local_crops_size,
        local_crops_number=cfg.crops.local_crops_number,
    )
    maker = TrainingBatchMaker(crops, cfg.backbone.patch_size)
    return maker(images, [str(i) for i in range(batch_size)], seed)


def _groups_by_name(model):
    groups = build_param_groups(
        model.student.backbone, model.student.heads(), model.depth, model.cfg.optim
    )
    return {name: group for group in groups for name in group["names"]}


def test_weight_decay_spares_biases_norms_and_layerscale_only():
    torch.manual_seed(0)
    model = SSLMetaArch(tiny_config())
    by_name = _groups_by_name(model)
    no_decay = {n for n, g in by_name.items() if g["wd_multiplier"] == 0}
    decayed = set(by_name) - no_decay
    assert "backbone.norm.weight" in no_decay
    assert "backbone.blocks.0.norm1.weight" in no_decay
    assert "backbone.blocks.1.ls2.gamma" in no_decay
    assert "backbone.blocks.0.attn.qkv.bias" in no_decay
    assert "head.mlp.0.bias" in no_decay
    for name in ("pos_embed", "cls_token", "mask_token", "patch_embed.proj.weight"):
        assert f"backbone.{name}" in decayed
    assert "backbone.blocks.1.mlp.fc1.weight" in decayed
    assert "head.last_layer.weight_v" in decayed
    # Every trainable student parameter is in exactly one group; the frozen weight_g in none.
    trainable = [p for p in model.student.parameters() if p.requires_grad]
    assert len(by_name) == len(trainable)
    assert "head.last_layer.weight_g" not in by_name


def test_layerwise_lr_decay_and_patch_embed_multiplier():
    torch.manual_seed(0)
    model = SSLMetaArch(tiny_config())
    by_name = _groups_by_name(model)
    decay = model.cfg.optim.layerwise_decay  # 0.9; depth 2: ids 0..3
    assert by_name["backbone.pos_embed"]["lr_multiplier"] == pytest.approx(decay**3)
    assert by_name["backbone.patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(
        decay**3 * 0.2
    )
    assert by_name["backbone.blocks.0.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(decay**2)
    assert by_name["backbone.blocks.1.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(decay)
    assert by_name["backbone.norm.weight"]["lr_multiplier"] == 1.0
    assert by_name["head.mlp.0.weight"]["lr_multiplier"] == 1.0
    assert by_name["head.last_layer.weight_v"]["is_last_layer"]
    assert not by_name["head.mlp.0.weight"]["is_last_layer"]


def test_apply_schedules_sets_group_lr_and_weight_decay():
    torch.manual_seed(0)
    model = SSLMetaArch(tiny_config())
    groups = build_param_groups(
        model.student.backbone, model.student.heads(), model.depth, model.cfg.optim
    )
    optimizer = build_optimizer(groups, model.cfg.optim)
    apply_schedules(optimizer, lr=1.0, weight_decay=0.5, last_layer_lr=0.0)
    for group in optimizer.param_groups:
        expected_lr = 0.0 if group["is_last_layer"] else group["lr_multiplier"]
        assert group["lr"] == pytest.approx(expected_lr)
        assert group["weight_decay"] == pytest.approx(0.5 * group["wd_multiplier"])


def test_schedules_endpoints_and_batch_size_rule():
    optim = OptimConfig(
        epochs=4,
        iterations_per_epoch=25,
        warmup_epochs=1,
        warmup_teacher_temp_epochs=2,
        freeze_last_layer_epochs=1,
    )
    schedules = build_schedules(optim, total_batch_size=256)
    peak = 4e-3 * math.sqrt(256 / 1024)
    assert len(schedules.lr) == 100
    assert schedules.lr[0] == 0.0
    assert schedules.lr[25] == pytest.approx(peak)  # end of warmup
    assert schedules.lr.max() == pytest.approx(peak)
    assert schedules.lr[-1] == pytest.approx(1e-6, abs=peak * 1e-3)  # cosine ends one step short
    assert np.all(np.diff(schedules.lr[25:]) <= 0)
    assert schedules.weight_decay[0] == pytest.approx(0.04)
    assert schedules.weight_decay[-1] == pytest.approx(0.4, rel=1e-3)
    assert np.all(np.diff(schedules.weight_decay) >= 0)
    assert schedules.momentum[0] == pytest.approx(0.992)
    assert schedules.momentum[-1] == pytest.approx(1.0, abs=1e-5)
    assert schedules.teacher_temp[0] == pytest.approx(0.04)
    assert schedules.teacher_temp[50:].tolist() == pytest.approx([0.07] * 50)
    assert np.all(schedules.last_layer_lr[:25] == 0)
    assert schedules.last_layer_lr[25:].tolist() == pytest.approx(schedules.lr[25:].tolist())
    assert schedules.at(10_000)["lr"] == schedules.lr[-1]


def test_cosine_schedule_without_warmup_starts_at_base():
    values = cosine_schedule(1.0, 0.0, total_iters=11)
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.0, abs=0.03)


def test_teacher_starts_as_student_and_follows_the_ema_rule():
    torch.manual_seed(0)
    model = SSLMetaArch(tiny_config())
    student = dict(model.student.named_parameters())
    teacher = dict(model.teacher.named_parameters())
    assert student.keys() == teacher.keys()
    for name in student:
        assert torch.equal(student[name], teacher[name])
        assert not teacher[name].requires_grad
    before = {n: p.detach().clone() for n, p in teacher.items()}
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    model.update_teacher(0.9)
    for name in student:
        expected = 0.9 * before[name] + 0.1 * student[name].detach()
        torch.testing.assert_close(teacher[name], expected)


def test_loss_dict_names_and_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = SSLMetaArch(cfg)
    model.train()
    batch = fixed_batch(cfg)
    groups = build_param_groups(
        model.student.backbone, model.student.heads(), model.depth, cfg.optim
    )
    optimizer = build_optimizer(groups, cfg.optim)
    losses = []
    for _ in range(8):
        optimizer.zero_grad(set_to_none=True)
        total, loss_dict = model.forward_backward(batch, teacher_temp=0.07)
        model.clip_gradients(cfg.optim.clip_grad)
        apply_schedules(optimizer, lr=2e-3, weight_decay=0.04, last_layer_lr=2e-3)
        optimizer.step()
        model.update_teacher(0.99)
        losses.append(loss_dict["total_loss"])
    assert set(loss_dict) == {
        "dino_local_crops_loss",
        "dino_global_crops_loss",
        "koleo_loss",
        "ibot_loss",
        "total_loss",
    }
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.05


def test_gradient_clipping_is_per_sub_network():
    torch.manual_seed(0)
    cfg = tiny_config(
        loss=LossConfig(
            dino_head=DINOHeadConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16),
            separate_ibot_head=True,
        )
    )
    model = SSLMetaArch(cfg)
    model.forward_backward(fixed_batch(cfg), teacher_temp=0.07)
    for p in model.student.parameters():
        if p.grad is not None:
            p.grad.mul_(1000.0)
    norms = model.clip_gradients(3.0)
    assert set(norms) == {"backbone", "head0", "head1"}
    for module in model.student.sub_networks().values():
        grads = [p.grad.norm() for p in module.parameters() if p.grad is not None]
        assert torch.linalg.vector_norm(torch.stack(grads)) == pytest.approx(3.0, rel=1e-3)


def test_impossible_configs_are_refused():
    with pytest.raises(PretrainConfigError, match="multiple of the patch size"):
        tiny_config(crops=CropConfig(global_crops_size=36, local_crops_size=16)).check()
    with pytest.raises(PretrainConfigError, match="KoLeo needs at least 2"):
        tiny_config(batch_size_per_rank=1).check()
    with pytest.raises(PretrainConfigError, match="fewer ranks"):
        tiny_config().check(world_size=4, num_sources=3)
    tiny_config().check(world_size=2, num_sources=10)
