"""Copy-detection descriptors we train ourselves, and their checkpoint format.

A descriptor is a trunk, a pooling, a linear projection and an L2 normalisation: the SSCD model
(ResNet + GeM, :mod:`curation.models.sscd`) or a DINOv2 ViT whose CLS token is projected
(:class:`ViTDescriptor`, for warm starts from a backbone our pretrainer made). ``lvd
train-descriptor`` saves one with :func:`save_descriptor_checkpoint`; the embed stage loads it with
:func:`load_descriptor_checkpoint`. The file is a plain ``torch.save`` dict (loadable with
``weights_only=True``) that says how to rebuild the network and how it wants its pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from curation.io import atomic_path
from curation.models.sscd import RESNET_LAYOUTS, SSCDModel
from pretrain.models import ARCHITECTURES, build_model, load_backbone

DESCRIPTOR_FORMAT = "lvd.descriptor"
DESCRIPTOR_VERSION = 1


class DescriptorCheckpointError(ValueError):
    """A file that is not a descriptor checkpoint of a version we read."""


class ViTDescriptor(nn.Module):
    """DINOv2 ViT -> normalised CLS token -> Linear -> L2 normalisation."""

    def __init__(self, backbone: nn.Module, dim: int = 512):
        super().__init__()
        self.backbone = backbone
        self.dim = dim
        self.patch_size = backbone.patch_size
        self.fc = nn.Linear(backbone.embed_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.backbone.forward_features(x)["x_norm_clstoken"]
        return F.normalize(self.fc(cls).float(), dim=-1)


def descriptor_archs() -> list[str]:
    return sorted(RESNET_LAYOUTS) + sorted(ARCHITECTURES)


def build_descriptor(arch: str, dim: int = 512, **arch_kwargs: Any) -> nn.Module:
    """A fresh descriptor: ``resnet18`` / ``resnet50`` (``width``, ``gem_p``) or a ViT name of
    ``pretrain.models`` (its constructor keywords)."""
    if arch in RESNET_LAYOUTS:
        return SSCDModel(arch, dim=dim, **arch_kwargs)
    if arch in ARCHITECTURES:
        return ViTDescriptor(build_model(arch, **arch_kwargs), dim=dim)
    raise ValueError(f"unknown descriptor arch {arch!r}; expected one of {descriptor_archs()}")


def warm_start(model: nn.Module, arch: str, path: str | os.PathLike[str], **arch_kwargs) -> None:
    """Load a backbone checkpoint into ``model``'s trunk; the projection keeps its fresh init.

    ViTs: any checkpoint ``pretrain.models.load_backbone`` reads (official, or our pretrainer's
    ``teacher`` weights), strictly. ResNets: a torchvision-layout state dict (e.g. ImageNet
    weights); its ``fc`` (a classifier) is skipped, every other trunk key must match.
    """
    if isinstance(model, ViTDescriptor):
        model.backbone = load_backbone(path, arch=arch, **arch_kwargs)
        return
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    trunk = {
        k.removeprefix("backbone."): v
        for k, v in state.items()
        if not k.removeprefix("backbone.").startswith("fc.")
    }
    missing, unexpected = model.backbone.load_state_dict(trunk, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise DescriptorCheckpointError(
            f"{path}: not a torchvision-layout {arch} trunk (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )


def save_descriptor_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    arch: str,
    dim: int,
    arch_kwargs: Mapping[str, Any],
    inference: Mapping[str, Any],
    train: Mapping[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically (temp file, then rename). ``inference`` holds the
    preprocessing the model was trained for: ``size``, ``resize``, ``scales``, ``multiple_of``."""
    payload = {
        "format": DESCRIPTOR_FORMAT,
        "version": DESCRIPTOR_VERSION,
        "arch": arch,
        "dim": int(dim),
        "arch_kwargs": dict(arch_kwargs),
        "inference": dict(inference),
        "train": dict(train or {}),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def write_calibration(path: str | os.PathLike[str], calibration: Mapping[str, Any]) -> Path:
    """Store a score calibration (:class:`curation.index.calibration.ScoreCalibration` as a
    dict) in the checkpoint's ``inference`` settings, rewriting the file atomically; the embed
    stage records it beside the embeddings and ``lvd dedup`` applies it."""
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not is_descriptor_checkpoint(payload):
        raise DescriptorCheckpointError(f"{path} is not an lvd descriptor checkpoint")
    payload["inference"] = {**payload.get("inference", {}), "calibration": dict(calibration)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def is_descriptor_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == DESCRIPTOR_FORMAT


def descriptor_from_checkpoint(payload: Mapping[str, Any]) -> nn.Module:
    """Rebuild the network of a loaded checkpoint dict and load its weights strictly."""
    if not is_descriptor_checkpoint(payload):
        raise DescriptorCheckpointError("not an lvd descriptor checkpoint (no format marker)")
    if payload.get("version") != DESCRIPTOR_VERSION:
        raise DescriptorCheckpointError(
            f"descriptor checkpoint version {payload.get('version')} is not {DESCRIPTOR_VERSION}"
        )
    model = build_descriptor(payload["arch"], dim=payload["dim"], **payload["arch_kwargs"])
    model.load_state_dict(payload["model"], strict=True)
    return model.eval()


def load_descriptor_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The descriptor saved at ``path`` (eval mode) and the checkpoint's metadata."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not is_descriptor_checkpoint(payload):
        raise DescriptorCheckpointError(f"{path} is not an lvd descriptor checkpoint")
    meta = {k: v for k, v in payload.items() if k != "model"}
    return descriptor_from_checkpoint(payload), meta
