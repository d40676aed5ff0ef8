"""One entry point for every embedding model the pipeline runs: :func:`load_embedder`.

An :class:`Embedder` is a network that maps normalised ``[B, 3, H, W]`` images to L2-normalised
``[B, dim]`` descriptors, plus how it wants its pixels, its output dimension and a ``model_id``
written next to every embedding. Models by name:

- ``sscd_resnet50`` / ``sscd_resnet18``: SSCD (:mod:`curation.models.sscd`). ``checkpoint``: a
  ``.torchvision.pt`` state dict, a ``.torchscript.pt`` file or an ``lvd train-descriptor``
  checkpoint (the file decides the architecture).
- ``descriptor``: an ``lvd train-descriptor`` checkpoint (required).
- ``torchscript``: any TorchScript file taking normalised images (required).
- a ``pretrain.models`` name (``dinov2_vits14``, ``vit_small``, ...): the DINOv2 retrieval embedder.

Without a checkpoint the weights are random but seeded, so every worker of a job builds the same
network: fine for benchmarks and "untrained" baselines, useless for curation.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from curation.models.descriptor import descriptor_from_checkpoint, is_descriptor_checkpoint
from curation.models.preprocess import Preprocessing
from curation.models.retrieval import build_retrieval_embedder, is_vit_arch
from curation.models.sscd import SSCDModel, load_sscd_state_dict

logger = logging.getLogger(__name__)

SSCD_MODELS = {"sscd_resnet50": "resnet50", "sscd_resnet18": "resnet18"}
FILE_MODELS = ("descriptor", "torchscript")
INIT_SEED = 0


class EmbedderError(ValueError):
    """The model name or checkpoint cannot make an embedder; the message says what would."""


@dataclass
class Embedder:
    model: nn.Module
    model_id: str
    dim: int
    preprocessing: Preprocessing
    scales: tuple[int, ...] = ()  # multi-scale sizes (square inputs); () = preprocessing.size only
    is_convnet: bool = True  # channels-last helps conv nets only


class _Normalized(nn.Module):
    """L2-normalise a wrapped model's output (TorchScript files may or may not do it)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.inner(x).float(), dim=-1)


def model_names() -> list[str]:
    return sorted(SSCD_MODELS) + list(FILE_MODELS) + ["<pretrain.models arch, e.g. dinov2_vits14>"]


def is_torchscript_file(path: str | os.PathLike[str]) -> bool:
    """TorchScript archives are zip files holding ``<name>/constants.pkl`` and ``<name>/code/``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return build()


def _load_file_model(path: Path) -> tuple[nn.Module, dict]:
    """A model from a checkpoint file of any supported kind, and what the file says about it."""
    if is_torchscript_file(path):
        return _Normalized(torch.jit.load(str(path), map_location="cpu")), {"kind": "torchscript"}
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if is_descriptor_checkpoint(payload):
        return descriptor_from_checkpoint(payload), {"kind": "descriptor", **payload["inference"]}
    if isinstance(payload, dict):
        state = payload.get("state_dict", payload)
        return load_sscd_state_dict(state), {"kind": "sscd_state_dict"}
    raise EmbedderError(f"{path}: neither TorchScript, a descriptor checkpoint nor a state dict")


def _probe_dim(model: nn.Module, prep: Preprocessing) -> int:
    side = max(prep.size, 2 * prep.multiple_of) // prep.multiple_of * prep.multiple_of
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, side, side)).shape[-1])


def load_embedder(
    model: str = "sscd_resnet50",
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    size: int | None = None,
    resize: str | None = None,
    scales: tuple[int, ...] = (),
    use_patch_tokens: bool = False,
    model_id: str | None = None,
) -> Embedder:
    """Build the embedder named ``model`` (see the module docstring), on the CPU, in eval mode.

    ``size`` / ``resize`` default to the model's own recipe: SSCD 320 x 320 square; a trained
    descriptor what its checkpoint recorded; DINOv2 short side 256 then a 224 centre crop.
    """
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"embedding model checkpoint {path} does not exist")
    meta: dict = {}
    multiple_of, is_convnet = 1, True
    if model in SSCD_MODELS or model in FILE_MODELS:
        if path is None:
            if model in FILE_MODELS:
                raise EmbedderError(f"model {model!r} needs a checkpoint file")
            logger.warning("%s without a checkpoint: random (seeded) weights", model)
            net: nn.Module = _seeded(lambda: SSCDModel(SSCD_MODELS[model]))
        else:
            net, meta = _load_file_model(path)
            if model == "descriptor" and meta["kind"] != "descriptor":
                raise EmbedderError(f"{path} is not an lvd train-descriptor checkpoint")
        default_size, default_resize = meta.get("size", 320), meta.get("resize", "square")
        multiple_of = int(meta.get("multiple_of", 1))
        is_convnet = not hasattr(net, "patch_size")
        scales = tuple(scales) or tuple(meta.get("scales", ()))
    elif is_vit_arch(model):
        if path is None:
            logger.warning("%s without a checkpoint: random (seeded) weights", model)
        net = _seeded(lambda: build_retrieval_embedder(model, path, use_patch_tokens))
        default_size, default_resize = 224, "center_crop"
        multiple_of, is_convnet = net.patch_size, False
    else:
        raise EmbedderError(f"unknown embedding model {model!r}; expected one of {model_names()}")
    if scales:  # decode once at the largest size; the smaller ones are made on the device
        size = max(scales)
    prep = Preprocessing(
        size=size or int(default_size), resize=resize or default_resize, multiple_of=multiple_of
    )
    if scales and prep.resize != "square":
        raise EmbedderError("multi-scale inference (scales) needs resize='square'")
    net = net.eval()
    dim = getattr(net, "dim", None) or _probe_dim(net, prep)
    if model_id is None:
        source = path.name if path is not None else "random-init"
        sizes = "+".join(str(s) for s in scales) if scales else str(prep.size)
        tokens = "+patch" if use_patch_tokens and not is_convnet else ""
        model_id = f"{model}{tokens}:{source}:{prep.resize}{sizes}"
    return Embedder(net, model_id, dim, prep, tuple(int(s) for s in scales), is_convnet)
