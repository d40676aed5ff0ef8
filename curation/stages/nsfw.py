"""NSFW filtering, as LVD-142M did after download (DINOv2 paper, SPEC.md section 1).

IMAGE_RECORD -> NSFW_RECORD (the record, plus ``nsfw_score`` and ``nsfw_class``), one row per
input row. Every ``ok`` image is scored by a classifier (:mod:`curation.models.nsfw_detector`: the
NudeNet detector shipped in the ``nudenet`` package by default, or a user's ONNX / TorchScript
model); decoding runs in worker threads or processes overlapped with the forward passes, through
the embed stage's machinery (:class:`curation.models.inference.BatchEmbedder`).

Decision: the model's classes are gathered into groups (NudeNet: ``sexual_exposed``); a group's
score is the highest score of its classes; an image whose score in any group reaches that group's
threshold gets ``status = nsfw`` and an ``error_message`` naming the group, class and score. Its
``nsfw_score`` and ``nsfw_class`` are the top class over every group, kept for every scored row so
thresholds can be audited and moved later. Rows that were not ``ok`` upstream keep their status
with null scores; an image that fails to decode here gets the failure as its status. Later stages
read only ``ok`` rows, so ``nsfw`` rows never reach them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.imaging import DEFAULT_MAX_PIXELS
from curation.readers.image_bytes import image_bytes_loaders
from curation.stages.base import Resources
from schemas import IMAGE_RECORD_SCHEMA, NSFW_RECORD_SCHEMA, STATUS_NSFW, STATUS_OK

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NsfwConfig:
    enabled: bool = False
    model: Literal["nudenet", "onnx", "torchscript"] = "nudenet"
    path: Path | None = None  # the user's model file (model=onnx|torchscript)
    classes: tuple[str, ...] = ()  # the user's model: one name per output column
    # group name -> class names; None: the model's own (NudeNet: exposed sexual body parts; a
    # user's model: every class in one group "nsfw")
    groups: dict[str, list[str]] | None = None
    # group name -> threshold; a group not named here uses default_threshold
    thresholds: dict[str, float] | None = None
    default_threshold: float = 0.5
    size: int = 224  # the user's model's input side (NudeNet: 320, fixed)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the user's model: pixel/255 - mean
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gpus: int = 0  # GPUs per Ray actor (0 or 1)
    batch_size: int = 32  # images per forward pass
    rows_per_call: int = 512
    num_workers: int = 2  # decode workers per stage worker (0: decode in the stage's thread)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0.0 < self.default_threshold <= 1.0:
            raise ValueError("nsfw.default_threshold must be in (0, 1]")
        for name, value in (self.thresholds or {}).items():
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"nsfw.thresholds.{name} must be in (0, 1], got {value}")
        if self.gpus not in (0, 1):
            raise ValueError("nsfw.gpus must be 0 or 1")

    def threshold(self, group: str) -> float:
        return float((self.thresholds or {}).get(group, self.default_threshold))


class NsfwStage:
    name = "nsfw"
    input_schema = IMAGE_RECORD_SCHEMA
    output_schema = NSFW_RECORD_SCHEMA

    def __init__(self, config: NsfwConfig | None = None):
        self.config = config or NsfwConfig(enabled=True)
        self.resources = Resources(cpus=4, gpus=1) if self.config.gpus else Resources(cpus=1)
        self.batch_size = self.config.rows_per_call
        self.runner = None

    def setup(self) -> None:
        from curation.models.inference import BatchEmbedder, InferenceOptions
        from curation.models.nsfw_detector import load_nsfw_model

        cfg = self.config
        groups = {k: tuple(v) for k, v in cfg.groups.items()} if cfg.groups else None
        model = load_nsfw_model(
            cfg.model, cfg.path, tuple(cfg.classes), groups, cfg.size, cfg.mean, cfg.std
        )
        self.model_id = model.embedder.model_id
        self.classes = model.classes
        index = {name: i for i, name in enumerate(model.classes)}
        self.groups = {g: [index[c] for c in members] for g, members in model.groups.items()}
        self.grouped = sorted({i for members in self.groups.values() for i in members})
        options = InferenceOptions(
            device="cuda" if cfg.gpus else cfg.device,
            dtype="float32",
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            channels_last=False,
            max_pixels=cfg.max_pixels,
        )
        self.runner = BatchEmbedder(model.embedder, options)

    def decide(self, scores: np.ndarray) -> tuple[list[bool], list[str | None], np.ndarray, list]:
        """Per row: flagged, the reason, the top grouped class's score and name."""
        top = np.asarray(self.grouped)[scores[:, self.grouped].argmax(axis=1)]
        flagged, reasons = [], []
        for row in scores:
            reason = None
            for group, members in self.groups.items():
                best = members[int(row[members].argmax())]
                if row[best] >= self.config.threshold(group):
                    reason = (
                        f"{group}: {self.classes[best]} {row[best]:.3f} >= "
                        f"{self.config.threshold(group):g} ({self.model_id})"
                    )
                    break
            flagged.append(reason is not None)
            reasons.append(reason)
        top_scores = scores[np.arange(len(scores)), top].astype(np.float32)
        return flagged, reasons, top_scores, [self.classes[i] for i in top]

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.runner is None:
            self.setup()
        n = batch.num_rows
        status = batch.column("status").to_pylist()
        errors = batch.column("error_message").to_pylist()
        todo = [i for i in range(n) if status[i] == STATUS_OK]
        score = np.full(n, np.nan, dtype=np.float32)
        top_class: list[str | None] = [None] * n
        result = self.runner.embed(image_bytes_loaders(batch.take(todo)))
        for position, failure, message in result.failures:
            status[todo[position]], errors[todo[position]] = failure, message
        if len(result.positions):
            rows = np.asarray(todo, dtype=np.int64)[result.positions]
            flagged, reasons, top_scores, names = self.decide(result.embeddings)
            score[rows] = top_scores
            for row, bad, reason, name in zip(rows.tolist(), flagged, reasons, names):
                top_class[row] = name
                if bad:
                    status[row], errors[row] = STATUS_NSFW, reason
        columns = {name: batch.column(name) for name in IMAGE_RECORD_SCHEMA.names}
        columns["status"] = pa.array(status, pa.string())
        columns["error_message"] = pa.array(errors, pa.string())
        columns["nsfw_score"] = pa.array(score, pa.float32(), mask=np.isnan(score))
        columns["nsfw_class"] = pa.array(top_class, pa.string())
        return pa.table(columns, schema=NSFW_RECORD_SCHEMA)


def nsfw_record(config: NsfwConfig, model_id: str | None = None) -> dict:
    """What the safety record says about this filter (before counts are added)."""
    from curation.models.nsfw_detector import NUDENET_GROUPS, nsfw_model_id

    groups = config.groups
    if groups is None:
        nudenet = config.model == "nudenet"
        groups = {k: list(v) for k, v in NUDENET_GROUPS.items()} if nudenet else None
    groups = groups or {"nsfw": list(config.classes)}
    return {
        "filter": "nsfw",
        "model_id": model_id or nsfw_model_id(config.model, config.path),
        "groups": groups,
        "thresholds": {group: config.threshold(group) for group in groups},
    }
