import torch

from pretrain.layers import (
    Attention,
    Block,
    DropPath,
    LayerScale,
    SwiGLUFFN,
    add_residual_on_batch_subset,
    swiglu_hidden_features,
)


def test_sdpa_and_plain_attention_agree_forward_and_backward():
    torch.manual_seed(0)
    fast = Attention(32, num_heads=4, qkv_bias=True).double()
    plain = Attention(32, num_heads=4, qkv_bias=True, use_sdpa=False).double()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(3, 11, 32, dtype=torch.double)
    out_fast, out_plain = fast(x), plain(x)
    torch.testing.assert_close(out_fast, out_plain)
    out_fast.pow(2).sum().backward()
    out_plain.pow(2).sum().backward()
    torch.testing.assert_close(fast.qkv.weight.grad, plain.qkv.weight.grad)


def test_swiglu_hidden_width_and_function():
    assert swiglu_hidden_features(1536 * 4) == 4096
    assert swiglu_hidden_features(100) == 72  # int(66.6) = 66 -> rounded up to 72
    torch.manual_seed(0)
    ffn = SwiGLUFFN(8, hidden_features=12)
    x = torch.randn(2, 8)
    w1, w2 = ffn.w12.weight.chunk(2)
    b1, b2 = ffn.w12.bias.chunk(2)
    hidden = torch.nn.functional.silu(x @ w1.T + b1) * (x @ w2.T + b2)
    torch.testing.assert_close(ffn(x), hidden @ ffn.w3.weight.T + ffn.w3.bias)


def test_layer_scale_initialised_to_init_values():
    scale = LayerScale(6, init_values=1e-5)
    torch.testing.assert_close(scale(torch.ones(2, 6)), torch.full((2, 6), 1e-5))


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_training():
    drop = DropPath(0.5)
    x = torch.ones(200, 3, 4)
    assert torch.equal(drop.eval()(x), x)
    out = drop.train()(x)
    per_sample = out.flatten(1)
    # Each sample is either dropped entirely or kept and rescaled by 1 / keep.
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    assert 40 < (per_sample[:, 0] == 0).sum() < 160


def test_batch_subset_residual_touches_only_kept_samples_scaled():
    torch.manual_seed(0)
    x = torch.zeros(8, 2, 3)
    out = add_residual_on_batch_subset(x, lambda t: torch.ones_like(t), sample_drop_ratio=0.4)
    changed = (out != 0).flatten(1).all(1)
    kept = int(8 * 0.6)
    assert changed.sum() == kept
    assert torch.allclose(out[changed], torch.full_like(out[changed], 8 / kept))


def test_block_is_pre_norm_residual_and_accepts_lists():
    torch.manual_seed(0)
    block = Block(16, num_heads=2, qkv_bias=True, init_values=0.5).eval()
    x = torch.randn(2, 5, 16)
    h = x + block.ls1(block.attn(block.norm1(x)))
    expected = h + block.ls2(block.mlp(block.norm2(h)))
    torch.testing.assert_close(block(x), expected)
    other = torch.randn(3, 7, 16)
    outs = block([x, other])
    torch.testing.assert_close(outs[1], block(other))
