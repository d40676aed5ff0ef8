"""Block-wise masking of BEiT (Bao et al., "BEiT: BERT Pre-Training of Image
Transformers", ICLR 2022), as used by iBOT and DINOv2 (Oquab et al., 2023).

A mask of ``num_masking_patches`` patches is grown from rectangles: each has an area
drawn from ``U(min_num_patches, remaining budget)`` and a log-uniform aspect ratio in
``[min_aspect, 1 / min_aspect]``; up to 10 placements are tried per rectangle, and one
is accepted only if it adds at least one new patch and no more than the remaining
budget. The mask therefore never exceeds the requested count; it can fall short when no
rectangle fits the small remainder, at which point generation stops.
"""

from __future__ import annotations

import math
import random

import torch

MAX_ATTEMPTS_PER_BLOCK = 10


class MaskingGenerator:
    """Draw boolean ``[height, width]`` patch masks with a requested number of patches."""

    def __init__(
        self,
        input_size: int | tuple[int, int],
        num_masking_patches: int | None = None,
        min_num_patches: int = 4,
        max_num_patches: float | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.height, self.width = input_size
        self.num_patches = self.height * self.width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        if min_aspect <= 0:
            raise ValueError(f"min_aspect must be positive, got {min_aspect}")
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
        self.rng = rng or random.Random()

    def get_shape(self) -> tuple[int, int]:
        return self.height, self.width

    def _add_block(self, mask: torch.Tensor, max_mask_patches: float) -> int:
        """Try to add one rectangle; return how many new patches it masked (0: none fit)."""
        for _ in range(MAX_ATTEMPTS_PER_BLOCK):
            target_area = self.rng.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(self.rng.uniform(*self.log_aspect_ratio))
            block_h = int(round(math.sqrt(target_area * aspect_ratio)))
            block_w = int(round(math.sqrt(target_area / aspect_ratio)))
            # Strict inequalities, as the reference implementation: a block never spans
            # the full grid in either direction.
            if block_w < self.width and block_h < self.height:
                top = self.rng.randint(0, self.height - block_h)
                left = self.rng.randint(0, self.width - block_w)
                window = mask[top : top + block_h, left : left + block_w]
                new_patches = block_h * block_w - int(window.sum())
                if 0 < new_patches <= max_mask_patches:
                    window.fill_(True)
                    return new_patches
        return 0

    def __call__(self, num_masking_patches: int | None = None) -> torch.Tensor:
        if num_masking_patches is None:
            num_masking_patches = self.num_masking_patches or 0
        mask = torch.zeros(self.get_shape(), dtype=torch.bool)
        mask_count = 0
        while mask_count < num_masking_patches:
            budget = num_masking_patches - mask_count
            if self.max_num_patches is not None:
                budget = min(budget, self.max_num_patches)
            added = self._add_block(mask, budget)
            if added == 0:
                break
            mask_count += added
        return mask
