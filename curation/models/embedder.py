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
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from curation.config import ConfigError
from curation.models.descriptor import descriptor_from_checkpoint, is_descriptor_checkpoint
from curation.models.preprocess import Preprocessing
from curation.models.retrieval import build_retrieval_embedder, is_vit_arch
from curation.models.sscd import SSCDModel, load_sscd_state_dict

logger = logging.getLogger(__name__)

SSCD_MODELS = {"sscd_resnet50": "resnet50", "sscd_resnet18": "resnet18"}
FILE_MODELS = ("descriptor", "torchscript")
INIT_SEED = 0


T = TypeVar("T")


class EmbedderError(ConfigError):
    """The model name or checkpoint cannot make an embedder; the message says what would.

    A :class:`~curation.config.ConfigError` (so a ``ValueError``): the CLI prints it as one line.
    """


class CheckpointError(EmbedderError):
    """A checkpoint file that cannot be read, or whose contents fit no model we build; the message
    (one line) names the file and the problem."""


# What reading a damaged file or fitting a foreign payload raises: torch.load (UnpicklingError from
# the weights-only unpickler, RuntimeError from the zip reader, EOFError on an empty file),
# load_state_dict (RuntimeError), and our own format checks (ValueError subclasses).
_CHECKPOINT_FAILURES = (
    pickle.UnpicklingError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    zipfile.BadZipFile,
)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """A short, one-line version of ``exc``'s message (torch's run to several paragraphs)."""
    text = str(exc)
    reason = re.search(r"Unsupported .*", text)  # the weights-only unpickler's actual reason
    if isinstance(exc, pickle.UnpicklingError) and reason:
        text = reason.group(0)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # "Error(s) in loading state_dict for X:" says what failed on the next line
    text = " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    text = re.split(r"\.\s+(?=[A-Z(])", text)[0]  # the first sentence
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _checkpoint_step(path: Path, what: str, step: Callable[[], T]) -> T:
    """Run ``step`` (reading or fitting ``path``); turn its failure into a :class:`CheckpointError`."""
    try:
        return step()
    except _CHECKPOINT_FAILURES as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"checkpoint {path}: {what} ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def read_checkpoint(path: Path) -> Any:
    """``torch.load`` (weights only) with one-line errors for empty, truncated or foreign files."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: the file is empty (0 bytes)")
    return _checkpoint_step(
        path,
        "not a readable torch checkpoint (corrupt, truncated, or holding objects other than "
        "tensors and plain containers)",
        lambda: torch.load(path, map_location="cpu", weights_only=True),
    )


@dataclass
class Embedder:
    model: nn.Module
    model_id: str
    dim: int
    preprocessing: Preprocessing
    scales: tuple[int, ...] = ()  # multi-scale sizes (square inputs); () = preprocessing.size only
    is_convnet: bool = True  # channels-last helps conv nets only
    # The score calibration a descriptor checkpoint stores (write_calibration), as a dict; None
    # when the file has none. Not used to embed: the embed stage records it for dedup.
    calibration: dict | None = None


class _Normalized(nn.Module):
    """L2-normalise a wrapped model's output (TorchScript files may or may not do it)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.inner(x).float(), dim=-1)


class FlipAveraged(nn.Module):
    """``normalize(f(x) + f(mirror(x)))``: the same descriptor for an image and its mirror image
    (a horizontal flip is a copy edit), at twice the forward cost. The inner model's outputs are
    L2-normalised, so each view counts equally."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = self.inner(torch.cat([x, x.flip(-1)])).float()
        plain, mirrored = both.chunk(2)
        return F.normalize(plain + mirrored, dim=-1)


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
    if _checkpoint_step(path, "unreadable zip archive", lambda: is_torchscript_file(path)):
        script = _checkpoint_step(
            path,
            "a damaged TorchScript archive",
            lambda: torch.jit.load(str(path), map_location="cpu"),
        )
        return _Normalized(script), {"kind": "torchscript"}
    payload = read_checkpoint(path)
    if is_descriptor_checkpoint(payload):
        model = _checkpoint_step(
            path,
            "an lvd descriptor checkpoint that does not rebuild",
            lambda: descriptor_from_checkpoint(payload),
        )
        return model, {"kind": "descriptor", **payload.get("inference", {})}
    if isinstance(payload, dict):
        state = payload.get("state_dict", payload)
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path}: 'state_dict' holds a {type(state).__name__}")
        model = _checkpoint_step(
            path,
            "not an SSCD (torchvision-layout ResNet) state dict",
            lambda: load_sscd_state_dict(state),
        )
        return model, {"kind": "sscd_state_dict"}
    raise CheckpointError(
        f"checkpoint {path}: holds a {type(payload).__name__}, not TorchScript, an lvd descriptor "
        "checkpoint or a state dict"
    )


def checkpoint_calibration(path: str | os.PathLike[str]) -> dict | None:
    """The score calibration stored in an ``lvd train-descriptor`` checkpoint's inference
    settings (:func:`curation.models.descriptor.write_calibration`); None for any other file."""
    path = Path(path)
    if _checkpoint_step(path, "unreadable zip archive", lambda: is_torchscript_file(path)):
        return None
    payload = read_checkpoint(path)
    if not is_descriptor_checkpoint(payload):
        return None
    calibration = payload.get("inference", {}).get("calibration")
    return dict(calibration) if calibration else None


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
    flip: bool | None = None,
    trim_borders: bool | None = None,
) -> Embedder:
    """Build the embedder named ``model`` (see the module docstring), on the CPU, in eval mode.

    ``size`` / ``resize`` default to the model's own recipe: SSCD 320 x 320 square; a trained
    descriptor what its checkpoint recorded; DINOv2 short side 256 then a 224 centre crop.
    ``flip`` (average with the mirror image, :class:`FlipAveraged`) and ``trim_borders`` (crop
    uniform borders first, :mod:`curation.models.borders`) default to what a descriptor
    checkpoint recorded, else off.
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

        def build() -> nn.Module:
            return _seeded(lambda: build_retrieval_embedder(model, path, use_patch_tokens))

        if path is None:
            net = build()
        else:
            net = _checkpoint_step(path, f"not a {model} backbone checkpoint", build)
        default_size, default_resize = 224, "center_crop"
        multiple_of, is_convnet = net.patch_size, False
    else:
        raise EmbedderError(f"unknown embedding model {model!r}; expected one of {model_names()}")
    if scales:  # decode once at the largest size; the smaller ones are made on the device
        size = max(scales)
    flip = bool(meta.get("flip", False)) if flip is None else flip
    trim_borders = bool(meta.get("trim_borders", False)) if trim_borders is None else trim_borders
    prep = Preprocessing(
        size=size or int(default_size),
        resize=resize or default_resize,
        multiple_of=multiple_of,
        trim_borders=trim_borders,
    )
    if scales and prep.resize != "square":
        raise EmbedderError("multi-scale inference (scales) needs resize='square'")
    net = net.eval()
    dim = getattr(net, "dim", None) or _probe_dim(net, prep)
    if flip:
        net = FlipAveraged(net).eval()
    if model_id is None:
        source = path.name if path is not None else "random-init"
        sizes = "+".join(str(s) for s in scales) if scales else str(prep.size)
        tokens = "+patch" if use_patch_tokens and not is_convnet else ""
        extras = ("+flip" if flip else "") + ("+trim" if trim_borders else "")
        model_id = f"{model}{tokens}:{source}:{prep.resize}{sizes}{extras}"
    calibration = meta.get("calibration") or None
    return Embedder(
        net, model_id, dim, prep, tuple(int(s) for s in scales), is_convnet, calibration
    )
