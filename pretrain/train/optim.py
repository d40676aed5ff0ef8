"""AdamW parameter groups of DINOv2 (Oquab et al., 2023; SPEC.md section 4).

Per parameter: a learning-rate multiplier ``layerwise_decay ** (depth + 1 - layer_id)``
(layer 0: patch embedding, position embedding, CLS / register / mask tokens; block ``i``:
``i + 1``; the final norm and the heads: ``depth + 1``, multiplier 1), times
``patch_embed_lr_mult`` for the patch embedding; a weight-decay multiplier of 0 for names
ending in ``.bias`` or containing ``norm`` or ``gamma`` (position embedding and tokens are
decayed, as in the official code); and a flag for the heads' last layer, whose learning
rate follows its own (frozen-start) schedule. Parameters with equal settings share a group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from pretrain.train.config import OptimConfig

LAYER_ZERO_NAMES = ("pos_embed", "patch_embed", "mask_token", "cls_token", "register_tokens")


def backbone_layer_id(name: str, depth: int) -> int:
    """Layer id of a backbone parameter name (no ``backbone.`` prefix)."""
    if name.startswith(LAYER_ZERO_NAMES):
        return 0
    if name.startswith("blocks."):
        parts = name.split(".")
        # Chunked layout ``blocks.C.N.*`` keeps global block indices in N.
        index = parts[2] if len(parts) > 2 and parts[2].isdigit() else parts[1]
        return int(index) + 1
    return depth + 1


def parameter_settings(
    name: str, depth: int, layerwise_decay: float, patch_embed_lr_mult: float, in_backbone: bool
) -> dict[str, Any]:
    lr_multiplier = 1.0
    if in_backbone:
        lr_multiplier = layerwise_decay ** (depth + 1 - backbone_layer_id(name, depth))
        if name.startswith("patch_embed"):
            lr_multiplier *= patch_embed_lr_mult
    no_decay = name.endswith(".bias") or "norm" in name or "gamma" in name
    return {
        "lr_multiplier": lr_multiplier,
        "wd_multiplier": 0.0 if no_decay else 1.0,
        "is_last_layer": "last_layer" in name,
    }


def build_param_groups(
    backbone: nn.Module, heads: Iterable[nn.Module], depth: int, cfg: OptimConfig
) -> list[dict[str, Any]]:
    """Parameter groups for the student (backbone and distinct heads), fused by settings."""
    groups: dict[tuple[float, float, bool], dict[str, Any]] = {}
    named: list[tuple[str, nn.Parameter, bool]] = [
        (n, p, True) for n, p in backbone.named_parameters()
    ]
    seen = {id(p) for _, p, _ in named}
    for head in heads:
        for n, p in head.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                named.append((n, p, False))
    for name, param, in_backbone in named:
        if not param.requires_grad:
            continue
        settings = parameter_settings(
            name, depth, cfg.layerwise_decay, cfg.patch_embed_lr_mult, in_backbone
        )
        key = (settings["lr_multiplier"], settings["wd_multiplier"], settings["is_last_layer"])
        group = groups.setdefault(key, {"params": [], "names": [], **settings})
        group["params"].append(param)
        group["names"].append(("backbone." if in_backbone else "head.") + name)
    return list(groups.values())


def build_optimizer(param_groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the groups; the fused kernel (one pass per tensor) where the parameters
    allow it: on CPU it is an order of magnitude faster than the per-tensor loop."""
    params = [p for group in param_groups for p in group["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        param_groups,
        lr=0.0,
        weight_decay=0.0,
        betas=(cfg.adamw_beta1, cfg.adamw_beta2),
        fused=fused,
    )


def apply_schedules(
    optimizer: torch.optim.Optimizer, lr: float, weight_decay: float, last_layer_lr: float
) -> None:
    """Set each group's lr and weight decay for this iteration from its multipliers."""
    for group in optimizer.param_groups:
        base = last_layer_lr if group["is_last_layer"] else lr
        group["lr"] = base * group["lr_multiplier"]
        group["weight_decay"] = weight_decay * group["wd_multiplier"]
