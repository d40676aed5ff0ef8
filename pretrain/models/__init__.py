"""Backbone constructors and the checkpoint loader.

``build_model(arch, **kwargs)`` takes ``"vit"`` (the bare ``DinoVisionTransformer``, every
size given), an official constructor name (``vit_small``, ``vit_base``, ``vit_large``,
``vit_giant2``: the official ``DinoVisionTransformer`` defaults) or a torch.hub name
(``dinov2_vits14``, ``dinov2_vits14_reg``, ...: the settings the released backbones were
built with). ``load_backbone`` loads a local state dict strictly, with no key renaming.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pretrain.models.hub import (
    dinov2_vitb14,
    dinov2_vitb14_reg,
    dinov2_vitg14,
    dinov2_vitg14_reg,
    dinov2_vitl14,
    dinov2_vitl14_reg,
    dinov2_vits14,
    dinov2_vits14_reg,
)
from pretrain.models.vision_transformer import (
    DinoVisionTransformer,
    vit_base,
    vit_giant2,
    vit_large,
    vit_small,
    vit_tiny,
)

ARCHITECTURES: dict[str, Callable[..., DinoVisionTransformer]] = {
    # Every size given explicitly (tests, custom configs).
    "vit": DinoVisionTransformer,
    "vit_tiny": vit_tiny,
    "vit_small": vit_small,
    "vit_base": vit_base,
    "vit_large": vit_large,
    "vit_giant2": vit_giant2,
    "dinov2_vits14": dinov2_vits14,
    "dinov2_vitb14": dinov2_vitb14,
    "dinov2_vitl14": dinov2_vitl14,
    "dinov2_vitg14": dinov2_vitg14,
    "dinov2_vits14_reg": dinov2_vits14_reg,
    "dinov2_vitb14_reg": dinov2_vitb14_reg,
    "dinov2_vitl14_reg": dinov2_vitl14_reg,
    "dinov2_vitg14_reg": dinov2_vitg14_reg,
}

# Containers our training checkpoints nest the backbone under, in order of preference.
CHECKPOINT_CONTAINERS = ("teacher", "model")
BACKBONE_PREFIX = "backbone."


class UnknownArchitectureError(ValueError):
    """Raised when ``build_model`` is asked for a name that is not in ``ARCHITECTURES``."""


class CheckpointFormatError(ValueError):
    """Raised when a checkpoint holds no recognisable backbone state dict."""


def build_model(arch: str, **kwargs: Any) -> DinoVisionTransformer:
    """Build a backbone by name; ``kwargs`` override the constructor's settings."""
    try:
        constructor = ARCHITECTURES[arch]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}"
        ) from None
    return constructor(**kwargs)


def extract_backbone_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Return the backbone's tensors from a raw state dict or a training checkpoint.

    Accepts the official raw backbone state dict as is, or one nested under
    ``"teacher"`` / ``"model"`` whose backbone keys start with ``"backbone."`` (the
    prefix is stripped and the heads' keys are left out).
    """
    state: Mapping[str, Any] = checkpoint
    for container in CHECKPOINT_CONTAINERS:
        if container in checkpoint and isinstance(checkpoint[container], Mapping):
            state = checkpoint[container]
            break
    if any(key.startswith(BACKBONE_PREFIX) for key in state):
        state = {
            key[len(BACKBONE_PREFIX) :]: value
            for key, value in state.items()
            if key.startswith(BACKBONE_PREFIX)
        }
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointFormatError(
            "no tensors found; expected a backbone state dict, or one under "
            f"{CHECKPOINT_CONTAINERS} with keys prefixed {BACKBONE_PREFIX!r}"
        )
    return tensors


def load_backbone(
    path: str | os.PathLike[str],
    arch: str = "dinov2_vits14",
    map_location: str | torch.device = "cpu",
    **kwargs: Any,
) -> DinoVisionTransformer:
    """Build ``arch`` (with ``kwargs``) and load the checkpoint at ``path`` with ``strict=True``.

    Checkpoints cannot be downloaded here: save the official state dict (e.g.
    ``torch.hub.load_state_dict_from_url(...)``) to a local file first.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFormatError(f"{path} holds a {type(checkpoint).__name__}, not a dict")
    state = extract_backbone_state_dict(checkpoint)
    geometry = checkpoint_geometry(state)
    if arch == "vit":  # the generic ViT: its widths and depth come from the checkpoint too
        geometry.update(checkpoint_size(state))
    model = build_model(arch, **{**geometry, **kwargs})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise CheckpointFormatError(
            f"{path} does not fit {arch}: {' '.join(line.strip() for line in first)}"
        ) from None
    return model


HEAD_DIM = 64  # DINOv2's head width at every size (ViT-Ti 192/3 ... ViT-g 1536/24)


def checkpoint_size(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``embed_dim``, ``depth`` and ``num_heads`` of the generic ``"vit"`` architecture from a
    backbone state dict. Heads leave no trace in the shapes: 64-wide heads, as in every DINOv2
    model, unless ``num_heads`` is given."""
    found: dict[str, int] = {}
    cls = state.get("cls_token")
    if cls is not None and cls.ndim == 3:
        found["embed_dim"] = int(cls.shape[-1])
        found["num_heads"] = max(1, found["embed_dim"] // HEAD_DIM)
    blocks = {
        tuple(int(p) for p in m.groups() if p is not None)
        for m in (re.match(r"blocks\.(\d+)\.(?:(\d+)\.)?norm1\.weight$", k) for k in state)
        if m
    }
    if blocks:
        found["depth"] = len(blocks)
    return found


def checkpoint_geometry(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor settings a backbone state dict fixes by its shapes and key names:
    ``patch_size``, ``img_size`` (the position-embedding grid it was trained at; other sizes are
    interpolated at run time), ``block_chunks``, LayerScale (``init_values``) and
    ``num_register_tokens``. A teacher our pretrainer exported at 112 px loads
    into the same architecture as one trained at 518 px."""
    found: dict[str, Any] = {}
    proj = state.get("patch_embed.proj.weight")
    pos = state.get("pos_embed")
    if proj is not None and proj.ndim == 4:
        found["patch_size"] = int(proj.shape[-1])
        if pos is not None and pos.ndim == 3:
            side = math.isqrt(int(pos.shape[1]) - 1)
            if side * side == int(pos.shape[1]) - 1:
                found["img_size"] = side * found["patch_size"]
    # Blocks stored flat (``blocks.N.``) or in FSDP-style chunks (``blocks.C.N.``).
    chunks = {k.split(".")[1] for k in state if re.match(r"blocks\.\d+\.\d+\.", k)}
    if any(k.startswith("blocks.") for k in state):
        found["block_chunks"] = len(chunks)
    # LayerScale gammas are parameters: present iff the model was built with init_values.
    if any(k.endswith(".ls1.gamma") for k in state):
        found["init_values"] = 1.0  # any value: the checkpoint's gammas replace it
    elif any(k.startswith("blocks.") for k in state):
        found["init_values"] = None
    registers = state.get("register_tokens")
    if registers is not None and registers.ndim == 3:
        found["num_register_tokens"] = int(registers.shape[1])
    return found


__all__ = [
    "ARCHITECTURES",
    "CheckpointFormatError",
    "DinoVisionTransformer",
    "UnknownArchitectureError",
    "build_model",
    "extract_backbone_state_dict",
    "load_backbone",
    "vit_base",
    "vit_giant2",
    "vit_large",
    "vit_small",
    "vit_tiny",
]
