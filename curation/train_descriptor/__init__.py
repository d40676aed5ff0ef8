"""``lvd train-descriptor``: SSCD-style self-supervised training of a copy-detection descriptor.

``config`` (the settings, importable without torch), ``augment`` (copy-like augmentations),
``data`` (sources, two-view dataset), ``infonce_loss`` and ``entropy_loss`` (one loss per file),
``train`` (the loop and the checkpoint) and ``evaluate`` (micro-AP on a synthetic web's planted
copies). The trainer itself (``train_descriptor``, ``TrainResult``) is imported on first use, so
reading a config never imports torch.
"""

from curation.train_descriptor.config import AugmentConfig, DescriptorTrainConfig

__all__ = ["AugmentConfig", "DescriptorTrainConfig", "TrainResult", "train_descriptor"]


def __getattr__(name: str):
    if name in ("TrainResult", "train_descriptor"):
        from curation.train_descriptor import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
