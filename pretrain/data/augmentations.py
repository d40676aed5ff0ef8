"""Multi-crop augmentation of DINOv2 (Oquab et al., 2023), after DINO (Caron et al.,
ICCV 2021) and SwAV's multi-crop (Caron et al., NeurIPS 2020), written with torch ops.

Per image: 2 global crops (224 px, scale 0.32-1) and 8 local crops (98 px for /14
models, scale 0.05-0.32), each a bicubic RandomResizedCrop and a horizontal flip; then
colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; p 0.8, ops in random
order), grayscale (p 0.2), Gaussian blur (kernel 9, sigma in [0.1, 2]), solarisation
(threshold 128, p 0.2, second global crop only) and ImageNet normalisation.

Blur probabilities per crop (global 1, global 2, local) come in two conventions:

* ``"paper"`` (default): 1.0 / 0.1 / 0.5, as the paper and the code's own arguments intend.
* ``"official"``: 0.0 / 0.9 / 0.5, what the official code actually applies, because its
  blur wrapper uses ``1 - p`` as the probability; the released checkpoints were trained so.

The geometric part works on one uint8 ``[3, H, W]`` image (in data-loader workers, so
uint8 crops cross process boundaries); the photometric part works on any batch of
same-size crops ``[N, 3, h, w]`` with per-sample random parameters, so it can run per
image in workers or batched on the GPU after collation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAYSCALE_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision

BLUR_PROBABILITIES: dict[str, tuple[float, float, float]] = {
    "paper": (1.0, 0.1, 0.5),
    "official": (0.0, 0.9, 0.5),
}


@dataclass(frozen=True)
class MultiCropConfig:
    """Crop counts, sizes and probabilities; defaults are DINOv2's for /14 backbones."""

    global_crops_size: int = 224
    local_crops_size: int = 98
    global_crops_scale: tuple[float, float] = (0.32, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.32)
    local_crops_number: int = 8
    crop_aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    color_jitter_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_probability: float = 0.2
    blur_probabilities: str = "paper"
    blur_kernel_size: int = 9
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_probability: float = 0.2
    solarize_threshold: int = 128

    def __post_init__(self) -> None:
        if self.blur_probabilities not in BLUR_PROBABILITIES:
            raise ValueError(
                f"blur_probabilities must be one of {sorted(BLUR_PROBABILITIES)}, "
                f"got {self.blur_probabilities!r}"
            )


# ---------------------------------------------------------------------- helpers


