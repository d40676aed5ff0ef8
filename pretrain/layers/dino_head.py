"""Projection head of DINO (Caron et al., ICCV 2021) as used by DINOv2 (Oquab et al., 2023).

An MLP (Linear-GELU-...-Linear, no batch norm) to a bottleneck, L2 normalisation, then a
weight-normalised linear layer without bias onto the prototypes whose norm ``g`` is fixed
at 1, so the logits are cosine similarities to the prototypes. The same head scores the
CLS token (DINO loss) and, shared or separate by config, the masked patch tokens (iBOT).
Keys follow the official ``DINOHead``: ``mlp.{0,2,4}.*``, ``last_layer.weight_g`` and
``last_layer.weight_v`` (the names ``torch.nn.utils.weight_norm`` gives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# The official head normalises with eps 1e-6 so the bottleneck stays finite in fp16.
L2_NORM_EPS = 1e-6


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight ``g * v / ||v||`` (Salimans & Kingma, 2016).

    Norms are taken per output row, like ``torch.nn.utils.weight_norm`` with ``dim=0``.
    ``g`` starts at 1 and is frozen unless ``freeze_norm=False``.
    """

    def __init__(self, in_features: int, out_features: int, freeze_norm: bool = True) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_features, 1), requires_grad=not freeze_norm)
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        # Same initialisation as a fresh nn.Linear, which the official head wraps.
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    @property
    def weight(self) -> torch.Tensor:
        # The fused kernel torch.nn.utils.weight_norm runs (so the official head): one pass
        # over the 65,536-row matrix each way instead of a chain of full-size temporaries.
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """MLP -> L2 normalise -> weight-normalised prototypes."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        nlayers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        mlp_bias: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be at least 1, got {nlayers}")
        self.out_dim = out_dim
        if nlayers == 1:
            # A bare Linear (keys ``mlp.weight``), as in the official head.
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim, bias=mlp_bias)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=mlp_bias), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim, bias=mlp_bias), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim, bias=mlp_bias))
            self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2, eps=L2_NORM_EPS)
        return self.last_layer(x)


@dataclass(frozen=True)
class DINOHeadConfig:
    """Head sizes; defaults are DINOv2's (65,536 prototypes, bottleneck 256, hidden 2048)."""

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3


def build_heads(
    embed_dim: int,
    dino: DINOHeadConfig,
    ibot: DINOHeadConfig | None = None,
    separate_ibot_head: bool = False,
) -> tuple[DINOHead, DINOHead]:
    """Return ``(dino_head, ibot_head)``; the same module twice unless ``separate_ibot_head``.

    DINOv2 shares one head by default and uses a separate iBOT head for ViT-g/14.
    """
    dino_head = DINOHead(
        embed_dim, dino.out_dim, dino.nlayers, dino.hidden_dim, dino.bottleneck_dim
    )
    if not separate_ibot_head:
        if ibot is not None and ibot != dino:
            raise ValueError(
                "a shared iBOT head must have the DINO head's sizes; "
                "set separate_ibot_head=True to give it its own"
            )
        return dino_head, dino_head
    ibot = ibot or dino
    ibot_head = DINOHead(
        embed_dim, ibot.out_dim, ibot.nlayers, ibot.hidden_dim, ibot.bottleneck_dim
    )
    return dino_head, ibot_head
