"""The differential-entropy regulariser of SSCD (Pizzi et al. 2022, eq. 3), a KoLeo-style term
(Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019).

``-mean_i log(d_i)`` where ``d_i`` is the L2 distance from descriptor ``i`` to its closest
*non-matching* descriptor in the batch (its positives are excluded, unlike KoLeo's plain nearest
neighbour). It pushes unrelated images apart, spreading descriptors over the sphere, which is what
makes a single similarity threshold work for copy detection. Computed in fp32.
"""

from __future__ import annotations

import torch
from torch import nn


class DifferentialEntropyLoss(nn.Module):
    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, embeddings: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """``embeddings`` [M, D] L2-normalised; ``positives`` [M, M] bool, True where two rows
        show the same image (the diagonal included or not: self is always excluded)."""
        x = embeddings.float()
        similarity = x @ x.T
        exclude = positives | torch.eye(len(x), dtype=torch.bool, device=x.device)
        nearest = similarity.masked_fill(exclude, float("-inf")).max(dim=1).values
        distance = (2.0 - 2.0 * nearest).clamp(min=1e-12).sqrt()  # unit vectors: |a-b|² = 2 - 2 a·b
        return -torch.log(distance + self.eps).mean()
