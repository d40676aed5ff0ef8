"""From decoded images to the training batch dict, in DataLoader workers: multi-crop,
block masking and collation, all seeded by the batch's seed so a resumed run rebuilds
exactly the batches an uninterrupted run would have seen."""

from __future__ import annotations

import random
from typing import Any

import torch

from pretrain.data.augmentations import MultiCropAugmentation, MultiCropConfig
from pretrain.data.collate import collate_data_and_masks
from pretrain.data.masking import MaskingGenerator


class TrainingBatchMaker:
    """Callable ``(images, keys, seed) -> batch`` for :class:`pretrain.data.shards.ShardStream`."""

    def __init__(
        self,
        crops: MultiCropConfig,
        patch_size: int,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_probability: float = 0.5,
    ) -> None:
        self.crops = crops
        self.grid = crops.global_crops_size // patch_size
        self.mask_ratio = mask_ratio
        self.mask_probability = mask_probability

    def __call__(self, images: list[Any], keys: list[str], seed: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(seed)
        augment = MultiCropAugmentation(self.crops, generator=generator)
        rng = random.Random(seed)
        n_tokens = self.grid * self.grid
        masking = MaskingGenerator(self.grid, max_num_patches=0.5 * n_tokens, rng=rng)
        batch = collate_data_and_masks(
            [augment(image) for image in images],
            mask_ratio_tuple=self.mask_ratio,
            mask_probability=self.mask_probability,
            dtype=torch.float32,
            n_tokens=n_tokens,
            mask_generator=masking,
            rng=rng,
        )
        batch["keys"] = list(keys)
        return batch
