"""Building blocks of the DINOv2 backbone and heads, one per file."""

from pretrain.layers.attention import Attention
from pretrain.layers.block import Block
from pretrain.layers.dino_head import DINOHead, DINOHeadConfig, WeightNormLinear, build_heads
from pretrain.layers.drop_path import DropPath, add_residual_on_batch_subset
from pretrain.layers.layer_scale import LayerScale
from pretrain.layers.mlp import Mlp
from pretrain.layers.patch_embed import PatchEmbed
from pretrain.layers.swiglu_ffn import SwiGLUFFN, swiglu_hidden_features

__all__ = [
    "Attention",
    "Block",
    "DINOHead",
    "DINOHeadConfig",
    "DropPath",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "SwiGLUFFN",
    "WeightNormLinear",
    "add_residual_on_batch_subset",
    "build_heads",
    "swiglu_hidden_features",
]
