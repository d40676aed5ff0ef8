"""InfoNCE over a batch of descriptors (SimCLR's NT-Xent; SSCD, Pizzi et al. 2022, eq. 1).

Every descriptor is scored against every other one in the batch by cosine similarity over a
temperature (0.05 in SSCD); the loss is the cross-entropy between that softmax (self excluded) and a
target distribution over the batch. Plain training puts all the target on the other view of the same
image; mixup/cutmix spreads it over the views of both mixed images (SSCD's "multiple positives").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``embeddings`` [M, D] L2-normalised; ``targets`` [M, M], rows summing to 1, zero
        diagonal. Returns the mean over rows of ``-sum_j targets_ij * log p_ij``."""
        x = embeddings.float()
        logits = x @ x.T / self.temperature
        eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
        log_p = F.log_softmax(logits.masked_fill(eye, float("-inf")), dim=1)
        return -(targets * log_p.masked_fill(eye, 0.0)).sum(dim=1).mean()


def two_view_targets(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Targets for a batch laid out ``[view A of images 0..n-1, view B of images 0..n-1]``."""
    index = torch.arange(2 * n, device=device)
    targets = torch.zeros(2 * n, 2 * n, device=device)
    targets[index, (index + n) % (2 * n)] = 1.0
    return targets
