"""SSCD model: torchvision key layout (strict loads), the forward pass against a functional
reference, GeM, L2 output, TorchScript round trip."""

import pytest
import torch
import torch.nn.functional as F

from curation.models.embedder import is_torchscript_file, load_embedder
from curation.models.sscd import (
    GeM,
    SSCDModel,
    SSCDStateDictError,
    infer_resnet_config,
    load_sscd_state_dict,
    sscd_resnet50,
    sscd_state_dict,
)


def torchvision_resnet50_sscd_state_dict(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Built from torchvision's published ResNet-50 layout, not from our module: conv1/bn1, four
    layers of (3, 4, 6, 3) bottlenecks (conv1-3, bn1-3, downsample.0/.1 on each first block),
    then SSCD's head: GeM has no parameters, ``fc`` is the 2048 -> 512 projection."""
    state: dict[str, torch.Tensor] = {}

    def conv(name, out_c, in_c, k):
        state[f"{name}.weight"] = torch.randn(out_c, in_c, k, k, generator=generator) * 0.05

    def bn(name, c):
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=generator)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=generator)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=generator)
        state[f"{name}.running_var"] = 1 + 0.1 * torch.rand(c, generator=generator)
        state[f"{name}.num_batches_tracked"] = torch.tensor(100)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            prefix = f"layer{layer}.{b}"
            conv(f"{prefix}.conv1", planes, inplanes, 1)
            bn(f"{prefix}.bn1", planes)
            conv(f"{prefix}.conv2", planes, planes, 3)
            bn(f"{prefix}.bn2", planes)
            conv(f"{prefix}.conv3", planes * 4, planes, 1)
            bn(f"{prefix}.bn3", planes * 4)
            if b == 0:
                conv(f"{prefix}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{prefix}.downsample.1", planes * 4)
            inplanes = planes * 4
    state["fc.weight"] = torch.randn(512, 2048, generator=generator) * 0.02
    state["fc.bias"] = torch.zeros(512)
    return {f"backbone.{k}": v for k, v in state.items()}


@pytest.fixture(scope="module")
def torchvision_state():
    return torchvision_resnet50_sscd_state_dict(torch.Generator().manual_seed(0))


def test_torchvision_layout_state_dict_loads_strictly(torchvision_state):
    assert len(torchvision_state) == 320  # torchvision's resnet50 state dict has 320 entries
    model = load_sscd_state_dict(torchvision_state)
    assert isinstance(model, SSCDModel)
    assert model.backbone.fc.weight.shape == (512, 2048)
    assert set(model.state_dict()) == set(torchvision_state)
    for key, value in torchvision_state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_unprefixed_and_classy_projection_names_load(torchvision_state):
    bare = {k.removeprefix("backbone."): v for k, v in torchvision_state.items()}
    classy = {
        ("embeddings.1." + k[len("fc.") :] if k.startswith("fc.") else "backbone." + k): v
        for k, v in bare.items()
    }
    x = torch.randn(1, 3, 64, 64)
    reference = load_sscd_state_dict(torchvision_state).eval()(x)
    for variant in (bare, classy):
        assert torch.allclose(load_sscd_state_dict(variant).eval()(x), reference)


def test_classy_vision_trunk_names_are_refused_with_advice():
    with pytest.raises(SSCDStateDictError, match="torchvision"):
        sscd_state_dict({"backbone.trunk.stem.conv.weight": torch.zeros(1)})


def test_layout_is_inferred_for_small_variants():
    model = SSCDModel("resnet18", dim=64, width=16)
    config = infer_resnet_config(sscd_state_dict(model.state_dict()))
    assert config == {"arch": "resnet18", "width": 16, "dim": 64}


def test_gem_matches_its_formula_and_p1_is_average_pooling():
    x = torch.rand(2, 5, 4, 3)
    expected = x.clamp(min=1e-6).pow(3).mean(dim=(-2, -1)).pow(1 / 3)
    assert torch.allclose(GeM(3.0)(x), expected)
    assert torch.allclose(GeM(1.0)(x), x.mean(dim=(-2, -1)), atol=1e-6)
    assert GeM().state_dict() == {}  # p is fixed: no key, as in the released files


def test_descriptors_are_unit_length_512d():
    model = sscd_resnet50().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 128))
    assert out.shape == (2, 512)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_torchscript_file_from_our_model_gives_the_same_embeddings(tmp_path):
    torch.manual_seed(1)
    model = SSCDModel("resnet18", dim=128, width=16).eval()
    x = torch.randn(3, 3, 64, 64)
    path = tmp_path / "model.torchscript.pt"
    torch.jit.trace(model, x).save(str(path))
    state_path = tmp_path / "model.torchvision.pt"
    torch.save(model.state_dict(), state_path)
    assert is_torchscript_file(path) and not is_torchscript_file(state_path)
    with torch.no_grad():
        expected = model(x)
        from_script = load_embedder("sscd_resnet18", path, size=64)
        from_state = load_embedder("sscd_resnet18", state_path, size=64)
        assert from_script.dim == from_state.dim == 128
        assert torch.allclose(from_script.model(x), expected, atol=1e-5)
        assert torch.allclose(from_state.model(x), expected, atol=1e-6)


