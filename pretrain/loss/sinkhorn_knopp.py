"""Sinkhorn-Knopp teacher centering of SwAV (Caron et al., NeurIPS 2020), as used by
DINOv2 (Oquab et al., 2023) for ViT-g in place of softmax centering.

Teacher targets are an approximately equipartitioned soft assignment of the batch to the
K prototypes: ``Q = exp(t / temp)^T`` (K x B), divided by its total, then ``n_iterations``
alternations of "rows sum to 1/K" and "columns sum to 1/B", and finally multiplied by B
so each sample's row of the returned ``[B, K]`` tensor sums to 1. All sums are
all-reduced across ranks when ``torch.distributed`` is initialised, so the constraints
hold over the global batch; B is the global number of samples (for iBOT: of masked
patches, passed in as ``total_batch_size``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from pretrain import distributed


@torch.no_grad()
def sinkhorn_knopp(
    teacher_output: torch.Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    total_batch_size: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``[B_local, K]`` teacher probabilities; computed in fp32.

    ``total_batch_size``: the global B; defaults to the local row count times the world
    size (equal per-rank batches, as for the CLS token). An empty ``teacher_output`` still
    takes part in the collectives and returns an empty result, also when the whole
    global batch is empty.
    """
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
    logits = teacher_output.float() / teacher_temp
    num_prototypes = logits.shape[-1]
    # Subtracting the global maximum cancels in the first normalisation and keeps exp()
    # from overflowing. Entries more than ~87 x temp below it underflow to 0, which only
    # matters if a whole prototype does; the head's cosine logits span at most 2.
    peak = logits.max() if logits.numel() else logits.new_tensor(float("-inf"))
    peak = distributed.all_reduce_(peak.reshape(1).clone(), op=dist.ReduceOp.MAX)
    q = torch.exp(logits - peak).t()  # K x B

    if total_batch_size is None:
        total = float(q.shape[1] * distributed.get_world_size())
    elif isinstance(total_batch_size, torch.Tensor):
        total = float(distributed.all_reduce_(total_batch_size.detach().clone().float()).item())
    else:
        total = float(total_batch_size)
    if total == 0:
        # No sample on any rank (e.g. no masked patch in the global batch): every rank
        # gets here together, after the same collectives, and has nothing to assign.
        return q.t().clone()

    q /= distributed.all_reduce_(q.sum().reshape(1))
    for _ in range(n_iterations):
        # Each prototype gets 1/K of the mass (sums over the whole, distributed batch).
        q /= distributed.all_reduce_(q.sum(dim=1, keepdim=True))
        q /= num_prototypes
        # Each sample gets 1/B of the mass (columns are local, so no reduction needed).
        q /= q.sum(dim=0, keepdim=True)
        q /= total
    q *= total
    return q.t()


class SinkhornKnopp(nn.Module):
    """Module form of :func:`sinkhorn_knopp` with a fixed number of iterations."""

    def __init__(self, n_iterations: int = 3) -> None:
        super().__init__()
        self.n_iterations = n_iterations

    def forward(
        self,
        teacher_output: torch.Tensor,
        teacher_temp: float,
        total_batch_size: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return sinkhorn_knopp(teacher_output, teacher_temp, self.n_iterations, total_batch_size)
