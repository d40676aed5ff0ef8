"""The retrieval embedder of LVD-142M's curation: a self-supervised DINOv2 ViT, cosine similarity
(Oquab et al. 2023, §3: a ViT-H/16 there; any backbone of ``pretrain.models`` here).

The embedding is the normalised CLS token (``x_norm_clstoken``), optionally concatenated with the
mean of the normalised patch tokens (as the official linear probe does), L2-normalised so inner
products are cosine similarities.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models import ARCHITECTURES, DinoVisionTransformer, build_model, load_backbone


class RetrievalEmbedder(nn.Module):
    """DINOv2 backbone -> CLS (+ mean patch token) -> L2 normalisation."""

    def __init__(self, backbone: DinoVisionTransformer, use_patch_tokens: bool = False):
        super().__init__()
        self.backbone = backbone
        self.use_patch_tokens = use_patch_tokens
        self.dim = backbone.embed_dim * (2 if use_patch_tokens else 1)
        self.patch_size = backbone.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone.forward_features(x)
        features = out["x_norm_clstoken"]
        if self.use_patch_tokens:
            features = torch.cat([features, out["x_norm_patchtokens"].mean(dim=1)], dim=-1)
        return F.normalize(features.float(), dim=-1)


def is_vit_arch(name: str) -> bool:
    return name in ARCHITECTURES


def build_retrieval_embedder(
    arch: str = "dinov2_vits14",
    checkpoint: str | os.PathLike[str] | None = None,
    use_patch_tokens: bool = False,
    **backbone_kwargs,
) -> RetrievalEmbedder:
    """A retrieval embedder over ``arch``: the official weights or one of our checkpoints (both
    through ``pretrain.models.load_backbone``, strict), or random weights when ``checkpoint`` is
    None (benchmarks and tests only)."""
    if checkpoint is None:
        backbone = build_model(arch, **backbone_kwargs)
    else:
        backbone = load_backbone(checkpoint, arch=arch, **backbone_kwargs)
    return RetrievalEmbedder(backbone, use_patch_tokens=use_patch_tokens)