def to_uint8_chw(image: Any) -> torch.Tensor:
    """A uint8 ``[3, H, W]`` tensor from a tensor, a numpy ``HxWxC`` array or a PIL image."""
    if not isinstance(image, torch.Tensor):
        image = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        image = image.unsqueeze(-1) if image.ndim == 2 else image
        image = image.permute(2, 0, 1)
    if image.dtype != torch.uint8 or image.ndim != 3:
        raise ValueError(
            f"expected a uint8 [C, H, W] image, got {image.dtype} {tuple(image.shape)}"
        )
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.shape[0] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {image.shape[0]}")
    return image


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop covering ``scale`` of the area with aspect ``ratio``
    (log-uniform); 10 tries, then a centre crop clamped to the ratio range (torchvision's
    RandomResizedCrop rule)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(1, *scale, generator).item()
        aspect = math.exp(_uniform(1, *log_ratio, generator).item())
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
            return top, left, crop_h, crop_w
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_h, crop_w = height, int(round(height * max(ratio)))
    else:
        crop_h, crop_w = height, width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resized_crop(image: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop ``box`` out of a uint8 ``[C, H, W]`` image and resize it (bicubic, antialiased)."""
    top, left, crop_h, crop_w = box
    crop = image[:, top : top + crop_h, left : left + crop_w].unsqueeze(0).float()
    resized = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)
    return resized.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` float -> ``[N, 1, H, W]`` luma."""
    weights = x.new_tensor(GRAYSCALE_WEIGHTS).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(factor, x)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma (one value per image)."""
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_sample(factor, x)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the per-pixel luma."""
    f = _per_sample(factor, x)
    return (f * x + (1 - f) * rgb_to_grayscale(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (fraction of a turn, in [-0.5, 0.5]) through HSV."""
    red, green, blue = x.unbind(dim=1)
    max_c, _ = x.max(dim=1)
    min_c, _ = x.min(dim=1)
    delta = max_c - min_c
    value = max_c
    saturation = delta / torch.where(max_c > 0, max_c, torch.ones_like(max_c))
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        max_c == red,
        ((green - blue) / safe_delta) % 6,
        torch.where(max_c == green, (blue - red) / safe_delta + 2, (red - green) / safe_delta + 4),
    )
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + shift.to(x.device, x.dtype).view(-1, 1, 1)) % 1.0
    # HSV -> RGB: channel n is v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = (offset + hue * 6) % 6
        ramp = torch.minimum(k, 4 - k).clamp(0, 1)
        channels.append(value - value * saturation * ramp)
    return torch.stack(channels, dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int = 9) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image and reflect padding."""
    num, channels, height, width = x.shape
    half = (kernel_size - 1) / 2
    offsets = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    sigma = sigma.to(x.device, x.dtype).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    pad = kernel_size // 2
    flat = x.reshape(1, num * channels, height, width)
    flat = F.pad(flat, (pad, pad, pad, pad), mode="reflect")
    groups = num * channels
    flat = F.conv2d(flat, kernel.view(groups, 1, 1, kernel_size), groups=groups)
    flat = F.conv2d(flat, kernel.view(groups, 1, kernel_size, 1), groups=groups)
    return flat.view(num, channels, height, width)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` (same scale as ``x``)."""
    return torch.where(x >= threshold, 1.0 - x, x)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------- pipeline

CROP_KINDS = ("global1", "global2", "local")


class MultiCropAugmentation:
    """DINOv2's multi-crop views of one image, or the photometric part on a crop batch."""

    def __init__(
        self,
        config: MultiCropConfig | None = None,
        generator: torch.Generator | None = None,
        geometric_only: bool = False,
    ) -> None:
        self.config = config or MultiCropConfig()
        self.generator = generator
        self.geometric_only = geometric_only
        blur = BLUR_PROBABILITIES[self.config.blur_probabilities]
        self.blur_probability = dict(zip(CROP_KINDS, blur))
        self.solarize_probability = {
            "global1": 0.0,
            "global2": self.config.solarize_probability,
            "local": 0.0,
        }

    # -- geometric: one image, uint8 in and out
    def _crop(self, image: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
        box = random_resized_crop_box(
            image.shape[1], image.shape[2], scale, self.config.crop_aspect_ratio, self.generator
        )
        crop = resized_crop(image, box, size)
        if torch.rand(1, generator=self.generator).item() < self.config.flip_probability:
            crop = crop.flip(-1)
        return crop

    def geometric(self, image: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """uint8 ``(global_crops, local_crops)`` of one image."""
        image = to_uint8_chw(image)
        cfg = self.config
        global_crops = [
            self._crop(image, cfg.global_crops_size, cfg.global_crops_scale) for _ in range(2)
        ]
        local_crops = [
            self._crop(image, cfg.local_crops_size, cfg.local_crops_scale)
            for _ in range(cfg.local_crops_number)
        ]
        return global_crops, local_crops

    # -- photometric: a batch of same-size crops
    def _draw(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)

    def _color_jitter(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        n = x.shape[0]
        applied = self._draw(n) < cfg.color_jitter_probability
        ops: list[tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor]] = [
            (
                adjust_brightness,
                _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, self.generator),
            ),
            (adjust_contrast, _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, self.generator)),
            (
                adjust_saturation,
                _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, self.generator),
            ),
            (adjust_hue, _uniform(n, -cfg.hue, cfg.hue, self.generator)),
        ]
        # torchvision's ColorJitter applies its four ops in a random order per image.
        order = torch.rand(n, len(ops), generator=self.generator).argsort(dim=1)
        for position in range(len(ops)):
            for op_index, (op, factors) in enumerate(ops):
                chosen = applied & (order[:, position] == op_index)
                if chosen.any():
                    index = chosen.nonzero().squeeze(1).to(x.device)
                    x[index] = op(x[index], factors[chosen])
        return x

    def photometric(self, crops: torch.Tensor, crop_kind: str) -> torch.Tensor:
        """Colour jitter, grayscale, blur, solarise and normalise uint8 ``[N, 3, h, w]``
        crops of one kind (``global1``, ``global2`` or ``local``); returns float32."""
        if crop_kind not in CROP_KINDS:
            raise ValueError(f"crop_kind must be one of {CROP_KINDS}, got {crop_kind!r}")
        if crops.dtype != torch.uint8 or crops.ndim != 4:
            raise ValueError(f"expected uint8 [N, 3, h, w], got {crops.dtype} {tuple(crops.shape)}")
        cfg = self.config
        n = crops.shape[0]
        x = crops.float() / 255.0
        x = self._color_jitter(x)
        gray = (self._draw(n) < cfg.grayscale_probability).to(x.device)
        x = torch.where(gray.view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
        blurred = self._draw(n) < self.blur_probability[crop_kind]
        sigma = _uniform(n, *cfg.blur_sigma, self.generator)
        if blurred.any():
            index = blurred.nonzero().squeeze(1).to(x.device)
            x[index] = gaussian_blur(x[index], sigma[blurred], cfg.blur_kernel_size)
        solarized = (self._draw(n) < self.solarize_probability[crop_kind]).to(x.device)
        x = torch.where(solarized.view(-1, 1, 1, 1), solarize(x, cfg.solarize_threshold / 255), x)
        return normalize(x)

    def photometric_collated(
        self, global_crops: torch.Tensor, local_crops: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Photometric part for crop-major collated uint8 batches (``[2B, ...]`` globals:
        all first crops then all second crops; ``[n_local * B, ...]`` locals), e.g. on GPU."""
        half = global_crops.shape[0] // 2
        first = self.photometric(global_crops[:half], "global1")
        second = self.photometric(global_crops[half:], "global2")
        return torch.cat((first, second)), self.photometric(local_crops, "local")

    def __call__(self, image: Any) -> dict[str, Any]:
        """The official output dict: ``global_crops``, ``global_crops_teacher`` (the same
        two crops), ``local_crops`` and ``offsets``. uint8 crops if ``geometric_only``."""
        global_crops, local_crops = self.geometric(image)
        if not self.geometric_only:
            global_crops = [
                self.photometric(crop.unsqueeze(0), kind).squeeze(0)
                for crop, kind in zip(global_crops, ("global1", "global2"))
            ]
            if local_crops:
                local_batch = self.photometric(torch.stack(local_crops), "local")
                local_crops = list(local_batch.unbind(0))
        return {
            "global_crops": global_crops,
            "global_crops_teacher": global_crops,
            "local_crops": local_crops,
            "offsets": (),
        }
