"""The backbone against an independent, plain re-implementation over the state dict.

Official weights cannot be downloaded here, so "same outputs as the official backbone"
is checked against a straightforward reading of the published architecture: loops and
einsum over the state dict tensors, nothing shared with ``pretrain``'s modules.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.models import build_model

TINY = dict(img_size=56, patch_size=14, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0)


def _randomise(model, seed=0):
    """Random values everywhere (incl. biases, gammas, CLS, mask token) so that no
    parameter can be silently ignored by a wrong forward."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.3)
    return model


def _layer_norm(x, weight, bias, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _blocks_by_index(state):
    """Per-block parameter dicts, in order, from ``blocks.N.*`` or chunked ``blocks.C.N.*``
    keys (where N is the global block index)."""
    blocks = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "blocks":
            continue
        chunked = parts[2].isdigit()
        index = int(parts[2] if chunked else parts[1])
        name = ".".join(parts[3:] if chunked else parts[2:])
        blocks.setdefault(index, {})[name] = value
    return [blocks[i] for i in sorted(blocks)]


def reference_forward(state, images, patch_size, num_heads, num_registers, masks=None):
    batch, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    # Patch embedding: each patch flattened and projected.
    patches = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    weight = state["patch_embed.proj.weight"]
    tokens = torch.einsum("bcipjq,dcpq->bijd", patches, weight).reshape(batch, rows * cols, -1)
    tokens = tokens + state["patch_embed.proj.bias"]
    dim = tokens.shape[-1]
    if masks is not None:
        for b in range(batch):
            for t in range(rows * cols):
                if masks[b, t]:
                    tokens[b, t] = state["mask_token"][0]
    cls = state["cls_token"].expand(batch, 1, dim)
    tokens = torch.cat([cls, tokens], dim=1) + state["pos_embed"]
    if num_registers:
        registers = state["register_tokens"].expand(batch, num_registers, dim)
        tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)

    head_dim = dim // num_heads
    for params in _blocks_by_index(state):
        h = _layer_norm(tokens, params["norm1.weight"], params["norm1.bias"])
        qkv = h @ params["attn.qkv.weight"].T + params["attn.qkv.bias"]
        q, k, v = qkv[..., :dim], qkv[..., dim : 2 * dim], qkv[..., 2 * dim :]
        heads_out = []
        for head in range(num_heads):
            sl = slice(head * head_dim, (head + 1) * head_dim)
            scores = torch.einsum("bnd,bmd->bnm", q[..., sl], k[..., sl]) / math.sqrt(head_dim)
            heads_out.append(torch.einsum("bnm,bmd->bnd", scores.softmax(-1), v[..., sl]))
        attn = torch.cat(heads_out, dim=-1) @ params["attn.proj.weight"].T
        attn = attn + params["attn.proj.bias"]
        tokens = tokens + params.get("ls1.gamma", 1.0) * attn
        h = _layer_norm(tokens, params["norm2.weight"], params["norm2.bias"])
        if "mlp.w12.weight" in params:
            gates = h @ params["mlp.w12.weight"].T + params["mlp.w12.bias"]
            x1, x2 = gates[..., : gates.shape[-1] // 2], gates[..., gates.shape[-1] // 2 :]
            ffn = (x1 * torch.sigmoid(x1) * x2) @ params["mlp.w3.weight"].T + params["mlp.w3.bias"]
        else:
            hidden = _gelu(h @ params["mlp.fc1.weight"].T + params["mlp.fc1.bias"])
            ffn = hidden @ params["mlp.fc2.weight"].T + params["mlp.fc2.bias"]
        tokens = tokens + params.get("ls2.gamma", 1.0) * ffn
    normed = _layer_norm(tokens, state["norm.weight"], state["norm.bias"])
    return tokens, normed


@pytest.mark.parametrize(
    "extra",
    [
        dict(init_values=1.0, block_chunks=0),
        dict(init_values=1.0, block_chunks=0, num_register_tokens=2, interpolate_offset=0.0),
        dict(init_values=None, block_chunks=3),
        dict(init_values=1e-5, block_chunks=0, ffn_layer="swiglufused"),
    ],
    ids=["plain", "registers", "chunked-no-layerscale", "swiglu"],
)
def test_forward_features_matches_reference(extra):
    model = _randomise(build_model("vit", **TINY, **extra)).double().eval()
    images = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1)).double()
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, [1, 5, 6]] = True
    state = {k: v.detach() for k, v in model.state_dict().items()}
    registers = extra.get("num_register_tokens", 0)

    with torch.no_grad():
        out = model.forward_features(images, masks=masks)
    prenorm, normed = reference_forward(state, images, 14, 4, registers, masks)

    torch.testing.assert_close(out["x_prenorm"], prenorm, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["x_norm_clstoken"], normed[:, 0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(
        out["x_norm_regtokens"], normed[:, 1 : 1 + registers], rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(
        out["x_norm_patchtokens"], normed[:, 1 + registers :], rtol=1e-9, atol=1e-9
    )
    assert out["masks"] is masks
    assert set(out) == {
        "x_norm_clstoken",
        "x_norm_regtokens",
        "x_norm_patchtokens",
        "x_prenorm",
        "masks",
    }


def test_plain_attention_path_matches_sdpa():
    model = _randomise(build_model("vit", **TINY, init_values=1.0, block_chunks=0)).eval()
    naive = build_model("vit", **TINY, init_values=1.0, block_chunks=0, use_sdpa=False).eval()
    naive.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(images), naive(images), rtol=1e-5, atol=1e-5)


def _interp_model(offset, antialias):
    return _randomise(
        build_model(
            "vit",
            **TINY,
            block_chunks=0,
            interpolate_offset=offset,
            interpolate_antialias=antialias,
        )
    )


@pytest.mark.parametrize("offset,antialias", [(0.1, False), (0.0, True), (0.0, False)])
def test_pos_embed_interpolation_matches_direct_interpolate(offset, antialias):
    model = _interp_model(offset, antialias)
    height, width = 42, 84  # non-square: 3 x 6 patches from the stored 4 x 4 grid
    tokens = torch.zeros(1, 1 + 3 * 6, 32)
    got = model.interpolate_pos_encoding(tokens, height, width)

    stored = model.pos_embed.detach()
    grid = stored[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    if offset:
        expected = F.interpolate(
            grid, scale_factor=((3 + offset) / 4, (6 + offset) / 4), mode="bicubic"
        )
    else:
        expected = F.interpolate(grid, size=(3, 6), mode="bicubic", antialias=antialias)
    expected = torch.cat([stored[:, :1], expected.permute(0, 2, 3, 1).reshape(1, 18, 32)], 1)
    torch.testing.assert_close(got, expected)


def test_offset_and_size_paths_differ():
    """The two official behaviours are distinct: the 0.1 offset passes a scale factor,
    which moves the sampling grid compared with an explicit output size."""
    with_offset = _interp_model(0.1, False)
    with_size = _interp_model(0.0, False)
    with_size.load_state_dict(with_offset.state_dict())
    tokens = torch.zeros(1, 1 + 9, 32)
    a = with_offset.interpolate_pos_encoding(tokens, 42, 42)
    b = with_size.interpolate_pos_encoding(tokens, 42, 42)
    assert a.shape == b.shape == (1, 10, 32)
    assert not torch.allclose(a, b)


def test_stored_grid_is_used_without_interpolation():
    model = _interp_model(0.1, False)
    tokens = torch.zeros(1, 17, 32)
    assert model.interpolate_pos_encoding(tokens, 56, 56) is model.pos_embed
