"""Behaviours of the backbone that the official one has: batch independence, any input
size, mask tokens, registers, intermediate layers, chunked blocks, save and reload."""

import pytest
import torch

from pretrain.models import build_model, load_backbone

TINY = dict(img_size=56, patch_size=14, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0)


def _tiny(**extra):
    torch.manual_seed(0)
    settings = dict(TINY, init_values=1.0, block_chunks=0)
    settings.update(extra)
    model = build_model("vit", **settings)
    with torch.no_grad():
        # Make CLS, registers and the mask token distinguishable from zero.
        model.cls_token.normal_()
        model.mask_token.normal_()
        if model.register_tokens is not None:
            model.register_tokens.normal_()
    return model.eval()


def test_outputs_do_not_depend_on_batch_composition():
    model = _tiny(num_register_tokens=2)
    images = torch.randn(4, 3, 56, 56)
    with torch.no_grad():
        full = model.forward_features(images)
        for order in ([2], [3, 0], [1, 3, 2]):
            part = model.forward_features(images[order])
            for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_norm_regtokens"):
                torch.testing.assert_close(part[key], full[key][order], rtol=1e-5, atol=1e-5)


def test_non_square_input_interpolates_positions():
    model = _tiny()
    images = torch.randn(2, 3, 42, 70)  # 3 x 5 patches, stored grid 4 x 4
    with torch.no_grad():
        out = model.forward_features(images)
        layers = model.get_intermediate_layers(images, n=1, reshape=True)
    assert out["x_norm_patchtokens"].shape == (2, 15, 32)
    assert layers[0].shape == (2, 32, 3, 5)
    assert torch.isfinite(out["x_norm_patchtokens"]).all()


def test_input_not_multiple_of_patch_size_is_rejected():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        _tiny()(torch.randn(1, 3, 50, 56))


def test_mask_token_replaces_masked_patch_embeddings():
    model = _tiny(num_register_tokens=1)
    images = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, [0, 7]] = True
    masks[1, 15] = True
    with torch.no_grad():
        tokens = model.prepare_tokens_with_masks(images, masks)
        plain = model.prepare_tokens_with_masks(images)
    patch_tokens = tokens[:, 2:]  # after CLS and the register
    pos = model.pos_embed[0, 1:].detach()
    for b, t in masks.nonzero().tolist():
        torch.testing.assert_close(patch_tokens[b, t], model.mask_token[0].detach() + pos[t])
    torch.testing.assert_close(patch_tokens[~masks], plain[:, 2:][~masks])
    assert not torch.allclose(patch_tokens[masks], plain[:, 2:][masks])
    with pytest.raises(ValueError, match="do not match the patch grid"):
        model.prepare_tokens_with_masks(images, masks[:, :10])


def test_registers_follow_cls_without_position_embedding():
    model = _tiny(num_register_tokens=3)
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        tokens = model.prepare_tokens_with_masks(images)
        out = model.forward_features(images)
    assert tokens.shape == (2, 1 + 3 + 16, 32)
    torch.testing.assert_close(tokens[:, 1:4], model.register_tokens.detach().expand(2, 3, 32))
    cls = (model.cls_token[0, 0] + model.pos_embed[0, 0]).detach()
    torch.testing.assert_close(tokens[:, 0], cls.expand(2, 32))
    assert out["x_norm_regtokens"].shape == (2, 3, 32)
    torch.testing.assert_close(out["x_norm_regtokens"], model.norm(out["x_prenorm"][:, 1:4]))
    assert out["x_norm_patchtokens"].shape == (2, 16, 32)


def test_get_intermediate_layers_matches_manual_block_walk():
    model = _tiny(num_register_tokens=2)
    images = torch.randn(2, 3, 56, 84)
    with torch.no_grad():
        x = model.prepare_tokens_with_masks(images)
        manual = []
        for block in model.blocks:
            x = block(x)
            manual.append(x)
        last_two = model.get_intermediate_layers(images, n=2, return_class_token=True)
        picked = model.get_intermediate_layers(images, n=[0, 2], reshape=True, norm=False)
    for (patches, cls), expected in zip(last_two, manual[2:]):
        normed = model.norm(expected)
        torch.testing.assert_close(patches, normed[:, 3:])
        torch.testing.assert_close(cls, normed[:, 0])
    for grid, expected in zip(picked, (manual[0], manual[2])):
        assert grid.shape == (2, 32, 4, 6)
        torch.testing.assert_close(grid, expected[:, 3:].reshape(2, 4, 6, 32).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="requested blocks"):
        model.get_intermediate_layers(images, n=[1, 9])


def test_chunked_layout_computes_the_same_function():
    flat = _tiny(num_register_tokens=1)
    chunked = _tiny(num_register_tokens=1, block_chunks=2)
    keys = set(chunked.state_dict())
    assert "blocks.1.2.attn.qkv.weight" in keys and "blocks.0.2.attn.qkv.weight" not in keys
    renamed = {}
    for key, value in flat.state_dict().items():
        if key.startswith("blocks."):
            index = int(key.split(".")[1])
            key = f"blocks.{index // 2}.{key.split('.', 1)[1]}"
        renamed[key] = value
    chunked.load_state_dict(renamed, strict=True)
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(
            chunked.forward_features(images)["x_prenorm"],
            flat.forward_features(images)["x_prenorm"],
        )
        for a, b in zip(
            chunked.get_intermediate_layers(images, n=3), flat.get_intermediate_layers(images, n=3)
        ):
            torch.testing.assert_close(a, b)


def test_list_input_matches_separate_calls():
    model = _tiny()
    globals_, locals_ = torch.randn(2, 3, 56, 56), torch.randn(3, 3, 28, 28)
    masks = torch.rand(2, 16) < 0.3
    with torch.no_grad():
        outs = model.forward_features([globals_, locals_], [masks, None])
        torch.testing.assert_close(
            outs[0]["x_prenorm"], model.forward_features(globals_, masks)["x_prenorm"]
        )
        torch.testing.assert_close(
            outs[1]["x_prenorm"], model.forward_features(locals_)["x_prenorm"]
        )


def test_forward_returns_head_of_cls_or_training_dict():
    model = _tiny()
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        assert model(images).shape == (2, 32)
        assert set(model(images, is_training=True)) >= {"x_norm_clstoken", "x_prenorm"}


def test_save_and_reload_strictly(tmp_path):
    model = _tiny(num_register_tokens=2)
    images = torch.randn(2, 3, 56, 56)
    path = tmp_path / "backbone.pth"
    torch.save(model.state_dict(), path)
    settings = dict(TINY, init_values=1.0, block_chunks=0, num_register_tokens=2)
    reloaded = load_backbone(path, arch="vit", **settings).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), model(images))


def test_training_mode_drop_path_keeps_shapes_and_gradients():
    model = _tiny(drop_path_rate=0.5, drop_path_uniform=True).train()
    images = torch.randn(4, 3, 56, 56)
    out = model.forward_features(images)
    out["x_norm_clstoken"].sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert all(block.sample_drop_ratio == 0.5 for block in model.blocks)
