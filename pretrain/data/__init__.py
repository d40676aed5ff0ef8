"""Data side of DINOv2 pretraining: multi-crop augmentation, block masking, collation."""

from pretrain.data.augmentations import (
    BLUR_PROBABILITIES,
    MultiCropAugmentation,
    MultiCropConfig,
)
from pretrain.data.collate import collate_data_and_masks
from pretrain.data.masking import MaskingGenerator

__all__ = [
    "BLUR_PROBABILITIES",
    "MaskingGenerator",
    "MultiCropAugmentation",
    "MultiCropConfig",
    "collate_data_and_masks",
]
