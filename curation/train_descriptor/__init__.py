"""``lvd train-descriptor``: SSCD-style self-supervised training of a copy-detection descriptor.

``augment`` (copy-like augmentations), ``data`` (sources, two-view dataset), ``infonce_loss`` and
``entropy_loss`` (one loss per file), ``train`` (the loop, the config, the checkpoint) and
``evaluate`` (micro-AP on a synthetic web's planted copies).
"""

from curation.train_descriptor.train import DescriptorTrainConfig, TrainResult, train_descriptor

__all__ = ["DescriptorTrainConfig", "TrainResult", "train_descriptor"]
