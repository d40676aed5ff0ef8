"""Configuration of DINOv2 pretraining: frozen dataclasses, defaults as the official recipe
(Oquab et al., 2023; SPEC.md section 4), checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pretrain.layers.dino_head import DINOHeadConfig


class PretrainConfigError(ValueError):
    """A configuration that cannot train; the message says what to change."""


@dataclass(frozen=True)
class BackboneConfig:
    """The student ViT (the teacher is the same without stochastic depth)."""

    arch: str = "vit_small"
    patch_size: int = 14
    embed_dim: int | None = None  # None: the arch's own; needed for arch="vit"
    depth: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.3
    drop_path_uniform: bool = True
    layerscale: float | None = 1e-5
    num_register_tokens: int = 0
    ffn_layer: str = "mlp"


@dataclass(frozen=True)
class LossConfig:
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    centering: Literal["softmax", "sinkhorn_knopp"] = "softmax"
    student_temp: float = 0.1
    center_momentum: float = 0.9
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_probability: float = 0.5
    separate_ibot_head: bool = False
    dino_head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    ibot_head: DINOHeadConfig | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Schedules in epochs of ``iterations_per_epoch`` (the official 1,250)."""

    epochs: int = 100
    iterations_per_epoch: int = 1250
    base_lr: float = 4e-3
    lr_scaling_reference: float = 1024.0  # lr = base_lr * sqrt(total batch / reference)
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.992
    final_momentum_teacher: float = 1.0
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    freeze_last_layer_epochs: float = 1
    clip_grad: float = 3.0
    adamw_beta1: float = 0.9
    adamw_beta2: float = 0.999

    @property
    def total_iterations(self) -> int:
        return int(self.epochs * self.iterations_per_epoch)


@dataclass(frozen=True)
class CropConfig:
    global_crops_size: int = 224
    local_crops_size: int = 98
    local_crops_number: int = 8
    global_crops_scale: tuple[float, float] = (0.32, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.32)
    blur_probabilities: str = "paper"


@dataclass(frozen=True)
class ParallelConfig:
    """How ranks share the work (:mod:`pretrain.train.fsdp`; SPEC.md section 6).

    ``strategy``: ``fsdp`` shards parameters, gradients and optimizer state over the ranks
    (PyTorch FSDP2, one unit per transformer block, per head and per backbone); ``ddp``
    keeps a full replica per rank and averages gradients with an all-reduce. A single
    process uses neither. ``mixed_precision``: ``auto`` is bf16 compute with fp32 master
    weights and reductions on CUDA and full precision on CPU (FSDP only). The student's
    ``reshard_after_forward=False`` is the official SHARD_GRAD_OP (more memory, fewer
    all-gathers). ``activation_checkpointing`` recomputes each block in the backward;
    ``compile`` runs each block through ``torch.compile``.
    """

    strategy: Literal["fsdp", "ddp"] = "fsdp"
    mixed_precision: Literal["auto", "bf16", "fp32"] = "auto"
    reshard_after_forward: bool = True
    activation_checkpointing: bool = False
    compile: bool = False


@dataclass(frozen=True)
class HighResConfig:
    """The final high-resolution phase (:mod:`pretrain.train.high_res`): the last
    ``iterations`` of the run with global crops of ``global_crops_size`` (and local crops of
    ``local_crops_size``; None keeps ``crops.local_crops_size``). 0 iterations: no phase."""

    iterations: int = 0
    global_crops_size: int = 518
    local_crops_size: int | None = None


@dataclass(frozen=True)
class DistillConfig:
    """Distillation from a frozen, larger teacher (:mod:`pretrain.train.distill`):
    ``teacher_checkpoint`` is one of our training checkpoints (with its heads); None trains
    by self-distillation as usual."""

    teacher_checkpoint: str | None = None


@dataclass(frozen=True)
class PretrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    high_res: HighResConfig = field(default_factory=HighResConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    batch_size_per_rank: int = 64
    num_workers: int = 8
    seed: int = 0
    checkpoint_every: int = 1250
    keep_checkpoints: int = 3

    def check(self, world_size: int = 1, num_sources: int | None = None) -> None:
        """Refuse configurations that cannot work, saying what to change."""
        patch = self.backbone.patch_size
        sizes = {
            f"crops.{n}": getattr(self.crops, n) for n in ("global_crops_size", "local_crops_size")
        }
        if self.high_res.iterations:
            sizes["high_res.global_crops_size"] = self.high_res.global_crops_size
            if self.high_res.local_crops_size is not None:
                sizes["high_res.local_crops_size"] = self.high_res.local_crops_size
        for name, size in sizes.items():
            if size % patch:
                raise PretrainConfigError(
                    f"{name}={size} is not a multiple of the patch size {patch}; "
                    f"use e.g. {max(patch, size // patch * patch)}"
                )
        if self.loss.koleo_weight > 0 and self.batch_size_per_rank < 2:
            raise PretrainConfigError(
                "KoLeo needs at least 2 images per rank (batch_size_per_rank="
                f"{self.batch_size_per_rank}); raise the batch size or set loss.koleo_weight=0"
            )
        if self.batch_size_per_rank < 1:
            raise PretrainConfigError("batch_size_per_rank must be >= 1")
        if num_sources is not None and num_sources < world_size:
            raise PretrainConfigError(
                f"{world_size} ranks but only {num_sources} samples/shards to share; "
                "use fewer ranks or more data"
            )
        if self.optim.total_iterations < 1:
            raise PretrainConfigError("optim.epochs * optim.iterations_per_epoch must be >= 1")
        if not 0 <= self.high_res.iterations <= self.optim.total_iterations:
            raise PretrainConfigError(
                f"high_res.iterations={self.high_res.iterations} must be between 0 and the "
                f"run's {self.optim.total_iterations} iterations (the phase is their tail)"
            )
