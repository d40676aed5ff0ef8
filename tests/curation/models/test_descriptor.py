"""Descriptor checkpoints: save -> load round trip, warm starts, and what the embed stage reads."""

import pytest
import torch

from curation.models.descriptor import (
    DescriptorCheckpointError,
    ViTDescriptor,
    build_descriptor,
    load_descriptor_checkpoint,
    save_descriptor_checkpoint,
    warm_start,
)
from curation.models.embedder import EmbedderError, load_embedder

VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


@pytest.mark.parametrize(
    ("arch", "kwargs", "side"), [("resnet18", {"width": 8}, 32), ("vit", VIT, 32)]
)
def test_checkpoint_round_trip(tmp_path, arch, kwargs, side):
    torch.manual_seed(0)
    model = build_descriptor(arch, dim=16, **kwargs).eval()
    path = save_descriptor_checkpoint(
        tmp_path / "d.pt",
        model,
        arch=arch,
        dim=16,
        arch_kwargs=kwargs,
        inference={"size": side, "resize": "square", "scales": [side, 2 * side], "multiple_of": 8},
        train={"steps": 3},
    )
    loaded, meta = load_descriptor_checkpoint(path)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert meta["train"]["steps"] == 3
    embedder = load_embedder("descriptor", path)
    assert embedder.dim == 16
    assert embedder.scales == (side, 2 * side)  # recorded multi-scale sizes are the default
    assert embedder.preprocessing.size == 2 * side  # decoded once at the largest


def test_descriptor_model_refuses_other_files(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(build_descriptor("resnet18", dim=8, width=8).state_dict(), path)
    with pytest.raises(DescriptorCheckpointError):
        load_descriptor_checkpoint(path)
    with pytest.raises(EmbedderError, match="train-descriptor"):
        load_embedder("descriptor", path)


def test_vit_warm_start_from_a_pretrainer_checkpoint(tmp_path):
    torch.manual_seed(0)
    teacher = build_descriptor("vit", dim=16, **VIT).backbone
    path = tmp_path / "pretrain.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in teacher.state_dict().items()}}, path)
    model = build_descriptor("vit", dim=16, **VIT)
    assert isinstance(model, ViTDescriptor)
    warm_start(model, "vit", path, **VIT)
    for key, value in teacher.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)


def test_resnet_warm_start_skips_the_classifier_and_checks_the_trunk(tmp_path):
    source = build_descriptor("resnet18", dim=10, width=8)  # fc plays an ImageNet classifier
    path = tmp_path / "resnet.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in source.state_dict().items()}, path)
    model = build_descriptor("resnet18", dim=16, width=8)
    warm_start(model, "resnet18", path)
    assert torch.equal(model.backbone.conv1.weight, source.backbone.conv1.weight)
    assert model.backbone.fc.weight.shape == (16, 64)
    wrong = build_descriptor("resnet18", dim=16, width=16)
    with pytest.raises((DescriptorCheckpointError, RuntimeError)):
        warm_start(wrong, "resnet18", path)


def test_recorded_flip_and_trim_make_mirror_images_one_descriptor(tmp_path):
    torch.manual_seed(0)
    model = build_descriptor("resnet18", dim=16, width=8).eval()
    inference = {"size": 32, "resize": "square", "scales": [], "multiple_of": 1}
    path = save_descriptor_checkpoint(
        tmp_path / "d.pt",
        model,
        arch="resnet18",
        dim=16,
        arch_kwargs={"width": 8},
        inference={**inference, "flip": True, "trim_borders": True},
    )
    embedder = load_embedder("descriptor", path)
    assert embedder.preprocessing.trim_borders
    assert embedder.model_id.endswith("+flip+trim")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        both = embedder.model(torch.cat([x, x.flip(-1)]))
        assert torch.allclose(both[:3], both[3:], atol=1e-5)
        assert torch.allclose(both.norm(dim=-1), torch.ones(6), atol=1e-5)
        plain = load_embedder("descriptor", path, flip=False, trim_borders=False)
        assert not plain.preprocessing.trim_borders and plain.model_id != embedder.model_id
        apart = plain.model(torch.cat([x, x.flip(-1)]))
        assert not torch.allclose(apart[:3], apart[3:], atol=1e-3)
