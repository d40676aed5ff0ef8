"""From decoded images to the training batch dict, in DataLoader workers: multi-crop,
block masking and collation, all seeded by the batch's seed so a resumed run rebuilds
exactly the batches an uninterrupted run would have seen.

The crops are cut per image (geometric: crop, resize, flip), then the photometric
augmentations (colour jitter, grayscale, blur, solarise, normalise) run once per crop kind on
the whole batch, each image with its own draws: the same distribution as per-image calls, with
a few dozen tensor operations per batch instead of per image (on 16 images of 32-224 px, per
image they took most of a CPU training step)."""

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
        augment = MultiCropAugmentation(self.crops, generator=generator, geometric_only=True)
        rng = random.Random(seed)
        n_tokens = self.grid * self.grid
        masking = MaskingGenerator(self.grid, max_num_patches=0.5 * n_tokens, rng=rng)
        batch = collate_data_and_masks(
            photometric_per_batch(augment, [augment.geometric(image) for image in images]),
            mask_ratio_tuple=self.mask_ratio,
            mask_probability=self.mask_probability,
            dtype=torch.float32,
            n_tokens=n_tokens,
            mask_generator=masking,
            rng=rng,
        )
        batch["keys"] = list(keys)
        return batch


def photometric_per_batch(
    augment: MultiCropAugmentation, views: list[tuple[list[torch.Tensor], list[torch.Tensor]]]
) -> list[dict[str, Any]]:
    """The photometric part of each image's uint8 ``(global_crops, local_crops)``, applied to
    all first global crops at once, all second ones, and all local crops; per-image crop dicts
    of float crops, as :class:`MultiCropAugmentation` returns them."""
    n = len(views)
    first = augment.photometric(torch.stack([g[0] for g, _ in views]), "global1")
    second = augment.photometric(torch.stack([g[1] for g, _ in views]), "global2")
    n_local = len(views[0][1]) if views else 0
    local = (
        augment.photometric(torch.stack([c for _, locals_ in views for c in locals_]), "local")
        if n_local
        else None
    )
    samples = []
    for i in range(n):
        crops = [first[i], second[i]]
        samples.append(
            {
                "global_crops": crops,
                "global_crops_teacher": crops,
                "local_crops": []
                if local is None
                else list(local[i * n_local : (i + 1) * n_local]),
                "offsets": (),
            }
        )
    return samples
