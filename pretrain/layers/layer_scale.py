"""LayerScale (Touvron et al., "Going deeper with Image Transformers", ICCV 2021).

A learned per-channel scale on each residual branch; DINOv2 initialises it to 1e-5 for
training (the released backbones were built with 1.0). Key: ``ls1.gamma`` / ``ls2.gamma``.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply the last dimension by a learned vector ``gamma`` initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
