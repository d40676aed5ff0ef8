"""The DINOv2 meta-architecture (Oquab et al., 2023): a student and its EMA teacher, each a
ViT backbone with a DINO head and an iBOT head (shared by default), and the losses.

One training step is a few named steps rather than one long function:
:meth:`SSLMetaArch.teacher_targets` (teacher on the unmasked global crops, centered
targets for the CLS tokens and the masked patches), :meth:`student_outputs` (student on
the masked global crops and the local crops), then one method per loss. The loss dict
holds what the official loop logs (SPEC.md section 4, "Loss bookkeeping"); ``total`` is
what is backpropagated: ``dino_local + dino_global + koleo + ibot`` with config weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pretrain.layers.dino_head import DINOHead, build_heads
from pretrain.loss import DINOLoss, KoLeoLoss, iBOTPatchLoss
from pretrain.models import build_model
from pretrain.models.vision_transformer import DinoVisionTransformer
from pretrain.train.config import BackboneConfig, LossConfig, PretrainConfig
from pretrain.train.fsdp import clip_grad_norm, ema_update_


def build_backbone(cfg: BackboneConfig, img_size: int, teacher: bool) -> DinoVisionTransformer:
    kwargs: dict[str, Any] = {
        "img_size": img_size,
        "patch_size": cfg.patch_size,
        "init_values": cfg.layerscale,
        "ffn_layer": cfg.ffn_layer,
        "block_chunks": 0,
        "num_register_tokens": cfg.num_register_tokens,
        # The teacher runs without stochastic depth, as in the official build.
        "drop_path_rate": 0.0 if teacher else cfg.drop_path_rate,
        "drop_path_uniform": cfg.drop_path_uniform,
    }
    for name in ("embed_dim", "depth", "num_heads"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    return build_model(cfg.arch, **kwargs)


class Network(nn.Module):
    """Backbone + DINO head + (own or shared) iBOT head; keys ``backbone.*``,
    ``dino_head.*`` and, if separate, ``ibot_head.*``."""

    def __init__(
        self, backbone: DinoVisionTransformer, dino_head: DINOHead, ibot_head: DINOHead
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        if ibot_head is not dino_head:
            self.ibot_head = ibot_head

    @property
    def shared_heads(self) -> bool:
        return "ibot_head" not in self._modules

    def heads(self) -> list[DINOHead]:
        return [self.dino_head] if self.shared_heads else [self.dino_head, self.ibot_head]

    def get_ibot_head(self) -> DINOHead:
        return self.dino_head if self.shared_heads else self.ibot_head

    def head_outputs(
        self, cls_tokens: torch.Tensor, patch_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(DINO logits of cls_tokens, iBOT logits of patch_tokens)``. A shared head runs
        once on both, as the official code does: its prototype matrix (65,536 rows) is
        normalised, gathered under FSDP and differentiated once per step, not per input."""
        if not self.shared_heads:
            return self.dino_head(cls_tokens), self.ibot_head(patch_tokens)
        logits = self.dino_head(torch.cat([cls_tokens, patch_tokens]))
        return logits.split([len(cls_tokens), len(patch_tokens)])

    def sub_networks(self) -> dict[str, nn.Module]:
        """The parts clipped separately, as the official loop does."""
        return {"backbone": self.backbone, **{f"head{i}": h for i, h in enumerate(self.heads())}}


@dataclass
class TeacherTargets:
    dino: torch.Tensor  # [n_global, B, K] probabilities
    ibot: torch.Tensor  # [n_masked, K] probabilities


@dataclass
class StudentOutputs:
    global_cls: torch.Tensor  # [n_global * B, D] before the head (KoLeo)
    global_logits: torch.Tensor  # [n_global * B, K]
    local_logits: torch.Tensor  # [n_local * B, K]
    masked_patch_logits: torch.Tensor  # [n_masked, K]


