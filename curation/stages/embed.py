"""Embed images: SSCD copy-detection descriptors or DINOv2 retrieval embeddings, per input shard.

Input: IMAGE_RECORD rows (only ``status == ok`` rows are embedded; their bytes are read at
``source_offset`` / ``source_size`` in ``source_file``, a tar shard or a loose file), or
ENCODED_IMAGE rows (``image`` bytes inline, or by offset when ``image`` is null). Output: the
EMBEDDING schema (``key``, ``embedding`` fixed-size float32 list, ``model_id``), whose width is the
model's: the stage sets ``output_schema`` (and ``input_schema``) per instance from its config, so
build it through :func:`embed_stage_spec`, which fills ``dim`` in. Reading and decoding run in
decode workers (processes for a GPU, threads on a CPU), overlapped with the forward passes
(:mod:`curation.models.inference`).

Rows that cannot be read or decoded get no embedding and are logged with their keys and reasons
(the EMBEDDING schema has no status column; ``rows_in - rows_out`` in the stats counts them together
with the non-``ok`` records skipped).
"""

from __future__ import annotations

import dataclasses
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.download.blobs import blob_loaders
from curation.imaging import DEFAULT_MAX_PIXELS, STATUS_OK
from curation.io import write_parquet_atomic
from curation.runner import run_stage
from curation.sources import IMAGE_SUFFIXES
from curation.stages.base import Resources, StageSpec
from schemas import ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA, SchemaError, embedding_schema
from schemas.validate import conform

if TYPE_CHECKING:  # torch is imported only by workers that embed, not by every config reader
    from curation.engines import Engine
    from curation.models.inference import BatchEmbedder
    from curation.pipeline import CurationConfig

logger = logging.getLogger(__name__)

INPUT_SCHEMAS = {"image_record": IMAGE_RECORD_SCHEMA, "encoded_image": ENCODED_IMAGE_SCHEMA}


@dataclass(frozen=True)
class EmbedConfig:
    model: str = "sscd_resnet50"  # sscd_resnet50 | sscd_resnet18 | descriptor | torchscript | ViT
    checkpoint: Path | None = None  # weights file; None: random seeded weights (benchmarks only)
    model_id: str | None = None  # None: "<model>:<checkpoint file>:<resize><size>"
    dim: int | None = None  # None: filled in by embed_stage_spec from the model
    size: int | None = None  # None: the model's own (SSCD 320, descriptor: as trained, ViT 224)
    resize: str | None = None  # square | short_side | center_crop; None: the model's own
    scales: tuple[int, ...] = ()  # multi-scale: mean of L2-normalised descriptors at these sizes
    use_patch_tokens: bool = False  # retrieval embedder: CLS + mean patch token
    input: str = "image_record"  # image_record | encoded_image
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 on CUDA, float32 on CPU) | float32 | bf16 | fp16
    channels_last: bool | None = None  # None: on for conv nets
    batch_size: int = 64  # images per forward pass
    rows_per_call: int = 1024  # rows the runner hands the stage at a time
    num_workers: int = 4  # decode workers per stage worker (0: decode in the stage's thread)
    decode_backend: str = "auto"  # process | thread | auto (processes for GPUs, threads on CPUs)
    gpus: int = 0  # GPUs per Ray actor (0 or 1)
    threads: int | None = None  # torch CPU threads per worker; None: torch's default
    max_pixels: int = DEFAULT_MAX_PIXELS
    # JPEGs decoded at 1/2-1/8 DCT scale when the model needs fewer pixels (never below its size).
    reduced_jpeg_decode: bool = True

    def __post_init__(self) -> None:
        if self.input not in INPUT_SCHEMAS:
            raise ValueError(f"embed.input must be one of {sorted(INPUT_SCHEMAS)}")
        if self.gpus not in (0, 1):
            raise ValueError("embed.gpus must be 0 or 1 (one model replica per GPU)")

    def embedder_kwargs(self) -> dict:
        return {
            "size": self.size,
            "resize": self.resize,
            "scales": self.scales,
            "use_patch_tokens": self.use_patch_tokens,
            "model_id": self.model_id,
        }


class EmbedStage:
    name = "embed"
    input_schema = IMAGE_RECORD_SCHEMA  # per instance: INPUT_SCHEMAS[config.input]
    output_schema: pa.Schema  # per instance: embedding_schema(config.dim)
    resources = Resources(cpus=1)
    batch_size = 1024  # per instance: config.rows_per_call

    def __init__(self, config: EmbedConfig):
        if config.dim is None:
            raise ValueError("EmbedConfig.dim is unset: build the stage with embed_stage_spec()")
        self.config = config
        self.input_schema = INPUT_SCHEMAS[config.input]
        self.output_schema = embedding_schema(config.dim)
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

    def _loaders(self, batch: pa.Table) -> tuple[pa.Table, list]:
        if self.config.input == "image_record":
            batch = batch.filter(pc.equal(batch.column("status"), STATUS_OK))
        return batch, blob_loaders(batch)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.embedder is None:
            self.setup()
        batch, loaders = self._loaders(batch)
        result = self.embedder.embed(loaders)
        if result.failures:
            keys = batch.column("key")
            logger.warning(
                "embed: %d image(s) failed, e.g. %s",
                len(result.failures),
                [(keys[i].as_py(), status, msg) for i, status, msg in result.failures[:3]],
            )
        n, dim = result.embeddings.shape
        flat = pa.array(np.ascontiguousarray(result.embeddings).reshape(-1), pa.float32())
        return pa.table(
            {
                "key": batch.column("key").take(pa.array(result.positions, pa.int64())),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                "model_id": pa.array([self.model_id] * n, pa.string()),
            },
            schema=self.output_schema,
        )


