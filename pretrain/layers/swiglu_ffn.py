"""SwiGLU feed-forward network (Shazeer, "GLU Variants Improve Transformer", 2020).

DINOv2 uses it for ViT-g/14. The hidden width is shrunk to about 2/3 of the MLP's so the
parameter count stays comparable, then rounded up to a multiple of 8:
``hidden = (int(hidden_features * 2 / 3) + 7) // 8 * 8`` (4096 for ViT-g's 1536 x 4).
Keys match the official backbones: ``mlp.w12.*`` (both gates fused) and ``mlp.w3.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_features(hidden_features: int) -> int:
    """The hidden width the official ``SwiGLUFFNFused`` uses for a nominal MLP width."""
    return (int(hidden_features * 2 / 3) + 7) // 8 * 8


class SwiGLUFFN(nn.Module):
    """``w3(silu(x W1) * (x W2))`` with ``W1`` and ``W2`` stored stacked in ``w12``."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] | None = None,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        del act_layer, drop  # accepted for signature parity with Mlp; SwiGLU fixes its gate
        out_features = out_features or in_features
        hidden = swiglu_hidden_features(hidden_features or in_features)
        self.w12 = nn.Linear(in_features, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)
