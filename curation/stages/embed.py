"""Embed images: SSCD copy-detection descriptors or DINOv2 retrieval embeddings, per input shard.

Input: IMAGE_RECORD rows (their bytes are read at ``source_offset`` / ``source_size`` in
``source_file``, a tar shard or a loose file), or ENCODED_IMAGE rows (``image`` bytes inline, or by
offset when ``image`` is null). Output: the EMBEDDING schema, one row per input row: ``key``,
``embedding`` (a fixed-size float32 list, null where the image failed), ``model_id``, ``status`` and
``error_message``. Its width is the model's: the stage takes its schemas from its config, so build
it through :func:`embed_stage_spec`, which fills ``dim`` in. Reading and decoding run in decode
workers (processes for a GPU, threads on a CPU), overlapped with the forward passes
(:mod:`curation.models.inference`).

Failures are rows: an image that cannot be read or decoded keeps its key with a null embedding and
the reason (``read_error``, ``decode_error``, ...); an IMAGE_RECORD row that was not ``ok`` upstream
keeps its upstream status and message and is not embedded.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.imaging import DEFAULT_MAX_PIXELS
from curation.index.calibration import ScoreCalibration
from curation.readers.image_bytes import image_bytes_loaders
from curation.readers.input_shards import IMAGE_INPUT_SCHEMAS
from curation.stages.base import Resources, StageSpec
from schemas import STATUS_OK, embedding_schema

if TYPE_CHECKING:  # torch is imported only by workers that embed, not by every config reader
    from curation.models.inference import BatchEmbedder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    model: str = "sscd_resnet50"  # sscd_resnet50 | sscd_resnet18 | descriptor | torchscript | ViT
    checkpoint: Path | None = None  # weights file; None: random seeded weights (benchmarks only)
    model_id: str | None = None  # None: "<model>:<checkpoint file>:<resize><size>"
    dim: int | None = None  # None: filled in by embed_stage_spec from the model
    size: int | None = None  # None: the model's own (SSCD 320, descriptor: as trained, ViT 224)
    resize: Literal["square", "short_side", "center_crop"] | None = None  # None: the model's own
    scales: tuple[int, ...] = ()  # multi-scale: mean of L2-normalised descriptors at these sizes
    # Average each descriptor with its mirror image's / crop uniform borders first; None: what a
    # descriptor checkpoint recorded (curation.models.embedder.load_embedder), else off.
    flip: bool | None = None
    trim_borders: bool | None = None
    use_patch_tokens: bool = False  # retrieval embedder: CLS + mean patch token
    input: Literal["image_record", "encoded_image"] = "image_record"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, else float32
    channels_last: bool | None = None  # None: on for conv nets
    batch_size: int = 64  # images per forward pass
    rows_per_call: int = 1024  # rows the runner hands the stage at a time
    # decode workers per stage worker (0: decode in the stage's thread); None: from the machine
    # (curation.models.inference.decode_workers: a thread per CPU on CPU, CPUs - 2 processes
    # beside a GPU)
    num_workers: int | None = None
    # auto: processes for GPUs, threads on CPUs
    decode_backend: Literal["auto", "process", "thread"] = "auto"
    gpus: int = 0  # GPUs per Ray actor (0 or 1)
    threads: int | None = None  # torch CPU threads per worker; None: torch's default
    max_pixels: int = DEFAULT_MAX_PIXELS
    # JPEGs decoded at 1/2-1/8 DCT scale when the model needs fewer pixels (never below its size).
    reduced_jpeg_decode: bool = True
    # The copy-score calibration (curation.index.calibration.ScoreCalibration as a dict) that goes
    # with these embeddings. None: filled in by embed_stage_spec from a descriptor checkpoint that
    # stores one. Not used to embed: recorded in the stage's _config.yaml, where `lvd dedup` reads it.
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("batch_size", "rows_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"embed.{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"embed.num_workers must be 0 or more, got {self.num_workers}")
        if self.gpus not in (0, 1):
            raise ValueError("embed.gpus must be 0 or 1 (one model replica per GPU)")

    def embedder_kwargs(self) -> dict:
        return {
            "size": self.size,
            "resize": self.resize,
            "scales": self.scales,
            "flip": self.flip,
            "trim_borders": self.trim_borders,
            "use_patch_tokens": self.use_patch_tokens,
            "model_id": self.model_id,
        }


class EmbedStage:
    """Schemas, resources and batch size come from the config (the model's width, GPUs per worker,
    the input kind), so they are set per instance."""

    name = "embed"

    def __init__(self, config: EmbedConfig):
        if config.dim is None:
            raise ValueError("EmbedConfig.dim is unset: build the stage with embed_stage_spec()")
        self.config = config
        self.input_schema = IMAGE_INPUT_SCHEMAS[config.input]
        self.output_schema = embedding_schema(config.dim)
        # A GPU worker also needs CPUs for its decode processes.
        self.resources = Resources(cpus=4, gpus=1) if config.gpus else Resources(cpus=1)
        self.batch_size = config.rows_per_call
        self.embedder: BatchEmbedder | None = None

    def setup(self) -> None:
        import torch

        from curation.models.embedder import load_embedder
        from curation.models.inference import BatchEmbedder, InferenceOptions

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        embedder = load_embedder(cfg.model, cfg.checkpoint, **cfg.embedder_kwargs())
        if embedder.dim != cfg.dim:
            raise ValueError(
                f"model {embedder.model_id} gives {embedder.dim}-d, config says {cfg.dim}"
            )
        options = InferenceOptions(
            device="cuda" if cfg.gpus else cfg.device,
            dtype=cfg.dtype,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            backend=cfg.decode_backend,
            channels_last=cfg.channels_last,
            max_pixels=cfg.max_pixels,
            reduced_jpeg_decode=cfg.reduced_jpeg_decode,
        )
        self.embedder = BatchEmbedder(embedder, options)
        self.model_id = embedder.model_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.embedder is None:
            self.setup()
        n = batch.num_rows
        status = ["ok"] * n
        errors: list[str | None] = [None] * n
        todo = list(range(n))
        if "status" in batch.column_names:  # IMAGE_RECORD: only ``ok`` records are embedded
            upstream = batch.column("status").to_pylist()
            messages = batch.column("error_message").to_pylist()
            todo = [i for i in todo if upstream[i] == STATUS_OK]
            for i in set(range(n)) - set(todo):
                status[i], errors[i] = upstream[i], messages[i]
        result = self.embedder.embed(image_bytes_loaders(batch.take(todo)))
        for position, failure, message in result.failures:
            status[todo[position]], errors[todo[position]] = failure, message
        if result.failures:
            logger.warning("embed: %d image(s) failed", len(result.failures))
        dim = self.output_schema.field("embedding").type.list_size
        rows = np.full((n, dim), np.nan, dtype=np.float32)
        done = np.asarray(todo, dtype=np.int64)[result.positions]
        rows[done] = result.embeddings
        valid = np.zeros(n, dtype=bool)
        valid[done] = True
        flat = pa.array(rows.reshape(-1), pa.float32())
        embedding = pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~valid))
        return pa.table(
            {
                "key": batch.column("key"),
                "embedding": embedding,
                "model_id": pa.array([self.model_id] * n, pa.string()),
                "status": pa.array(status, pa.string()),
                "error_message": pa.array(errors, pa.string()),
            },
            schema=self.output_schema,
        )


def embed_stage_spec(config: EmbedConfig) -> StageSpec:
    """The picklable recipe for the configured stage, with ``dim``, ``model_id`` and
    ``calibration`` resolved (this builds the model once, on the CPU of the caller, if the config
    does not give the first two). The calibration comes from the checkpoint unless the config gives
    one; the runner saves it with the rest of the config in the stage's ``_config.yaml``."""
    from curation.models.embedder import (
        FILE_MODELS,
        SSCD_MODELS,
        checkpoint_calibration,
        load_embedder,
    )

    calibration = config.calibration
    if config.dim is None or config.model_id is None:
        embedder = load_embedder(config.model, config.checkpoint, **config.embedder_kwargs())
        config = dataclasses.replace(
            config, dim=config.dim or embedder.dim, model_id=config.model_id or embedder.model_id
        )
        calibration = calibration or embedder.calibration
    elif calibration is None and config.checkpoint is not None:
        if config.model in SSCD_MODELS or config.model in FILE_MODELS:
            calibration = checkpoint_calibration(config.checkpoint)
    if calibration is not None:
        # Checked here, in the caller, so a malformed calibration fails before any worker starts.
        calibration = ScoreCalibration.from_dict(calibration).to_dict()
        logger.info("embeddings carry a %s score calibration", calibration["kind"])
        config = dataclasses.replace(config, calibration=calibration)
    return StageSpec(EmbedStage, config)
