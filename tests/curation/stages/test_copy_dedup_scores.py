"""Edge scores of copy dedup: which score and threshold apply (settings, then the calibration
recorded with the embeddings, then SPEC's cosine 0.6), the calibration travelling from a
descriptor checkpoint through the embed stage to dedup, and density scores separating a crowd of
look-alike non-copies that cosine merges."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.config import ConfigError, load_config
from curation.engines import get_engine
from curation.index.calibration import ScoreCalibration
from curation.io import write_parquet_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.dedup import recorded_calibration, run_dedup
from curation.jobs.embed import run_embed
from curation.models.descriptor import (
    build_descriptor,
    save_descriptor_checkpoint,
    write_calibration,
)
from curation.readers.image_files import write_encoded_shards
from curation.rundir import StageDir
from curation.runner import TABLE_OUTPUT
from curation.stages.copy_dedup import CopyDedupConfig, resolve_scoring
from curation.stages.embed import EmbedConfig, embed_stage_spec
from schemas import IMAGE_RECORD_SCHEMA, embedding_schema

DIM = 64
DENSITY = ScoreCalibration(kind="density", threshold=0.3, center=(0.0,) * DIM)


def test_threshold_and_score_precedence():
    default = CopyDedupConfig()
    cosine = ScoreCalibration(kind="cosine", threshold=0.9)
    cases = [
        # (config, recorded) -> (kind, threshold, kind_from, threshold_from, centred)
        (default, None, ("cosine", 0.6, "default", "default", False)),
        (default, DENSITY, ("density", 0.3, "calibration", "calibration", True)),
        (default, cosine, ("cosine", 0.9, "calibration", "calibration", False)),
        (
            replace(default, threshold=0.25),
            DENSITY,
            ("density", 0.25, "calibration", "config", True),
        ),
        # A density threshold means nothing on cosines: the SPEC's 0.6, still centred.
        (replace(default, score="cosine"), DENSITY, ("cosine", 0.6, "config", "default", True)),
        (
            replace(default, use_calibration=False),
            DENSITY,
            ("cosine", 0.6, "default", "default", False),
        ),
        (
            replace(default, score="density", threshold=0.1),
            None,
            ("density", 0.1, "config", "config", False),
        ),
    ]
    for config, recorded, expected in cases:
        scoring = resolve_scoring(config, recorded, "somewhere" if recorded else None)
        got = (
            scoring.kind,
            scoring.threshold,
            scoring.kind_from,
            scoring.threshold_from,
            bool(scoring.center),
        )
        assert got == expected, (config, recorded)
    assert resolve_scoring(default, DENSITY, "here").describe()["calibration_from"] == "here"
    with pytest.raises(ConfigError, match="needs a threshold"):
        resolve_scoring(replace(default, score="density"))
    with pytest.raises(ConfigError, match="needs a threshold"):
        resolve_scoring(replace(default, score="density"), replace(cosine, threshold=None))


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_pool(root, keys, vectors, calibration=None):
    """EMBEDDING and IMAGE_RECORD shards; ``calibration`` recorded the way the embed stage does."""
    schema = embedding_schema(vectors.shape[1])
    flat = pa.array(vectors.astype(np.float32).reshape(-1), pa.float32())
    n = len(keys)
    table = pa.table(
        {
            "key": keys,
            "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            "model_id": ["m"] * n,
            "status": ["ok"] * n,
            "error_message": pa.nulls(n, pa.string()),
        },
        schema=schema,
    )
    shard = root / "emb" / "part-00000.parquet"
    write_parquet_atomic(shard, table, schema)
    embed = EmbedConfig(model="descriptor", dim=vectors.shape[1], calibration=calibration)
    StageDir(root / "emb").save_config({"stage": "embed", "config": embed})
    nulls = {
        name: pa.nulls(n, IMAGE_RECORD_SCHEMA.field(name).type)
        for name in (
            "url",
            "sha256",
            "error_message",
            "source_file",
            "source_offset",
            "source_size",
        )
    }
    records = pa.table(
        {
            "key": keys,
            "width": pa.array([100] * n, pa.int32()),
            "height": pa.array([100] * n, pa.int32()),
            "status": ["ok"] * n,
            **nulls,
        }
    ).select(IMAGE_RECORD_SCHEMA.names)
    record_shard = root / "records" / "part-00000.parquet"
    write_parquet_atomic(record_shard, records.cast(IMAGE_RECORD_SCHEMA), IMAGE_RECORD_SCHEMA)
    return [shard], [record_shard]


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """300 scattered images; 10 of them with a copy (cosine ~0.95); and a crowd of 40 near-identical
    images that are *not* copies of each other (cosine ~0.9 among them, like clip art of one style).
    """
    rng = np.random.default_rng(0)
    scattered = unit(rng.standard_normal((300, DIM)))
    copies = unit(scattered[:10] + 0.33 * rng.standard_normal((10, DIM)) / np.sqrt(DIM))
    centre = unit(rng.standard_normal(DIM))
    crowd = unit(centre + 0.33 * rng.standard_normal((40, DIM)) / np.sqrt(DIM))
    vectors = np.concatenate([scattered, copies, crowd])
    keys = [f"img-{i:03d}" for i in range(300)]
    keys += [f"copy-{i:03d}" for i in range(10)] + [f"crowd-{i:02d}" for i in range(40)]
    root = tmp_path_factory.mktemp("crowd")
    pool, records = write_pool(root, keys, vectors, DENSITY.to_dict())
    return root, pool, records


def dedup(crowd, name, *overrides):
    root, pool, records = crowd
    cfg = load_config(CurationConfig, [], [f"runs_dir={root}", f"name={name}", *overrides])
    with get_engine("local", progress=False) as engine:
        stats = run_dedup(cfg, engine, pool, records)
    rows = pq.read_table(cfg.run_dir.stage("dedup_copy").path / TABLE_OUTPUT).to_pylist()
    return stats, {r["key"]: r["representative_key"] for r in rows}


def crowd_merged(representative: dict) -> int:
    return sum(rep != key for key, rep in representative.items() if key.startswith("crowd"))


def copies_found(representative: dict) -> int:
    return sum(representative[f"copy-{i:03d}"] == representative[f"img-{i:03d}"] for i in range(10))


@pytest.mark.parametrize("partitions", [0, 3])
def test_the_recorded_density_calibration_keeps_the_crowd_apart_and_finds_the_copies(
    crowd, partitions
):
    stats, representative = dedup(
        crowd, f"calibrated{partitions}", f"dedup.partitions={partitions}"
    )
    scoring = stats["dedup_copy"]["scoring"]
    assert scoring["kind"] == "density" and scoring["threshold"] == 0.3
    assert scoring["threshold_from"] == "calibration" == scoring["kind_from"]
    assert scoring["calibration_from"] == str(crowd[1][0].parent)
    assert stats["dedup_edges"]["scoring"] == scoring
    assert copies_found(representative) == 10
    assert crowd_merged(representative) == 0


def test_cosine_merges_the_crowd_that_density_keeps_apart(crowd):
    stats, representative = dedup(crowd, "cosine", "dedup.score=cosine", "dedup.threshold=0.8")
    assert stats["dedup_copy"]["scoring"]["threshold_from"] == "config"
    assert copies_found(representative) == 10
    assert crowd_merged(representative) > 30
    # Without the calibration: SPEC's cosine 0.6, which merges the crowd as well.
    stats, representative = dedup(crowd, "ignored", "dedup.use_calibration=false")
    assert stats["dedup_copy"]["scoring"]["threshold"] == 0.6
    assert crowd_merged(representative) > 30


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_descriptor("resnet18", dim=16, width=8)
    return save_descriptor_checkpoint(
        tmp_path / "tiny.pt",
        model,
        arch="resnet18",
        dim=16,
        arch_kwargs={"width": 8},
        inference={"size": 32, "resize": "square"},
    )


def test_the_embed_stage_records_a_checkpoints_calibration_where_dedup_finds_it(
    tiny_checkpoint, tmp_path
):
    assert (
        embed_stage_spec(
            EmbedConfig(model="descriptor", checkpoint=tiny_checkpoint)
        ).config.calibration
        is None
    )
    calibration = ScoreCalibration(kind="density", threshold=0.05, target_precision=0.99)
    write_calibration(tiny_checkpoint, calibration.to_dict())
    for given in ({}, {"dim": 16, "model_id": "tiny"}):  # the model is loaded, or only read
        spec = embed_stage_spec(
            EmbedConfig(model="descriptor", checkpoint=tiny_checkpoint, **given)
        )
        assert ScoreCalibration.from_dict(spec.config.calibration) == calibration
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"im{i}.png")
    inputs = write_encoded_shards(sorted(tmp_path.glob("*.png")), tmp_path / "encoded")
    cfg = load_config(
        CurationConfig,
        [],
        [
            f"runs_dir={tmp_path}",
            "name=run",
            "embed.model=descriptor",
            f"embed.checkpoint={tiny_checkpoint}",
            "embed.num_workers=0",
            "embed.device=cpu",
        ],
    )
    with get_engine("local", progress=False) as engine:
        run_embed(cfg, engine, inputs, stage="embed_sscd")
    outputs = cfg.run_dir.stage("embed_sscd").outputs()
    assert recorded_calibration(outputs) == (calibration, str(outputs[0].parent))
    # What dedup resolves from that folder alone.
    scoring = resolve_scoring(cfg.dedup, *recorded_calibration(outputs))
    assert (scoring.kind, scoring.threshold, scoring.threshold_from) == (
        "density",
        0.05,
        "calibration",
    )
