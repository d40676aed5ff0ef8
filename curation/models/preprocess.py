"""Inference preprocessing: PIL image -> uint8 array on the CPU, uint8 batch -> normalised float on
the device.

The split keeps the worker threads' output small (uint8, a quarter of float32) and moves the
normalisation, the layout change and any rescaling for multi-scale inference onto the device. A
``[B, H, W, 3]`` uint8 batch permuted to ``[B, 3, H, W]`` *is* channels-last memory, so the conv
nets get channels-last input for free.

SSCD's inference recipe (SPEC §2): ImageNet mean/std; resize the short edge to 288 keeping the
aspect ratio (DISC evaluation), or resize to a square (320 x 320 is batch-friendly). DINOv2's k-NN
recipe (SPEC §7): resize the short edge to 256, centre-crop 224.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from curation.models.borders import trim_uniform_borders

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("square", "short_side", "center_crop")


@dataclass(frozen=True)
class Preprocessing:
    """How one model wants its pixels.

    ``resize``: ``square`` (``size`` x ``size``, aspect ratio not kept), ``short_side`` (short
    edge to ``size``, aspect kept: images of different shapes cannot share a batch) or
    ``center_crop`` (short edge to ``size * 8 / 7``, then a centred ``size`` square).

    Sizes: the long edge is scaled by the short edge's factor and rounded to the nearest pixel
    (each side to the nearest ``multiple_of``; torchvision's ``Resize`` truncates instead, at most
    one pixel apart); a crop with an odd margin starts at ``margin // 2``. Resizing is Pillow's
    antialiased bilinear (bicubic for ``center_crop``, as DINOv2's evaluation transform).
    """

    size: int = 288
    resize: str = "square"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    multiple_of: int = 1  # ViTs need sides that are multiples of the patch size
    # Crop uniform borders off first (copy descriptors: padding is a copy edit; see
    # curation/models/borders.py).
    trim_borders: bool = False

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.size <= 0:
            raise ValueError(f"size must be positive, got {self.size}")


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def resize_image(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize an RGB PIL image as ``prep`` says (bilinear with PIL's antialiasing)."""
    if prep.trim_borders:
        image = trim_uniform_borders(image)
    size, multiple = prep.size, prep.multiple_of
    width, height = image.size
    if prep.resize == "square":
        side = _round_to(size, multiple)
        return image.resize((side, side), Image.Resampling.BILINEAR)
    if prep.resize == "short_side":
        scale = size / min(width, height)
        target = (_round_to(width * scale, multiple), _round_to(height * scale, multiple))
        return image.resize(target, Image.Resampling.BILINEAR)
    crop = _round_to(size, multiple)
    short = round(crop * 8 / 7)
    scale = short / min(width, height)
    new_w, new_h = max(crop, round(width * scale)), max(crop, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    return image.crop((left, top, left + crop, top + crop))


def decode_floor(prep: Preprocessing) -> tuple[int, int]:
    """The fewest pixels per side a decoded image needs before :func:`resize_image` (for a reduced
    JPEG decode, :func:`curation.imaging.decode_rgb`'s ``draft_size``)."""
    side = _round_to(prep.size, prep.multiple_of)
    if prep.resize == "center_crop":
        side = round(side * 8 / 7)
    return side, side


def image_to_uint8(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The resized image as a contiguous ``[H, W, 3]`` uint8 array (what worker threads return)."""
    return np.asarray(resize_image(image.convert("RGB"), prep), dtype=np.uint8)


def normalize_batch(
    batch: torch.Tensor,
    prep: Preprocessing,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 (any device) -> ``[B, 3, H, W]`` normalised ``dtype``."""
    x = batch.permute(0, 3, 1, 2).float()
    mean = torch.tensor(prep.mean, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(prep.std, device=x.device).view(1, 3, 1, 1) * 255.0
    x = ((x - mean) / std).to(dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


def rescale_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Rescale a normalised square batch to ``size`` x ``size`` (multi-scale inference)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    memory_format = (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
    return out.to(x.dtype).contiguous(memory_format=memory_format)
