"""The DINOv2 Vision Transformer backbone (Oquab et al., "DINOv2: Learning Robust Visual
Features without Supervision", 2023; registers: Darcet et al., "Vision Transformers Need
Registers", ICLR 2024).

Written from the published description; parameter names, constructor keywords, defaults
and outputs follow the official ``DinoVisionTransformer`` so that its configs port over
unchanged and the torch.hub state dicts (``dinov2_vits14``, ``dinov2_vits14_reg``, ...)
load with ``strict=True``. Token order: CLS, registers, patches. Registers get no position
embedding; masked patches are replaced by ``mask_token`` before positions are added.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.layers.block import Block
from pretrain.layers.mlp import Mlp
from pretrain.layers.patch_embed import PatchEmbed
from pretrain.layers.swiglu_ffn import SwiGLUFFN


def _identity_ffn(*args: Any, **kwargs: Any) -> nn.Module:
    return nn.Identity()


# The official code maps both SwiGLU names to the fused variant (2/3-width hidden layer).
FFN_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": Mlp,
    "swiglu": SwiGLUFFN,
    "swiglufused": SwiGLUFFN,
    "identity": _identity_ffn,
}


class BlockChunk(nn.ModuleList):
    """A run of blocks, left-padded with ``nn.Identity`` so keys keep global block indices.

    This is the ``block_chunks > 0`` layout of the official training checkpoints:
    chunk ``c`` holds blocks ``c * size ... (c + 1) * size - 1`` under ``blocks.c.<i>``.
    """

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        for block in self:
            x = block(x)
        return x


class DinoVisionTransformer(nn.Module):
    """ViT backbone with CLS, optional register and mask tokens, and the official layout."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        ffn_bias: bool = True,
        proj_bias: bool = True,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        init_values: float | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        ffn_layer: str = "mlp",
        block_chunks: int = 1,
        num_register_tokens: int = 0,
        interpolate_antialias: bool = False,
        interpolate_offset: float = 0.1,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if ffn_layer not in FFN_LAYERS:
            raise ValueError(
                f"unknown ffn_layer {ffn_layer!r}; expected one of {sorted(FFN_LAYERS)}"
            )
        if num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {num_register_tokens}")
        if block_chunks < 0 or (block_chunks > 0 and depth % block_chunks):
            raise ValueError(f"block_chunks={block_chunks} must be 0 or divide depth={depth}")

        self.num_features = self.embed_dim = embed_dim
        self.num_tokens = 1
        self.n_blocks = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_tokens, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
            if num_register_tokens
            else None
        )

        if drop_path_uniform:
            drop_rates = [drop_path_rate] * depth
        else:
            # Linear from 0 to the rate, in plain Python so meta-device builds work.
            step = drop_path_rate / (depth - 1) if depth > 1 else 0.0
            drop_rates = [step * index for index in range(depth)]
        make_block = partial(
            Block,
            dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            ffn_bias=ffn_bias,
            init_values=init_values,
            act_layer=act_layer,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            ffn_layer=FFN_LAYERS[ffn_layer],
            use_sdpa=use_sdpa,
        )
        blocks = [make_block(drop_path=rate) for rate in drop_rates]
        if block_chunks > 0:
            self.chunked_blocks = True
            size = depth // block_chunks
            self.blocks = nn.ModuleList(
                BlockChunk([nn.Identity()] * start + blocks[start : start + size])
                for start in range(0, depth, size)
            )
        else:
            self.chunked_blocks = False
            self.blocks = nn.ModuleList(blocks)

        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.init_weights()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """Initialise as the official backbone: trunc-normal 0.02 for ``pos_embed`` and
        every Linear (zero biases), N(0, 1e-6) for CLS and registers, zero mask token."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def iter_blocks(self) -> Iterator[nn.Module]:
        """The transformer blocks in order, skipping the identity padding of chunks."""
        for item in self.blocks:
            if isinstance(item, BlockChunk):
                yield from (block for block in item if not isinstance(block, nn.Identity))
            else:
                yield item

    # ------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Position embedding for an input of ``height x width`` pixels (``x``: CLS + patches).

        Bicubic in fp32 with the CLS entry kept. With a non-zero ``interpolate_offset``
        the scale factor ``(grid + offset) / M`` is passed to ``F.interpolate`` (the
        original DINO trick against floating-point rounding of the output size); with
        offset 0 the output size is given explicitly. Antialiasing follows the flag.
        """
        previous_dtype = x.dtype
        num_patches = x.shape[1] - 1
        stored = self.pos_embed.shape[1] - 1
        if num_patches == stored and height == width:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        class_pos_embed = pos_embed[:, :1]
        patch_pos_embed = pos_embed[:, 1:]
        dim = x.shape[-1]
        rows, cols = height // self.patch_size, width // self.patch_size
        side = int(math.sqrt(stored))
        if side * side != stored:
            raise ValueError(f"stored pos_embed has {stored} patch entries, not a square grid")
        if self.interpolate_offset:
            sizing: dict[str, Any] = {
                "scale_factor": (
                    (rows + self.interpolate_offset) / side,
                    (cols + self.interpolate_offset) / side,
                )
            }
        else:
            sizing = {"size": (rows, cols)}
        grid = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, mode="bicubic", antialias=self.interpolate_antialias, **sizing)
        if tuple(grid.shape[-2:]) != (rows, cols):
            raise RuntimeError(
                f"interpolated position grid {tuple(grid.shape[-2:])} != patch grid "
                f"{(rows, cols)}; try another interpolate_offset"
            )
        patch_pos_embed = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat((class_pos_embed, patch_pos_embed), dim=1).to(previous_dtype)

    def prepare_tokens_with_masks(
        self, x: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch-embed, put the mask token at masked patches, prepend CLS, add positions,
        then insert the register tokens after CLS. ``masks``: bool ``[B, num_patches]``."""
        height, width = x.shape[-2:]
        x = self.patch_embed(x)
        if masks is not None:
            if masks.shape != x.shape[:2]:
                raise ValueError(
                    f"masks of shape {tuple(masks.shape)} do not match the patch grid "
                    f"{tuple(x.shape[:2])} (batch, patches)"
                )
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, height, width)
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(x.shape[0], -1, -1)
            x = torch.cat((x[:, :1], registers, x[:, 1:]), dim=1)
        return x

    # ------------------------------------------------------------------ forward
    def _output_dict(self, x: torch.Tensor, masks: torch.Tensor | None) -> dict[str, Any]:
        x_norm = self.norm(x)
        first_patch = self.num_register_tokens + 1
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1:first_patch],
            "x_norm_patchtokens": x_norm[:, first_patch:],
            "x_prenorm": x,
            "masks": masks,
        }

    def forward_features_list(
        self,
        x_list: list[torch.Tensor],
        masks_list: Sequence[torch.Tensor | None] | None,
    ) -> list[dict[str, Any]]:
        """``forward_features`` for several inputs (e.g. global and local crops) at once."""
        if masks_list is None:
            masks_list = [None] * len(x_list)
        if len(masks_list) != len(x_list):
            raise ValueError(f"got {len(x_list)} inputs but {len(masks_list)} masks")
        tokens = [self.prepare_tokens_with_masks(x, m) for x, m in zip(x_list, masks_list)]
        for block in self.blocks:
            tokens = block(tokens)
        return [self._output_dict(x, m) for x, m in zip(tokens, masks_list)]

    def forward_features(
        self,
        x: torch.Tensor | list[torch.Tensor],
        masks: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Return the official dict: ``x_norm_clstoken`` [B, D], ``x_norm_regtokens``
        [B, R, D], ``x_norm_patchtokens`` [B, HW, D], ``x_prenorm`` and ``masks``."""
        if isinstance(x, list):
            return self.forward_features_list(x, masks)  # type: ignore[arg-type]
        tokens = self.prepare_tokens_with_masks(x, masks)  # type: ignore[arg-type]
        for block in self.blocks:
            tokens = block(tokens)
        return self._output_dict(tokens, masks)  # type: ignore[arg-type]

    def _collect_layers(self, x: torch.Tensor, n: int | Sequence[int]) -> list[torch.Tensor]:
        x = self.prepare_tokens_with_masks(x)
        total = self.n_blocks
        wanted = set(range(total - n, total)) if isinstance(n, int) else set(n)
        outputs = []
        for index, block in enumerate(self.iter_blocks()):
            x = block(x)
            if index in wanted:
                outputs.append(x)
        if len(outputs) != len(wanted):
            raise ValueError(f"only {len(outputs)} of the {len(wanted)} requested blocks exist")
        return outputs

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Any, ...]:
        """Outputs of the last ``n`` blocks (or of the block indices in ``n``), as the
        official method: optionally final-normed, patch tokens only (registers dropped),
        reshaped to ``[B, D, H/p, W/p]``, and paired with their class token."""
        outputs = self._collect_layers(x, n)
        if norm:
            outputs = [self.norm(out) for out in outputs]
        class_tokens = [out[:, 0] for out in outputs]
        outputs = [out[:, 1 + self.num_register_tokens :] for out in outputs]
        if reshape:
            batch, _, height, width = x.shape
            rows, cols = height // self.patch_size, width // self.patch_size
            outputs = [
                out.reshape(batch, rows, cols, -1).permute(0, 3, 1, 2).contiguous()
                for out in outputs
            ]
        if return_class_token:
            return tuple(zip(outputs, class_tokens))
        return tuple(outputs)

    def forward(self, *args: Any, is_training: bool = False, **kwargs: Any) -> Any:
        features = self.forward_features(*args, **kwargs)
        if is_training:
            return features
        return self.head(features["x_norm_clstoken"])  # type: ignore[index]


