"""DINO self-distillation loss on the CLS token (Caron et al., "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021), with DINOv2's teacher centerings
(Oquab et al., 2023): softmax centering with an EMA center, or Sinkhorn-Knopp.

The loss of one (student, teacher) pair is the cross-entropy
``-sum_k p_t[k] * log softmax(s / student_temp)[k]`` averaged over the batch; ``forward``
sums it over every pair of the two lists, as the official loss does. The caller chooses
the pairs and the normaliser (DINOv2: 8 local crops x 2 teacher globals + 2 swapped
global pairs, the total divided by 18).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pretrain import distributed
from pretrain.loss.sinkhorn_knopp import sinkhorn_knopp


class DINOLoss(nn.Module):
    """Cross-entropy between teacher targets and student softmax over the prototypes."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        # The center update is applied lazily, right before the center is next used, so
        # that its all-reduce can overlap with the backward pass (as in the official code).
        self._pending_sum: torch.Tensor | None = None
        self._pending_count = 0
        self._pending_handle: dist.Work | None = None

    @torch.no_grad()
    def softmax_center_teacher(
        self, teacher_output: torch.Tensor, teacher_temp: float
    ) -> torch.Tensor:
        """``softmax((t - center) / teacher_temp)`` after applying any pending center update."""
        self.apply_center_update()
        return F.softmax((teacher_output - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_output: torch.Tensor, teacher_temp: float, n_iterations: int = 3
    ) -> torch.Tensor:
        """Sinkhorn-Knopp targets over the global batch of teacher CLS outputs."""
        return sinkhorn_knopp(teacher_output, teacher_temp, n_iterations)

    def forward(
        self,
        student_output_list: Sequence[torch.Tensor],
        teacher_probs_list: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Sum over all (student, teacher) pairs of the batch-mean cross-entropy.

        Each element is ``[B, K]``: student logits, teacher probabilities.
        """
        total = torch.zeros((), device=student_output_list[0].device)
        for student in student_output_list:
            log_probs = F.log_softmax(student.float() / self.student_temp, dim=-1)
            for teacher in teacher_probs_list:
                if teacher.shape != log_probs.shape:
                    raise ValueError(
                        f"teacher {tuple(teacher.shape)} and student {tuple(log_probs.shape)} "
                        "outputs must have the same shape"
                    )
                total = total - (teacher * log_probs).sum(dim=-1).mean()
        return total

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """Queue ``center <- m * center + (1 - m) * mean(teacher_output)`` (global mean)."""
        self._pending_count = len(teacher_output)
        self._pending_sum = teacher_output.float().sum(dim=0, keepdim=True)
        self._pending_handle = None
        if distributed.is_enabled():
            self._pending_handle = dist.all_reduce(self._pending_sum, async_op=True)

    @torch.no_grad()
    def apply_center_update(self) -> None:
        if self._pending_sum is None:
            return
        if self._pending_handle is not None:
            self._pending_handle.wait()
        batch_mean = self._pending_sum / (self._pending_count * distributed.get_world_size())
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)
        self._pending_sum = None
        self._pending_handle = None
