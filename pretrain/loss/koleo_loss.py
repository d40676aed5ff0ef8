"""KoLeo regulariser (Sablayrolles et al., "Spreading vectors for similarity search",
ICLR 2019), as used by DINOv2 (Oquab et al., 2023).

The Kozachenko-Leonenko differential-entropy estimate on the student's L2-normalised
CLS outputs (before the head): ``-mean_i log(||x_i - x_nn(i)|| + eps)``, where the
nearest neighbour is the other sample with the largest dot product. Computed in fp32 on
each GPU's batch alone (no gather), so it needs at least 2 samples per GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    """Push each sample away from its nearest neighbour on the unit sphere."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    @staticmethod
    def nearest_neighbours(x: torch.Tensor) -> torch.Tensor:
        """Index of each row's nearest other row by dot product (diagonal excluded)."""
        dots = x @ x.t()
        dots.fill_diagonal_(float("-inf"))
        return dots.argmax(dim=1)

    def forward(self, student_output: torch.Tensor) -> torch.Tensor:
        if student_output.ndim != 2 or student_output.shape[0] < 2:
            raise ValueError(
                "KoLeo needs a [B, D] batch with B >= 2 per GPU, got shape "
                f"{tuple(student_output.shape)}"
            )
        with torch.autocast(device_type=student_output.device.type, enabled=False):
            x = F.normalize(student_output.float(), p=2, dim=-1, eps=self.eps)
            with torch.no_grad():
                neighbours = self.nearest_neighbours(x)
            distances = (x - x[neighbours]).norm(dim=-1)
            return -torch.log(distances + self.eps).mean()