# ---------------------------------------------------------------------- constructors
# Published sizes (DINOv2 paper, Table 17); defaults otherwise as the official code.


def vit_tiny(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any):
    """ViT-Ti: 192-d, 12 blocks, 3 heads (DeiT-Ti's geometry, DINO's smallest; 5.5M parameters):
    the backbone for pretraining on a CPU in minutes (demos, tests)."""
    return DinoVisionTransformer(
        patch_size=patch_size,
        embed_dim=192,
        depth=12,
        num_heads=3,
        mlp_ratio=4,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )


def vit_small(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any):
    """ViT-S: 384-d, 12 blocks, 6 heads (22.1M parameters at /14, 518 px)."""
    return DinoVisionTransformer(
        patch_size=patch_size,
        embed_dim=384,
        depth=12,
        num_heads=6,
        mlp_ratio=4,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )


def vit_base(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any):
    """ViT-B: 768-d, 12 blocks, 12 heads (86.6M parameters at /14)."""
    return DinoVisionTransformer(
        patch_size=patch_size,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )


def vit_large(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any):
    """ViT-L: 1024-d, 24 blocks, 16 heads (304.4M parameters at /14)."""
    return DinoVisionTransformer(
        patch_size=patch_size,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        mlp_ratio=4,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )


def vit_giant2(patch_size: int = 16, num_register_tokens: int = 0, **kwargs: Any):
    """ViT-g: 1536-d, 40 blocks, 24 heads (1.14B parameters at /14 with SwiGLU)."""
    return DinoVisionTransformer(
        patch_size=patch_size,
        embed_dim=1536,
        depth=40,
        num_heads=24,
        mlp_ratio=4,
        num_register_tokens=num_register_tokens,
        **kwargs,
    )
