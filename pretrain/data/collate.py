"""Batch collation for DINOv2 pretraining (Oquab et al., 2023): crop-major stacking of the
multi-crop views and iBOT masks (Zhou et al., ICLR 2022) for the global crops.

Of the ``n = 2 * B`` global crops, ``int(n * mask_probability)`` are masked; the i-th of
them targets a ratio drawn from ``[p_i, p_i+1]`` with ``p = linspace(min, max, k + 1)``
(stratified so the batch covers the whole ratio range); the rest are unmasked; the list
is then shuffled. Also returned: the flat indices of masked tokens, the per-token iBOT
weights ``1 / masked tokens of its image``, and an upper bound on the masked count.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from pretrain.data.masking import MaskingGenerator
from pretrain.loss.ibot_patch_loss import masks_weight_from_masks


def _crops_dict(sample: Any) -> dict[str, Any]:
    # Datasets yield (crops_dict, target) like the official ones, or the dict alone.
    return sample[0] if isinstance(sample, (tuple, list)) else sample


def collate_data_and_masks(
    samples_list: Sequence[Any],
    mask_ratio_tuple: tuple[float, float],
    mask_probability: float,
    dtype: torch.dtype,
    n_tokens: int,
    mask_generator: MaskingGenerator,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Collate augmented samples into the batch dict of the official training loop.

    Global crops are stacked crop-major (all first crops, then all second crops) so that
    ``chunk(2)`` splits the two views; local crops likewise.
    """
    if not samples_list:
        raise ValueError("cannot collate an empty batch")
    rng = rng or random.Random()
    crops = [_crops_dict(sample) for sample in samples_list]
    n_global = len(crops[0]["global_crops"])
    n_local = len(crops[0]["local_crops"])
    global_crops = torch.stack([c["global_crops"][i] for i in range(n_global) for c in crops])
    local_crops = (
        torch.stack([c["local_crops"][i] for i in range(n_local) for c in crops])
        if n_local
        else torch.empty(0)
    )

    num_images = len(global_crops)
    n_masked_images = int(num_images * mask_probability)
    bounds = torch.linspace(*mask_ratio_tuple, n_masked_images + 1).tolist()
    upperbound = 0
    masks = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        masks.append(mask_generator(int(n_tokens * rng.uniform(low, high))))
        upperbound += int(n_tokens * high)
    masks += [mask_generator(0) for _ in range(num_images - n_masked_images)]
    rng.shuffle(masks)
    collated_masks = torch.stack(masks).flatten(1)
    if collated_masks.shape[1] != n_tokens:
        raise ValueError(
            f"mask generator grid has {collated_masks.shape[1]} patches, n_tokens is {n_tokens}"
        )
    mask_indices_list = collated_masks.flatten().nonzero().flatten()

    return {
        "collated_global_crops": global_crops.to(dtype),
        "collated_local_crops": local_crops.to(dtype),
        "collated_masks": collated_masks,
        "mask_indices_list": mask_indices_list,
        "masks_weight": masks_weight_from_masks(collated_masks),
        "upperbound": upperbound,
        "n_masked_patches": torch.full((1,), len(mask_indices_list), dtype=torch.long),
    }
