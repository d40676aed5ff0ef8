"""The SSCD copy-detection descriptor (Pizzi et al., "A Self-Supervised Descriptor for Image Copy
Detection", CVPR 2022; facebookresearch/sscd-copy-detection).

A ResNet trunk, GeM pooling (p = 3) in place of average pooling, a linear projection in place of the
classifier, then L2 normalisation. The trunk is written here (no torchvision) with torchvision's
parameter names, so a ``.torchvision.pt`` SSCD state dict (``backbone.conv1.weight`` ...
``backbone.fc.weight`` [512, 2048]) loads with ``strict=True``. ``resnet18`` and a ``width`` knob
give small variants for CPU machines and tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in float64 if it already is (so fp64 checks keep their precision)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al., 2018): ``mean(clamp(x, eps) ** p) ** (1 / p)``.

    ``p`` is a fixed number, not a parameter, as in SSCD's released models (so no state-dict key).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = float(p)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 for the cube and the root: in bf16 the mean of cubes loses most of its bits.
        pooled = at_least_fp32(x).clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_LAYOUTS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNetTrunk(nn.Module):
    """A ResNet with torchvision's module names; ``avgpool`` is GeM and ``fc`` the projection."""

    def __init__(self, arch: str = "resnet50", dim: int = 512, width: int = 64, gem_p: float = 3.0):
        super().__init__()
        if arch not in RESNET_LAYOUTS:
            raise ValueError(f"unknown ResNet {arch!r}; expected one of {sorted(RESNET_LAYOUTS)}")
        block, depths = RESNET_LAYOUTS[arch]
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, depths[0], 1)
        self.layer2 = self._make_layer(block, width * 2, depths[1], 2)
        self.layer3 = self._make_layer(block, width * 4, depths[2], 2)
        self.layer4 = self._make_layer(block, width * 8, depths[3], 2)
        self.avgpool = GeM(gem_p)
        self.num_features = width * 8 * block.expansion
        self.fc = nn.Linear(self.num_features, dim)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled trunk features, before the projection."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_features(x)
        return self.fc(pooled.to(self.fc.weight.dtype))


class SSCDModel(nn.Module):
    """Trunk + GeM + projection + L2 normalisation: images in, unit-norm descriptors out."""

    def __init__(self, arch: str = "resnet50", dim: int = 512, width: int = 64, gem_p: float = 3.0):
        super().__init__()
        self.arch = arch
        self.dim = dim
        self.backbone = ResNetTrunk(arch, dim=dim, width=width, gem_p=gem_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(at_least_fp32(self.backbone(x)), dim=-1)


def sscd_resnet50(dim: int = 512, **kwargs) -> SSCDModel:
    """The released SSCD architecture (``sscd_disc_mixup`` and friends)."""
    return SSCDModel("resnet50", dim=dim, **kwargs)


def sscd_resnet18(dim: int = 512, **kwargs) -> SSCDModel:
    """A small variant for CPU machines (no released weights; train one with the descriptor trainer)."""
    return SSCDModel("resnet18", dim=dim, **kwargs)


class SSCDStateDictError(ValueError):
    """A state dict that fits neither the torchvision nor the Classy Vision SSCD layout."""


def sscd_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalise an SSCD state dict to :class:`SSCDModel`'s keys (``backbone.<torchvision name>``).

    Accepts the ``.torchvision.pt`` layout with or without the ``backbone.`` prefix, and a state
    dict whose projection is named ``embeddings.1.*`` (as in ``.classy.pt``) when its trunk already
    uses torchvision names. Classy Vision's own trunk names (``.classy.pt`` proper) are not mapped:
    use the ``.torchvision.pt`` or ``.torchscript.pt`` release of the same model instead.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise SSCDStateDictError(f"not a state dict: key {key!r} is not a parameter name")
        if key.startswith("module."):  # saved from DistributedDataParallel
            key = key[len("module.") :]
        if key.startswith("embeddings.1."):
            key = "backbone.fc." + key[len("embeddings.1.") :]
        elif not key.startswith("backbone."):
            key = "backbone." + key
        out[key] = value
    if "backbone.conv1.weight" not in out:
        raise SSCDStateDictError(
            "no 'conv1.weight' in the state dict: not a torchvision-layout ResNet; for a Classy "
            "Vision checkpoint use the .torchvision.pt or .torchscript.pt release instead"
        )
    return out


def infer_resnet_config(state: Mapping[str, torch.Tensor]) -> dict:
    """Architecture, width and projection dim read off a (normalised) SSCD state dict."""
    layer_depths = []
    for layer in range(1, 5):
        blocks = {k.split(".")[2] for k in state if k.startswith(f"backbone.layer{layer}.")}
        layer_depths.append(len(blocks))
    bottleneck = "backbone.layer1.0.conv3.weight" in state
    arch = next(
        (
            name
            for name, (block, depths) in RESNET_LAYOUTS.items()
            if tuple(layer_depths) == depths and (block is Bottleneck) == bottleneck
        ),
        None,
    )
    if arch is None:
        raise SSCDStateDictError(f"unknown ResNet layout: blocks per layer {layer_depths}")
    if not torch.is_tensor(state.get("backbone.fc.weight")):
        raise SSCDStateDictError("no projection (backbone.fc.weight or embeddings.1.weight)")
    if not torch.is_tensor(state.get("backbone.conv1.weight")):
        raise SSCDStateDictError("backbone.conv1.weight is not a tensor")
    return {
        "arch": arch,
        "width": int(state["backbone.conv1.weight"].shape[0]),
        "dim": int(state["backbone.fc.weight"].shape[0]),
    }


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`SSCDStateDictError` (one line) if ``state`` does not fit ``model`` exactly:
    ``load_state_dict``'s own error spans many lines and lists every key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    not_tensors = sorted(k for k in set(expected) & set(state) if not torch.is_tensor(state[k]))
    wrong_shape = sorted(
        k
        for k in set(expected) & set(state)
        if torch.is_tensor(state[k]) and state[k].shape != expected[k].shape
    )
    problems = [
        f"{label} {len(keys)} key(s), e.g. {keys[:3]}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("non-tensor value for", not_tensors),
            ("wrong shape for", wrong_shape),
        )
        if keys
    ]
    if problems:
        raise SSCDStateDictError(
            f"the state dict does not fit an SSCD {model.arch}: " + "; ".join(problems)
        )


def load_sscd_state_dict(state: Mapping[str, torch.Tensor]) -> SSCDModel:
    """Build the SSCD model that fits ``state`` and load it strictly."""
    state = sscd_state_dict(state)
    model = SSCDModel(**infer_resnet_config(state))
    _check_fits(model, state)
    model.load_state_dict(state, strict=True)
    return model