# ---------------------------------------------------------------- independent functional reference
def reference_sscd_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """SSCD's descriptor written out with ``torch.nn.functional`` over a state dict, following
    torchvision's ResNet (v1.5: a downsampling block strides its 3x3 convolution ``conv2`` and its
    1x1 ``downsample.0``, never the 1x1 ``conv1``), eval-mode BatchNorm (eps 1e-5), GeM with p = 3
    (clamp at 1e-6, cube, spatial mean, cube root), ``fc`` and L2 normalisation."""

    def conv(name, t, stride=1):
        weight = state[f"{name}.weight"]
        return F.conv2d(t, weight, stride=stride, padding=weight.shape[-1] // 2)

    def bn(name, t):
        return F.batch_norm(
            t,
            state[f"{name}.running_mean"],
            state[f"{name}.running_var"],
            state[f"{name}.weight"],
            state[f"{name}.bias"],
            training=False,
            eps=1e-5,
        )

    t = F.relu(bn("backbone.bn1", conv("backbone.conv1", x, stride=2)))
    t = F.max_pool2d(t, kernel_size=3, stride=2, padding=1)
    for layer in range(1, 5):
        index = 0
        while f"backbone.layer{layer}.{index}.conv1.weight" in state:
            b = f"backbone.layer{layer}.{index}"
            stride = 2 if layer > 1 and index == 0 else 1
            if f"{b}.conv3.weight" in state:  # bottleneck
                out = F.relu(bn(f"{b}.bn1", conv(f"{b}.conv1", t)))
                out = F.relu(bn(f"{b}.bn2", conv(f"{b}.conv2", out, stride)))
                out = bn(f"{b}.bn3", conv(f"{b}.conv3", out))
            else:  # basic block: the first 3x3 strides
                out = F.relu(bn(f"{b}.bn1", conv(f"{b}.conv1", t, stride)))
                out = bn(f"{b}.bn2", conv(f"{b}.conv2", out))
            if f"{b}.downsample.0.weight" in state:
                t = bn(f"{b}.downsample.1", conv(f"{b}.downsample.0", t, stride))
            t = F.relu(out + t)
            index += 1
    pooled = t.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)
    projected = F.linear(pooled, state["backbone.fc.weight"], state["backbone.fc.bias"])
    return projected / projected.pow(2).sum(dim=1, keepdim=True).sqrt()


def randomised(state: dict[str, torch.Tensor], generator: torch.Generator) -> dict:
    """Every float tensor redrawn in float64, with BatchNorm statistics far from (0, 1) so that a
    BatchNorm skipped, misplaced or run in training mode changes the output."""
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
            continue
        shape = value.shape
        if key.endswith("running_mean"):
            new = 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)
        elif key.endswith("running_var"):
            new = 0.25 + 2 * torch.rand(shape, generator=generator, dtype=torch.float64)
        elif key.endswith(".bias"):
            new = 0.2 * torch.randn(shape, generator=generator, dtype=torch.float64)
        elif value.dim() == 1:  # BatchNorm scale
            new = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
        else:  # fan-in scaled, so activations neither vanish nor explode through 50 layers
            fan_in = value[0].numel()
            new = torch.randn(shape, generator=generator, dtype=torch.float64) / fan_in**0.5
        out[key] = new
    return out


@pytest.mark.parametrize(
    ("arch", "width", "dim"),
    [("resnet50", 64, 512), ("resnet18", 16, 32)],
)
def test_forward_matches_functional_torchvision_v1_5_reference_in_float64(
    arch, width, dim, request
):
    generator = torch.Generator().manual_seed(3)
    if arch == "resnet50":  # the released layout, keys from torchvision's list (not our module)
        template = request.getfixturevalue("torchvision_state")
    else:
        template = SSCDModel(arch, dim=dim, width=width).state_dict()
    state = randomised(template, generator)
    model = load_sscd_state_dict(state).double().eval()
    assert model.arch == arch
    model.load_state_dict(state)  # again, now that the model holds float64: no float32 rounding
    # 64 x 80: the grid goes 32x40 -> 16x20 -> 8x10 -> 4x5 -> 2x3 (an odd side included), so a
    # stride moved between convolutions or a padding changed shows.
    x = torch.randn(2, 3, 64, 80, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        expected = reference_sscd_forward(state, x)
    assert out.dtype == torch.float64
    assert out.shape == (2, dim)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)
    # guards against a degenerate reference: the two images differ, and (checked on the small
    # variant, to keep the test fast) BatchNorm's running statistics matter
    assert (expected[0] - expected[1]).abs().max() > 1e-3
    if arch == "resnet18":
        with torch.no_grad():
            assert (model.train()(x) - expected).abs().max() > 1e-3
