"""The torch.hub backbones of DINOv2 (Oquab et al., 2023; registers: Darcet et al., 2024)
by name, built with the settings the released checkpoints were saved from, so those state
dicts load with ``strict=True``: 518 px, /14, LayerScale 1.0, ``block_chunks=0``; plain
models interpolate positions with offset 0.1 and no antialiasing, ``_reg`` models add 4
register tokens and interpolate with antialiasing and offset 0; ViT-g uses SwiGLU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pretrain.models.vision_transformer import (
    DinoVisionTransformer,
    vit_base,
    vit_giant2,
    vit_large,
    vit_small,
)


def _hub_model(
    constructor: Callable[..., DinoVisionTransformer],
    registers: bool,
    ffn_layer: str = "mlp",
    **kwargs: Any,
) -> DinoVisionTransformer:
    """The torch.hub settings: 518 px, /14, LayerScale 1.0, no chunks; ``_reg`` models add
    4 registers and interpolate with antialiasing and offset 0."""
    settings: dict[str, Any] = {
        "img_size": 518,
        "patch_size": 14,
        "init_values": 1.0,
        "ffn_layer": ffn_layer,
        "block_chunks": 0,
        "num_register_tokens": 4 if registers else 0,
        "interpolate_antialias": registers,
        "interpolate_offset": 0.0 if registers else 0.1,
    }
    settings.update(kwargs)
    return constructor(**settings)


def dinov2_vits14(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_small, registers=False, **kwargs)


def dinov2_vitb14(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_base, registers=False, **kwargs)


def dinov2_vitl14(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_large, registers=False, **kwargs)


def dinov2_vitg14(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_giant2, registers=False, ffn_layer="swiglufused", **kwargs)


def dinov2_vits14_reg(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_small, registers=True, **kwargs)


def dinov2_vitb14_reg(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_base, registers=True, **kwargs)


def dinov2_vitl14_reg(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_large, registers=True, **kwargs)


def dinov2_vitg14_reg(**kwargs: Any) -> DinoVisionTransformer:
    return _hub_model(vit_giant2, registers=True, ffn_layer="swiglufused", **kwargs)
