"""The DINOv2 retrieval embedder: CLS (+ mean patch token), L2-normalised, strict checkpoints."""

import torch

from curation.models.embedder import load_embedder
from curation.models.retrieval import build_retrieval_embedder

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def test_cls_and_patch_token_embeddings_are_unit_length():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    cls_only = build_retrieval_embedder("vit", **TINY).eval()
    both = build_retrieval_embedder("vit", use_patch_tokens=True, **TINY).eval()
    both.load_state_dict(cls_only.state_dict())
    with torch.no_grad():
        a, b = cls_only(x), both(x)
        features = cls_only.backbone.forward_features(x)
    assert a.shape == (2, 32) and b.shape == (2, 64) and both.dim == 64
    assert torch.allclose(a.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(b.norm(dim=1), torch.ones(2), atol=1e-5)
    expected = torch.cat(
        [features["x_norm_clstoken"], features["x_norm_patchtokens"].mean(dim=1)], dim=1
    )
    assert torch.allclose(b, torch.nn.functional.normalize(expected, dim=1), atol=1e-5)


def test_our_backbone_checkpoint_loads_and_embeds_identically(tmp_path):
    torch.manual_seed(0)
    source = build_retrieval_embedder("vit", **TINY).eval()
    path = tmp_path / "teacher.pth"
    torch.save(
        {"teacher": {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}}, path
    )
    loaded = build_retrieval_embedder("vit", path, **TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x))


def test_load_embedder_uses_the_dinov2_recipe():
    embedder = load_embedder("dinov2_vits14")  # random seeded weights: shapes only
    assert embedder.dim == 384
    assert embedder.preprocessing.resize == "center_crop"
    assert embedder.preprocessing.size == 224 and embedder.preprocessing.multiple_of == 14
    assert not embedder.is_convnet