class GpuEmbedStage(EmbedStage):
    """The same stage with one GPU per worker declared (Ray schedules actors on GPU nodes)."""

    resources = Resources(cpus=4, gpus=1)


def embed_stage_spec(config: EmbedConfig) -> StageSpec:
    """The picklable recipe for the configured stage, with ``dim`` and ``model_id`` resolved (this
    builds the model once, on the CPU of the caller, if the config does not give them)."""
    from curation.models.embedder import load_embedder

    if config.dim is None or config.model_id is None:
        embedder = load_embedder(config.model, config.checkpoint, **config.embedder_kwargs())
        config = dataclasses.replace(
            config, dim=config.dim or embedder.dim, model_id=config.model_id or embedder.model_id
        )
    return StageSpec(GpuEmbedStage if config.gpus else EmbedStage, config)


# ---------------------------------------------------------------------- inputs and the job


def input_kind(path: Path) -> str:
    """``image_record`` or ``encoded_image``: which of our schemas a Parquet shard holds."""
    schema = pq.read_schema(path)
    for kind, expected in INPUT_SCHEMAS.items():
        if all(f.name in schema.names and schema.field(f.name).type == f.type for f in expected):
            return kind
    raise SchemaError(
        f"{path}: neither IMAGE_RECORD nor ENCODED_IMAGE columns; found {schema.names} "
        "(a seed parquet needs at least 'key' and 'image' bytes: see conform_parquet_inputs)"
    )


def conform_parquet_inputs(paths: list[Path], out_dir: Path) -> list[Path]:
    """User Parquet files (``key`` + ``image`` bytes, other columns optional) as ENCODED_IMAGE
    shards; files that already hold one of our input schemas are used in place."""
    shards = []
    for path in sorted(Path(p) for p in paths):
        try:
            input_kind(path)
            shards.append(path)
            continue
        except SchemaError:
            pass
        target = Path(out_dir) / f"{path.stem}.parquet"
        if not target.is_file():
            table = conform(pq.read_table(path), ENCODED_IMAGE_SCHEMA)
            write_parquet_atomic(target, table, ENCODED_IMAGE_SCHEMA)
        shards.append(target)
    return shards


def index_webdataset_tars(tars: list[Path], out_dir: Path) -> list[Path]:
    """One ENCODED_IMAGE shard per tar, bytes left in the tar (``image`` null, offsets set).

    Keys follow webdataset: the member path up to the first dot of its file name.
    """
    shards = []
    for number, tar in enumerate(sorted(Path(t).resolve() for t in tars)):
        target = Path(out_dir) / f"part-{number:05d}.parquet"
        shards.append(target)
        if target.is_file():
            continue
        rows = []
        with tarfile.open(tar) as archive:
            for member in archive:
                suffix = Path(member.name).suffix.lower()
                if not member.isfile() or suffix not in IMAGE_SUFFIXES:
                    continue
                folder, _, base = member.name.rpartition("/")
                stem = base.split(".", 1)[0]
                rows.append(
                    {
                        "key": f"{folder}/{stem}" if folder else stem,
                        "url": None,
                        "image": None,
                        "source_file": str(tar),
                        "source_offset": member.offset_data,
                        "source_size": member.size,
                    }
                )
        table = pa.Table.from_pylist(rows, schema=ENCODED_IMAGE_SCHEMA)
        write_parquet_atomic(target, table, ENCODED_IMAGE_SCHEMA)
    return shards


def run_embed(
    cfg: CurationConfig, engine: Engine, inputs: list[Path], stage: str = "embed_sscd"
) -> dict:
    """Embed IMAGE_RECORD or ENCODED_IMAGE shards into ``<run>/<stage>/`` with ``cfg.embed``."""
    if not inputs:
        raise FileNotFoundError("embed: no input shards")
    kinds = {input_kind(Path(p)) for p in inputs}
    if len(kinds) > 1:
        raise SchemaError(f"embed: inputs mix schemas {sorted(kinds)}; embed each kind separately")
    run = cfg.run_dir
    run.save_config(cfg)
    spec = embed_stage_spec(dataclasses.replace(cfg.embed, input=kinds.pop()))
    logger.info("embed %d shard(s) with %s", len(inputs), spec.config.model_id)
    return run_stage(spec, [Path(p) for p in inputs], run.stage(stage), engine)