class SSLMetaArch(nn.Module):
    """Student, EMA teacher and the DINO / iBOT / KoLeo losses."""

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        loss_cfg: LossConfig = cfg.loss
        img_size = cfg.crops.global_crops_size
        student_backbone = build_backbone(cfg.backbone, img_size, teacher=False)
        self.embed_dim = student_backbone.embed_dim
        self.depth = student_backbone.n_blocks
        heads = build_heads(
            self.embed_dim, loss_cfg.dino_head, loss_cfg.ibot_head, loss_cfg.separate_ibot_head
        )
        self.student = Network(student_backbone, *heads)
        teacher_backbone = build_backbone(cfg.backbone, img_size, teacher=True)
        self.teacher = Network(teacher_backbone, *copy.deepcopy(heads))
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)

        self.dino_loss = DINOLoss(
            loss_cfg.dino_head.out_dim, loss_cfg.student_temp, loss_cfg.center_momentum
        )
        ibot_dim = (loss_cfg.ibot_head or loss_cfg.dino_head).out_dim
        self.ibot_patch_loss = iBOTPatchLoss(
            ibot_dim, loss_cfg.student_temp, loss_cfg.center_momentum
        )
        self.koleo_loss = KoLeoLoss()

    def train(self, mode: bool = True) -> SSLMetaArch:
        super().train(mode)
        self.teacher.eval()  # the teacher never uses dropout-like behaviour
        return self

    def target_network(self) -> Network:
        """The network whose outputs are the targets: the EMA teacher here; a frozen larger
        model under distillation (:mod:`pretrain.train.distill`)."""
        return self.teacher

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def teacher_targets(self, batch: dict[str, Any], teacher_temp: float) -> TeacherTargets:
        """Teacher on the unmasked global crops: centered CLS targets (swapped so that each
        global crop learns from the other one) and patch targets at the masked positions."""
        global_crops = batch["collated_global_crops"]
        n_global = 2
        teacher = self.target_network()
        # Called as a module (not .forward_features) so FSDP's hooks gather the parameters.
        out = teacher.backbone(global_crops, is_training=True)
        cls = out["x_norm_clstoken"]
        batch_size = cls.shape[0] // n_global
        cls = torch.cat(cls.chunk(n_global)[::-1])  # A <-> B
        patches = out["x_norm_patchtokens"].flatten(0, 1)[batch["mask_indices_list"]]
        cls_logits, patch_logits = teacher.head_outputs(cls, patches)
        if self.cfg.loss.centering == "softmax":
            dino = self.dino_loss.softmax_center_teacher(cls_logits, teacher_temp)
            self.dino_loss.update_center(cls_logits)
            ibot = self.ibot_patch_loss.softmax_center_teacher(patch_logits, teacher_temp)
            self.ibot_patch_loss.update_center(patch_logits)
        else:
            dino = self.dino_loss.sinkhorn_knopp_teacher(cls_logits, teacher_temp)
            ibot = self.ibot_patch_loss.sinkhorn_knopp_teacher(
                patch_logits, teacher_temp, batch["n_masked_patches"]
            )
        return TeacherTargets(dino.view(n_global, batch_size, -1), ibot)

    def student_outputs(self, batch: dict[str, Any]) -> StudentOutputs:
        """Student on the masked global crops and the local crops (one backbone call)."""
        global_crops = batch["collated_global_crops"]
        local_crops = batch["collated_local_crops"]
        masks = batch["collated_masks"]
        has_local = local_crops.numel() > 0
        inputs = [global_crops, local_crops] if has_local else [global_crops]
        outs = self.student.backbone(inputs, [masks] + [None] * has_local, is_training=True)
        global_out = outs[0]
        patches = global_out["x_norm_patchtokens"].flatten(0, 1)[batch["mask_indices_list"]]
        global_cls = global_out["x_norm_clstoken"]
        local_cls = outs[1]["x_norm_clstoken"] if has_local else global_cls[:0]
        cls_logits, patch_logits = self.student.head_outputs(
            torch.cat([global_cls, local_cls]), patches
        )
        global_logits, local_logits = cls_logits.split([len(global_cls), len(local_cls)])
        return StudentOutputs(
            global_cls=global_cls,
            global_logits=global_logits,
            local_logits=local_logits,
            masked_patch_logits=patch_logits,
        )

    def dino_losses(
        self, student: StudentOutputs, targets: TeacherTargets, n_local: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dino_local, dino_global)``, each divided by the number of loss terms."""
        n_terms = 2 * n_local + 2
        teacher_list = list(targets.dino.unbind(0))
        if n_local:
            local = self.dino_loss(student.local_logits.chunk(n_local), teacher_list) / n_terms
        else:
            local = student.global_logits.new_zeros(())
        # Both globals at once: the batch mean over 2B rows, times 2, is the two terms' sum.
        global_ = (
            self.dino_loss([student.global_logits], [targets.dino.flatten(0, 1)]) * 2 / n_terms
        )
        return local, global_

    def koleo(self, student: StudentOutputs) -> torch.Tensor:
        return sum(self.koleo_loss(cls) for cls in student.global_cls.chunk(2))

    def ibot(
        self, student: StudentOutputs, targets: TeacherTargets, batch: dict[str, Any]
    ) -> torch.Tensor:
        # * 2 (loss scale) * 1/2 (per global crop), as the official loop.
        return self.ibot_patch_loss.forward_masked(
            student.masked_patch_logits,
            targets.ibot,
            student_masks_flat=batch["collated_masks"],
            masks_weight=batch["masks_weight"],
        )

    def forward_backward(
        self, batch: dict[str, Any], teacher_temp: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the losses, backpropagate their weighted sum, return it and the loss dict."""
        weights = self.cfg.loss
        n_local = batch["collated_local_crops"].shape[0] // (
            batch["collated_global_crops"].shape[0] // 2
        )
        targets = self.teacher_targets(batch, teacher_temp)
        student = self.student_outputs(batch)
        dino_local, dino_global = self.dino_losses(student, targets, n_local)
        total = weights.dino_weight * (dino_local + dino_global)
        loss_dict = {
            "dino_local_crops_loss": dino_local.detach(),
            "dino_global_crops_loss": dino_global.detach(),
        }
        if weights.koleo_weight > 0:
            koleo = weights.koleo_weight * self.koleo(student)
            total = total + koleo
            loss_dict["koleo_loss"] = koleo.detach() / 2
        if weights.ibot_weight > 0:
            ibot = self.ibot(student, targets, batch)
            total = total + weights.ibot_weight * ibot
            loss_dict["ibot_loss"] = ibot.detach() / 2
        total.backward()
        loss_dict["total_loss"] = total.detach()
        return total.detach(), {k: float(v) for k, v in loss_dict.items()}

    def clip_gradients(self, max_norm: float) -> dict[str, float]:
        """Clip each student sub-network separately; return the norms before clipping
        (global norms when the gradients are sharded)."""
        norms = {}
        for name, module in self.student.sub_networks().items():
            params = [p for p in module.parameters() if p.grad is not None]
            if params:
                norms[name] = clip_grad_norm(params, max_norm)
        return norms

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher <- m * teacher + (1 - m) * student`` for backbone and heads (on each
        rank's shards when sharded)."""
        student = dict(self.student.named_parameters())
        pairs = [(t, student[name]) for name, t in self.teacher.named_parameters()]
        ema_update_([t for t, _ in pairs], [s for _, s in pairs], momentum)
