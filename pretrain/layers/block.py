"""Pre-norm Transformer block of the Vision Transformer (Dosovitskiy et al., ICLR 2021),
with LayerScale and stochastic depth as used by DINOv2 (Oquab et al., 2023).

``x = x + ls1(attn(norm1(x)))`` then ``x = x + ls2(mlp(norm2(x)))``. Keys match the
official backbones: ``norm1``, ``attn``, ``ls1.gamma``, ``norm2``, ``mlp``, ``ls2.gamma``
(no ``ls*`` keys when ``init_values`` is falsy, as in the official code).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from pretrain.layers.attention import Attention
from pretrain.layers.drop_path import DropPath, add_residual_on_batch_subset
from pretrain.layers.layer_scale import LayerScale
from pretrain.layers.mlp import Mlp

# LayerNorm with the eps of the official backbones.
DEFAULT_NORM_LAYER = partial(nn.LayerNorm, eps=1e-6)

# Above this drop ratio the official code switches to the batch-subset form of
# stochastic depth, which skips the compute of dropped samples.
SUBSET_DROP_PATH_THRESHOLD = 0.1


class Block(nn.Module):
    """One pre-norm attention + feed-forward block; accepts a tensor or a list of tensors.

    A list (e.g. global and local crops of different token counts) is run tensor by
    tensor through the same weights. DINOv2 packs such lists into one sequence with a
    block-diagonal mask through xFormers; without xFormers a dense mask would cost
    quadratic memory in the packed length, so the loop is the honest equivalent.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = DEFAULT_NORM_LAYER,
        ffn_layer: Callable[..., nn.Module] = Mlp,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            use_sdpa=use_sdpa,
        )
        self.ls1 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = ffn_layer(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer,
            drop=drop,
            bias=ffn_bias,
        )
        self.ls2 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.sample_drop_ratio = drop_path

    def _attn_residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x)))

    def _ffn_residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sample_drop_ratio > SUBSET_DROP_PATH_THRESHOLD:
            x = add_residual_on_batch_subset(x, self._attn_residual, self.sample_drop_ratio)
            return add_residual_on_batch_subset(x, self._ffn_residual, self.sample_drop_ratio)
        x = x + self.drop_path1(self._attn_residual(x))
        return x + self.drop_path2(self._ffn_residual(x))

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(x, list):
            return [self.forward_tensor(item) for item in x]
        return self.forward_tensor(x)
