"""iBOT masked-patch loss (Zhou et al., "iBOT: Image BERT Pre-Training with Online
Tokenizer", ICLR 2022) as used by DINOv2 (Oquab et al., 2023).

For each masked patch of a global crop, the teacher's output at that position (computed
on the unmasked crop) is the target of the student's output there. The per-token
cross-entropy is weighted by ``1 / (number of masked patches in that image)``, summed,
and divided by the number of global-crop images, as in the official implementation, so
every masked image counts once whatever its mask size and unmasked images count as 0.
Teacher targets come from softmax centering (EMA center over masked tokens) or
Sinkhorn-Knopp over all masked tokens of all ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrain import distributed
from pretrain.loss.sinkhorn_knopp import sinkhorn_knopp


def masks_weight_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Per masked token, ``1 / masked tokens of its image`` (order of ``masks.nonzero()``)."""
    masks = masks.flatten(1)
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1.0)
    return per_image.unsqueeze(-1).expand_as(masks)[masks]


class iBOTPatchLoss(nn.Module):  # noqa: N801 - the paper's own capitalisation
    """Cross-entropy between teacher targets and the student at masked patches."""

    def __init__(self, patch_out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.patch_out_dim = patch_out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, patch_out_dim))
        self._pending_update: torch.Tensor | None = None

    @torch.no_grad()
    def softmax_center_teacher(
        self, teacher_patch_tokens: torch.Tensor, teacher_temp: float
    ) -> torch.Tensor:
        self.apply_center_update()
        return F.softmax((teacher_patch_tokens - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self,
        teacher_output: torch.Tensor,
        teacher_temp: float,
        n_masked_patches_tensor: torch.Tensor,
        n_iterations: int = 3,
    ) -> torch.Tensor:
        """Sinkhorn-Knopp over the masked tokens; B is their count summed over ranks."""
        return sinkhorn_knopp(teacher_output, teacher_temp, n_iterations, n_masked_patches_tensor)

    def forward(
        self,
        student_patch_tokens: torch.Tensor,
        teacher_patch_tokens: torch.Tensor,
        student_masks_flat: torch.Tensor,
    ) -> torch.Tensor:
        """Dense form: ``[B, N, K]`` logits / targets and ``[B, N]`` bool masks; per-image
        mean over its masked tokens (0 for an unmasked image), then mean over images."""
        log_probs = F.log_softmax(student_patch_tokens.float() / self.student_temp, dim=-1)
        token_loss = (teacher_patch_tokens * log_probs).sum(dim=-1)
        masks = student_masks_flat.float()
        per_image = (token_loss * masks).sum(dim=-1) / masks.sum(dim=-1).clamp(min=1.0)
        return -per_image.mean()

    def forward_masked(
        self,
        student_patch_tokens_masked: torch.Tensor,
        teacher_patch_tokens_masked: torch.Tensor,
        student_masks_flat: torch.Tensor,
        n_masked_patches: int | None = None,
        masks_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gathered form: ``[M, K]`` outputs at the M masked tokens (in mask order).

        ``n_masked_patches`` trims padded rows (the official code pads the gathered
        tokens to a static upper bound); ``masks_weight`` defaults to
        :func:`masks_weight_from_masks`. With no masked token the loss is an exact 0.
        """
        log_probs = F.log_softmax(student_patch_tokens_masked.float() / self.student_temp, dim=-1)
        token_loss = (teacher_patch_tokens_masked * log_probs).sum(dim=-1)
        if masks_weight is None:
            masks_weight = masks_weight_from_masks(student_masks_flat)
        if n_masked_patches is not None:
            token_loss = token_loss[:n_masked_patches]
        if token_loss.shape != masks_weight.shape:
            raise ValueError(
                f"{token_loss.shape[0]} masked-token losses but {masks_weight.shape[0]} "
                "weights; pass n_masked_patches when the gathered tokens are padded"
            )
        num_images = student_masks_flat.shape[0]
        return -(token_loss * masks_weight).sum() / num_images

    @torch.no_grad()
    def update_center(self, teacher_patch_tokens: torch.Tensor) -> None:
        """Queue ``center <- m * center + (1 - m) * mean over masked tokens``.

        Each rank's mean is averaged over the ranks, as the official code does. A rank
        with no masked token contributes nothing (instead of a NaN) but still joins the
        all-reduce; if no rank has one, the center is left unchanged.
        """
        tokens = teacher_patch_tokens.reshape(-1, self.patch_out_dim).float()
        update = torch.zeros(1, self.patch_out_dim + 1, device=tokens.device)
        if len(tokens):
            update[0, :-1] = tokens.mean(dim=0)
            update[0, -1] = 1.0  # this rank contributed
        self._pending_update = distributed.all_reduce_(update)

    @torch.no_grad()
    def apply_center_update(self) -> None:
        if self._pending_update is None:
            return
        update, self._pending_update = self._pending_update, None
        contributing = update[0, -1]
        if contributing == 0:
            return
        batch_mean = update[:, :-1] / contributing
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)
