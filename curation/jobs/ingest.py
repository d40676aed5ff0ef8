"""The ingest job: a chain of stages, each writing its own folder of the run.

``ingest/`` (IngestStage: decode checks, filters, optional face blurring; every image with its
status) -> ``dedup_exact/`` (sha256) -> ``phash/`` (perceptual hashes) -> ``dedup_near/`` (Hamming
distance) -> ``unique_images/`` (the ``ok`` records nobody marked as a duplicate: what the
embedding stages read).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.engines import Engine
from curation.jobs.config import CurationConfig
from curation.jobs.download import encoded_image_shards
from curation.runner import TABLE_OUTPUT, run_stage, run_table_stage
from curation.stages.base import StageSpec
from curation.stages.exact_dedup import exact_duplicates, read_ok_hashes
from curation.stages.ingest import IngestStage, IngestStageConfig
from curation.stages.near_dedup import near_dedup_component_stats, near_duplicates, read_hashes
from curation.stages.phash import PhashConfig, PhashStage
from curation.stages.unique_images import UniqueImagesConfig, UniqueImagesStage
from schemas import HASH_DEDUP_SCHEMA

BLURRED = "_blurred"  # under ingest/: metadata names start with "_", so the folder reads as data


def dedup_summary(result: pa.Table) -> dict:
    """Rows in and kept, and how many rows each reason covers, of a HASH_DEDUP or DEDUP_COMPONENT
    table (both hold ``keep`` and ``reason`` per image)."""
    counts = pc.value_counts(result.column("reason")).to_pylist()
    return {
        "rows_in": result.num_rows,
        "rows_out": int(pc.sum(result.column("keep")).as_py() or 0),
        **{f"reason_{c['values']}": c["counts"] for c in counts},
    }


def face_counts(record_shards: list[Path], blurred_dir: Path) -> dict:
    """Images blurred and faces found, from the blurred tars the records point at."""
    tars = set()
    for shard in record_shards:
        files = pq.read_table(shard, columns=["source_file"]).column("source_file")
        tars.update(f for f in pc.unique(files).to_pylist() if f and Path(f).parent == blurred_dir)
    images = faces = 0
    for path in sorted(tars):
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if info.name.endswith(".json"):
                    images += 1
                    faces += json.loads(tar.extractfile(info).read())["faces"]
    return {"face_blur_images": images, "face_blur_faces": faces}


def run_ingest(cfg: CurationConfig, engine: Engine, inputs: list[Path] | None = None) -> dict:
    """Ingest a run's downloaded shards (or ``inputs``, ENCODED_IMAGE parts), then dedup them.

    Writes ``<run>/ingest/``, ``dedup_exact/``, ``phash/``, ``dedup_near/`` and ``unique_images/``;
    returns each stage's stats.
    """
    run = cfg.run_dir
    settings = cfg.ingest
    inputs = encoded_image_shards(cfg) if inputs is None else inputs
    if not inputs:
        raise FileNotFoundError(f"no downloaded shards under {run.root}; run `lvd download` first")
    run.save_config(cfg)
    stage = run.stage("ingest")
    blurred_dir = (stage.path / BLURRED).resolve()
    spec = StageSpec(IngestStage, IngestStageConfig(settings, str(blurred_dir)))
    ingest_stats = dict(run_stage(spec, inputs, stage, engine))
    records = stage.outputs()
    seconds = ingest_stats.get("seconds") or 0
    ingest_stats["images_per_second"] = (
        round(ingest_stats.get("status_ok", 0) / seconds, 2) if seconds else None
    )
    if settings.face_blur.enabled:
        ingest_stats.update(face_counts(records, blurred_dir))
    stage.write_stats(ingest_stats)
    stats = {"ingest": ingest_stats}

    dedup_outputs = []
    if settings.exact_dedup:
        exact = run.stage("dedup_exact")
        stats["dedup_exact"] = run_table_stage(
            "exact_dedup",
            lambda: exact_duplicates(read_ok_hashes(records)),
            HASH_DEDUP_SCHEMA,
            exact,
            summarize=dedup_summary,
        )
        dedup_outputs.append(exact.path / TABLE_OUTPUT)
    if settings.near_dedup.enabled:
        phash = StageSpec(PhashStage, PhashConfig(max_pixels=settings.max_pixels))
        stats["phash"] = run_stage(phash, records, run.stage("phash"), engine)
        hashes = run.stage("phash").outputs()
        near = settings.near_dedup
        excluded = dedup_outputs[0] if dedup_outputs else None
        stats["dedup_near"] = run_table_stage(
            "near_dedup",
            lambda: near_duplicates(
                read_hashes(hashes, excluded),
                near.max_distance,
                guard=near.guard,
                flat_index_limit=near.flat_index_limit,
            ),
            HASH_DEDUP_SCHEMA,
            run.stage("dedup_near"),
            config=near,
            summarize=lambda table: {
                **dedup_summary(table),
                "max_distance": near.max_distance,
                "guard": near.guard,
                "groups": near_dedup_component_stats(table),
            },
        )
        dedup_outputs.append(run.stage("dedup_near").path / TABLE_OUTPUT)
    unique = StageSpec(UniqueImagesStage, UniqueImagesConfig(tuple(map(str, dedup_outputs))))
    stats["unique_images"] = run_stage(unique, records, run.stage("unique_images"), engine)
    return stats


def unique_image_shards(cfg: CurationConfig) -> list[Path]:
    """IMAGE_RECORD shards of the ``ok``, deduplicated images: what embedding stages read."""
    return cfg.run_dir.stage("unique_images").outputs()
