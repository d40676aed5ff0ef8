"""Two-layer feed-forward network of the Transformer block (Vaswani et al., 2017; ViT).

Keys match the official backbones: ``mlp.fc1.{weight,bias}``, ``mlp.fc2.{weight,bias}``.
"""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` with a hidden width of ``hidden_features``."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))
