"""Names, shapes and sizes of the official torch.hub backbones (SPEC section 5), and the
loader's accepted checkpoint formats."""

import pytest
import torch

from pretrain.models import (
    CheckpointFormatError,
    UnknownArchitectureError,
    build_model,
    extract_backbone_state_dict,
    load_backbone,
)


def _spec_vits14_shapes(registers):
    """The ViT-S/14 key list of SPEC section 5, written out independently."""
    dim, hidden = 384, 1536
    shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1370, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, 14, 14),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    if registers:
        shapes["register_tokens"] = (1, 4, dim)
    for n in range(12):
        block = {
            "norm1.weight": (dim,),
            "norm1.bias": (dim,),
            "attn.qkv.weight": (3 * dim, dim),
            "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim),
            "attn.proj.bias": (dim,),
            "ls1.gamma": (dim,),
            "norm2.weight": (dim,),
            "norm2.bias": (dim,),
            "mlp.fc1.weight": (hidden, dim),
            "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (dim, hidden),
            "mlp.fc2.bias": (dim,),
            "ls2.gamma": (dim,),
        }
        shapes.update({f"blocks.{n}.{name}": shape for name, shape in block.items()})
    return shapes


def _meta(arch, **kwargs):
    with torch.device("meta"):
        return build_model(arch, **kwargs)


@pytest.mark.parametrize("arch,registers", [("dinov2_vits14", False), ("dinov2_vits14_reg", True)])
def test_vits14_keys_and_shapes_match_spec(arch, registers):
    state = _meta(arch).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _spec_vits14_shapes(registers)


def test_vits14_hub_settings_and_parameter_count():
    plain, reg = _meta("dinov2_vits14"), _meta("dinov2_vits14_reg")
    assert (plain.interpolate_offset, plain.interpolate_antialias) == (0.1, False)
    assert (reg.interpolate_offset, reg.interpolate_antialias) == (0.0, True)
    assert plain.patch_size == 14 and plain.num_register_tokens == 0
    assert reg.num_register_tokens == 4 and not plain.chunked_blocks
    assert plain.norm.eps == 1e-6 and plain.blocks[0].norm1.eps == 1e-6
    count = sum(p.numel() for p in plain.parameters())
    assert round(count / 1e6, 1) == 22.1


@pytest.mark.parametrize(
    "arch,millions", [("dinov2_vitb14", 86.6), ("dinov2_vitl14", 304.4), ("dinov2_vitg14", 1136)]
)
def test_bigger_models_parameter_counts_on_meta(arch, millions):
    model = _meta(arch)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(millions, abs=0.05 if millions < 1000 else 0.5)


def test_giant_uses_swiglu_with_official_widths():
    state = _meta("dinov2_vitg14").state_dict()
    assert tuple(state["blocks.39.mlp.w12.weight"].shape) == (8192, 1536)
    assert tuple(state["blocks.39.mlp.w3.weight"].shape) == (1536, 4096)
    assert "blocks.0.mlp.fc1.weight" not in state


def test_block_chunks_give_chunked_keys():
    state = _meta("dinov2_vits14", block_chunks=4).state_dict()
    assert tuple(state["blocks.1.3.attn.qkv.weight"].shape) == (1152, 384)
    assert tuple(state["blocks.3.11.ls2.gamma"].shape) == (384,)
    assert not any(k.startswith("blocks.0.3.") for k in state)
    assert len(state) == len(_spec_vits14_shapes(False))


def test_official_constructor_defaults():
    model = _meta("vit_small")  # official DinoVisionTransformer defaults: /16, 224, 1 chunk
    assert model.patch_size == 16 and model.pos_embed.shape == (1, 197, 384)
    assert model.chunked_blocks and "blocks.0.0.norm1.weight" in model.state_dict()
    assert "blocks.0.0.ls1.gamma" not in model.state_dict()  # init_values=None: no LayerScale


