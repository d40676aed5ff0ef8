"""Patch embedding of the Vision Transformer (Dosovitskiy et al., ICLR 2021).

Keys match the official DINOv2 backbones: ``patch_embed.proj.{weight,bias}``.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and project each to ``embed_dim``.

    Input ``[B, C, H, W]`` with ``H`` and ``W`` multiples of ``patch_size``;
    output ``[B, (H / p) * (W / p), embed_dim]`` in row-major patch order.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.patches_resolution = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        patch_h, patch_w = self.patch_size
        if height % patch_h or width % patch_w:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of the patch size {patch_h}; "
                "resize or crop the image to a multiple of the patch size"
            )
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)
