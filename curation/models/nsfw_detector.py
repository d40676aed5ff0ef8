"""NSFW classifiers as embedders: a model maps an image batch to one score per class, so the batch
inference of :mod:`curation.models.inference` (decoding overlapped with forward passes) runs it
like any descriptor, and the NSFW stage turns the scores into decisions.

The default detector is NudeNet's ``320n.onnx`` (a YOLOv8-n body-part detector, 18 classes), which
the ``nudenet`` wheel carries (10.6 MB wheel; 12 MB model). It is run with ``onnxruntime`` (MIT;
CUDA provider when the device is a GPU and the provider exists, else CPU); nudenet's own Python code
is never imported, only its model file is read. Licence: the wheel's metadata says MIT but the
LICENSE file it ships is the GNU AGPL-3.0 (as is the upstream repository and Ultralytics' YOLOv8
the model is trained with), so it is an optional extra (``pip install 'lvd[safety]'``), never a core
dependency: a team that cannot accept the AGPL points ``nsfw.path`` at its own model. No other
registry package we found ships NSFW weights (the others download them at run time).

NudeNet letterboxes (pads to a square) before resizing to 320; we resize to a 320 square without
padding (the batch-friendly ``square`` preprocessing), which changes the aspect ratio of non-square
images: the measured false-positive rate (``benchmarks/bench_safety.py``) is taken this way. A
detector's per-image score for a class is its highest confidence for that class over all anchors.

A user's own model (``onnx`` or ``torchscript``): input ``float32 [B, 3, S, S]``, RGB, resized to
an S x S square, ``(pixel / 255 - mean) / std``; output ``[B, C]`` scores in ``[0, 1]`` (class
probabilities or independent sigmoids), one column per name in ``classes``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from curation.config import ConfigError
from curation.models.embedder import Embedder
from curation.models.preprocess import Preprocessing

NUDENET_CLASSES = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
# The classes that make an image NSFW (as the LAION / DataComp filters count nudity): exposed
# sexual body parts. Covered parts, faces, feet, bellies and armpits are not grounds to drop.
NUDENET_GROUPS = {
    "sexual_exposed": (
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "ANUS_EXPOSED",
        "BUTTOCKS_EXPOSED",
    )
}
NUDENET_SIZE = 320
NUDENET_PACKAGE = "nudenet"
NUDENET_FILE = "320n.onnx"


class NsfwModelError(ConfigError):
    """The NSFW model cannot be loaded; the message says what to install or fix."""


@dataclass(frozen=True)
class NsfwModel:
    """An embedder whose output columns are class scores, with the names and groups of those."""

    embedder: Embedder
    classes: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]


class OnnxModule(nn.Module):
    """An ONNX model run by onnxruntime behind a torch ``forward`` (tensors in and out)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.session = None
        self.device = torch.device("cpu")

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - follows nn.Module
        # Learn the target device from a probe tensor: the session picks its provider from it.
        self.device = fn(torch.empty(0)).device
        self.session = None
        return super()._apply(fn, recurse)

    def _open(self):
        try:
            import onnxruntime
        except ImportError as exc:
            raise NsfwModelError("ONNX models need onnxruntime: pip install 'lvd[safety]'") from exc
        providers = ["CPUExecutionProvider"]
        available = onnxruntime.get_available_providers()
        if self.device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(self.path), sess_options=options, providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            self._open()
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (output,) = self.session.run(None, {self.input_name: array})[:1]
        return torch.from_numpy(np.asarray(output, dtype=np.float32)).to(x.device)


class _PerClassMax(nn.Module):
    """YOLOv8 output ``[B, 4 + C, anchors]`` -> ``[B, C]``: each class's best anchor score."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector(x)[:, 4:, :].amax(dim=2)


def nudenet_model_path() -> Path:
    """The ``320n.onnx`` inside the installed ``nudenet`` package (its code is not imported)."""
    spec = importlib.util.find_spec(NUDENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NsfwModelError(
            "the default NSFW detector ships in the 'nudenet' package (AGPL-3.0): "
            "pip install 'lvd[safety]', or set ingest.nsfw.model=onnx|torchscript and "
            "ingest.nsfw.path to your own model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / NUDENET_FILE
    if not path.is_file():
        raise NsfwModelError(f"the nudenet package has no {NUDENET_FILE} at {path}")
    return path


def nsfw_model_id(model: str, path: Path | None = None) -> str:
    """``nudenet-<version>:320n.onnx`` or ``<onnx|torchscript>:<file name>``."""
    if model == "nudenet":
        try:
            version = importlib.metadata.version(NUDENET_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = "missing"
        return f"nudenet-{version}:{NUDENET_FILE}"
    return f"{model}:{Path(path).name if path else None}"


def _is_torchscript(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def load_nsfw_model(
    model: str,
    path: Path | None = None,
    classes: tuple[str, ...] = (),
    groups: dict[str, tuple[str, ...]] | None = None,
    size: int = 224,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> NsfwModel:
    """``nudenet`` (the packaged detector) or a user's ``onnx`` / ``torchscript`` classifier."""
    if model == "nudenet":
        file = nudenet_model_path()
        module = _PerClassMax(OnnxModule(file))
        prep = Preprocessing(size=NUDENET_SIZE, resize="square", mean=(0.0,) * 3, std=(1.0,) * 3)
        classes = NUDENET_CLASSES
        groups = groups or NUDENET_GROUPS
        model_id = nsfw_model_id(model)
    elif model in ("onnx", "torchscript"):
        if path is None or not Path(path).is_file():
            raise NsfwModelError(f"nsfw.model={model} needs nsfw.path to a model file, got {path}")
        if not classes:
            raise NsfwModelError("a user's NSFW model needs nsfw.classes: its output columns")
        path = Path(path)
        if model == "torchscript":
            if not _is_torchscript(path):
                raise NsfwModelError(f"{path} is not a TorchScript archive")
            module = torch.jit.load(str(path), map_location="cpu")
        else:
            module = OnnxModule(path)
        prep = Preprocessing(size=size, resize="square", mean=mean, std=std)
        groups = groups or {"nsfw": tuple(classes)}
        model_id = nsfw_model_id(model, path)
    else:
        raise NsfwModelError(f"unknown NSFW model {model!r}; expected nudenet, onnx or torchscript")
    groups = {name: tuple(members) for name, members in groups.items()}
    unknown = sorted({c for members in groups.values() for c in members} - set(classes))
    if unknown:
        raise NsfwModelError(f"NSFW groups name classes the model lacks: {unknown}")
    embedder = Embedder(
        model=module, model_id=model_id, dim=len(classes), preprocessing=prep, is_convnet=False
    )
    return NsfwModel(embedder, tuple(classes), groups)