def test_unknown_architecture_and_ffn_are_rejected():
    with pytest.raises(UnknownArchitectureError, match="dinov2_vits14"):
        build_model("vit_nano")
    with pytest.raises(ValueError, match="ffn_layer"):
        _meta("vit", embed_dim=32, depth=1, num_heads=2, ffn_layer="moe")


TINY = dict(img_size=28, patch_size=14, embed_dim=16, depth=2, num_heads=2, block_chunks=0)


def _tiny_state():
    torch.manual_seed(0)
    return build_model("vit", **TINY).state_dict()


def test_loader_accepts_nested_training_checkpoints(tmp_path):
    state = _tiny_state()
    nested = {f"backbone.{k}": v for k, v in state.items()}
    nested["dino_head.mlp.0.weight"] = torch.zeros(3, 3)
    for container in ("teacher", "model"):
        path = tmp_path / f"{container}.pth"
        torch.save({container: nested, "iteration": 7}, path)
        model = load_backbone(path, arch="vit", **TINY)
        torch.testing.assert_close(model.pos_embed, state["pos_embed"])


def test_loader_is_strict(tmp_path):
    state = _tiny_state()
    del state["mask_token"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointFormatError, match="does not fit vit: .*mask_token"):
        load_backbone(path, arch="vit", **TINY)
    with pytest.raises(CheckpointFormatError):
        extract_backbone_state_dict({"teacher": {}})


def test_loader_takes_the_grid_and_patch_size_from_the_checkpoint(tmp_path):
    """A teacher trained at 112 px (8 x 8 grid of 14 px patches) loads into dinov2_vits14, whose
    own grid is 37 x 37, and embeds exactly as the model that was saved; other widths fail."""
    torch.manual_seed(0)
    trained = build_model("vit_small", img_size=112, patch_size=14, block_chunks=0, init_values=1.0)
    path = tmp_path / "teacher.pth"
    torch.save(trained.state_dict(), path)
    loaded = load_backbone(path, arch="dinov2_vits14")
    assert loaded.pos_embed.shape == trained.pos_embed.shape
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.forward_features(x)["x_norm_clstoken"],
            trained.eval().forward_features(x)["x_norm_clstoken"],
        )
    with pytest.raises(CheckpointFormatError, match="does not fit vit: .*size mismatch"):
        load_backbone(path, arch="vit", **TINY)


@pytest.mark.parametrize("chunks", [0, 2])
def test_loader_takes_block_chunking_from_the_keys(tmp_path, chunks):
    """Our pretrainer's export (flat ``blocks.N.``, LayerScale on) and chunked state dicts both
    load into an architecture whose own defaults differ (chunked, no LayerScale)."""
    torch.manual_seed(0)
    saved = build_model(
        "vit_tiny", img_size=32, patch_size=8, block_chunks=chunks, init_values=1e-5
    )
    path = tmp_path / "tiny.pth"
    torch.save(saved.state_dict(), path)
    loaded = load_backbone(path, arch="vit_tiny")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.forward_features(x)["x_norm_clstoken"],
            saved.eval().forward_features(x)["x_norm_clstoken"],
        )


def test_the_generic_vit_takes_its_size_from_the_checkpoint(tmp_path):
    """A small custom ViT (what the demo pretrains) loads as arch "vit" with nothing else given:
    width and depth from the shapes, 64-wide heads as in every DINOv2 model."""
    torch.manual_seed(0)
    saved = build_model("vit", img_size=32, patch_size=8, embed_dim=128, depth=3, num_heads=2)
    path = tmp_path / "small.pth"
    torch.save(saved.state_dict(), path)
    loaded = load_backbone(path, arch="vit")
    assert (loaded.embed_dim, loaded.n_blocks, loaded.num_heads) == (128, 3, 2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.forward_features(x)["x_norm_clstoken"],
            saved.eval().forward_features(x)["x_norm_clstoken"],
        )
