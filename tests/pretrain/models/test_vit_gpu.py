"""CUDA checks: the fused attention kernels run for DINOv2's shapes and agree with the
plain path. Skipped without a GPU."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pretrain.models import build_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _pair(**kwargs):
    torch.manual_seed(0)
    # ViT-S/14 with registers (head dim 64, as the released models), 2 blocks only.
    settings = dict(
        img_size=518,
        patch_size=14,
        embed_dim=384,
        depth=2,
        num_heads=6,
        init_values=1.0,
        block_chunks=0,
        num_register_tokens=4,
        interpolate_antialias=True,
        interpolate_offset=0.0,
    )
    settings.update(kwargs)
    fast = build_model("vit", **settings).cuda().eval()
    plain = build_model("vit", use_sdpa=False, **settings).cuda().eval()
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize(
    "backend", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], ids=["flash", "mem"]
)
def test_fused_kernels_match_plain_attention_in_bf16(backend):
    fast, plain = _pair()
    images = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(backend):  # raises if this kernel cannot run these inputs
            got = fast.forward_features(images)["x_norm_patchtokens"]
        expected = plain.forward_features(images)["x_norm_patchtokens"]
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.05, atol=0.05)


def test_masked_multicrop_training_step_in_bf16():
    fast, _ = _pair(drop_path_rate=0.3, drop_path_uniform=True)
    fast.train()
    globals_ = torch.randn(4, 3, 224, 224, device="cuda")
    locals_ = torch.randn(8, 3, 98, 98, device="cuda")
    masks = torch.rand(4, 256, device="cuda") < 0.3
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outs = fast.forward_features([globals_, locals_], [masks, None])
        loss = sum(o["x_norm_clstoken"].float().pow(2).mean() for o in outs)
    loss.backward()
    assert outs[1]["x_norm_patchtokens"].shape == (8, 49, 384)
    assert torch.isfinite(fast.blocks[0].attn.qkv.weight.grad).all()
