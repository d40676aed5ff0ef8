"""Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016).

Two forms, as in DINOv2:

* ``DropPath``: zero a residual branch for a random subset of samples and rescale the
  others by ``1 / keep``; the branch is still computed for every sample.
* ``add_residual_on_batch_subset``: the efficient form of DINOv2 (Oquab et al., 2023,
  section 5): compute the branch only for ``max(int(B * (1 - d)), 1)`` randomly chosen
  samples and add it back scaled by ``B / kept``, saving the compute of dropped samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class DropPath(nn.Module):
    """Drop a whole residual branch per sample with probability ``drop_prob`` while training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = x.new_empty(shape).bernoulli_(keep_prob)
        return x * keep / keep_prob


def add_residual_on_batch_subset(
    x: torch.Tensor,
    residual_func: Callable[[torch.Tensor], torch.Tensor],
    sample_drop_ratio: float,
) -> torch.Tensor:
    """Return ``x`` plus ``residual_func`` evaluated on a random subset of the batch.

    The residual is scaled by ``batch / subset`` so that its expectation over the draw
    equals the full residual, which is what per-sample drop path gives as well.
    """
    batch = x.shape[0]
    subset_size = max(int(batch * (1.0 - sample_drop_ratio)), 1)
    chosen = torch.randperm(batch, device=x.device)[:subset_size]
    residual = residual_func(x[chosen])
    out = torch.index_add(
        x.flatten(1),
        0,
        chosen,
        residual.flatten(1).to(dtype=x.dtype),
        alpha=batch / subset_size,
    )
    return out.view_as(x)
