"""The descriptor trainer's settings (no torch import, so any config reader can load them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.config import check_choices


@dataclass(frozen=True)
class AugmentConfig:
    size: int = 96  # output side (square)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # fraction of the image area kept
    crop_ratio: tuple[float, float] = (0.6, 1.6)  # aspect ratio of the crop
    p_flip: float = 0.5
    p_pad: float = 0.15
    p_jitter: float = 0.8
    p_grayscale: float = 0.2
    p_blur: float = 0.3
    p_text: float = 0.25
    p_emoji: float = 0.15
    p_jpeg: float = 0.4
    jpeg_quality: tuple[int, int] = (15, 90)
    # Edits of real-world copies (DISC21 / AugLy families) beyond SSCD's set; 0 = off.
    p_rotate: float = 0.0  # rotation by up to 30 degrees or a quarter turn, corners filled
    p_perspective: float = 0.0  # a random perspective warp (a photo of a screen or print)
    p_pixelate: float = 0.0  # blocks of 1/6-1/16 of the side
    p_frame: float = 0.0  # a meme frame (caption bars) or screenshot chrome around the view
    p_underlay: float = 0.0  # the view pasted onto another training image (picture in picture)


@dataclass(frozen=True)
class DescriptorTrainConfig:
    arch: str = "resnet18"  # resnet18 | resnet50 | a pretrain.models ViT name
    width: int = 64  # ResNet base width (64 = the standard nets); smaller for quick CPU runs
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # ViT constructor keywords
    dim: int = 512
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # augment.size: train px
    batch_size: int = 128  # images per step (each seen twice)
    max_steps: int = 2000
    time_budget_s: float | None = None  # wall-clock seconds of training, then stop
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.01
    temperature: float = 0.05
    # SSCD: 30 in the paper, 10 advised at scale. On short CPU runs a high weight stalls InfoNCE
    # and even a ramped 3 cost ~1.5 points of micro-AP on the synthetic web, hence a small default.
    entropy_weight: float = 1.0
    entropy_ramp_fraction: float = 0.5  # reach entropy_weight after this fraction of the steps
    mix_p: float = 0.0  # per-image probability of mixup or cutmix (SSCD: 0.05)
    mix_alpha: float = 2.0
    inference_size: int | None = None  # recorded for the embed stage; None: augment.size
    inference_scales: tuple[int, ...] = ()  # recorded multi-scale sizes, e.g. (128, 160, 224)
    # Recorded for the embed stage: average each descriptor with its mirror image's (flips are
    # copy edits; twice the forward cost) and crop uniform borders before resizing (pads are).
    inference_flip: bool = False
    inference_trim_borders: bool = False
    device: str = "auto"
    autocast: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool = True
    num_workers: int = 1  # augmentation processes (0: in the training process)
    threads: int | None = None  # CPU compute threads; None: the cores left by the loader processes
    cache_images: bool = True  # keep decoded, downsized images in memory (pools up to ~10^5)
    seed: int = 0
    warm_start: Path | None = None  # backbone checkpoint to start the trunk from
    log_every: int = 25

    def inference_settings(self, multiple_of: int) -> dict[str, Any]:
        """What a checkpoint of this recipe records for the embed stage (its ``inference``)."""
        return {
            "size": self.inference_size or self.augment.size,
            "resize": "square",
            "scales": list(self.inference_scales),
            "flip": self.inference_flip,
            "trim_borders": self.inference_trim_borders,
            "multiple_of": multiple_of,
        }

    def __post_init__(self) -> None:
        check_choices(self)
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (InfoNCE needs negatives)")
