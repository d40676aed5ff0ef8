"""DINOv2 losses, one per file: DINO (CLS token), iBOT (masked patches), KoLeo,
and the Sinkhorn-Knopp teacher centering they share."""

from pretrain.loss.dino_clstoken_loss import DINOLoss
from pretrain.loss.ibot_patch_loss import iBOTPatchLoss, masks_weight_from_masks
from pretrain.loss.koleo_loss import KoLeoLoss
from pretrain.loss.sinkhorn_knopp import SinkhornKnopp, sinkhorn_knopp

__all__ = [
    "DINOLoss",
    "KoLeoLoss",
    "SinkhornKnopp",
    "iBOTPatchLoss",
    "masks_weight_from_masks",
    "sinkhorn_knopp",
]
