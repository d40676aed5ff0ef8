"""NSFW stage plumbing with a tiny model the test builds (a TorchScript "detector" of magenta):
flagged rows carry status, score and class; later stages never see them; local, Ray and Spark
agree. The packaged NudeNet model, when installed, loads and scores real photographs as safe."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.engines import get_engine
from curation.jobs.config import CurationConfig, IngestConfig
from curation.jobs.ingest import run_ingest
from curation.readers.image_files import write_encoded_shards
from curation.runner import TABLE_OUTPUT, run_stage
from curation.stages.base import StageSpec
from curation.stages.nsfw import STATUS_NSFW, NsfwConfig, NsfwStage

MAGENTA = (255, 0, 255)


class MagentaScore(torch.nn.Module):
    """Column 0: the fraction of magenta pixels; column 1: its complement."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        magenta = ((r > 0.8) & (g < 0.2) & (b > 0.8)).float().mean(dim=(1, 2))
        return torch.stack([magenta, 1 - magenta], dim=1)


def _picture(seed: int, magenta_fraction: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 160, size=(64, 96, 3), dtype=np.uint8)  # never magenta
    rows = int(round(64 * magenta_fraction))
    pixels[:rows] = MAGENTA
    return Image.fromarray(pixels)


# key -> magenta fraction: above 0.5 is flagged, below is kept
FRACTIONS = {f"img{i:02d}": f for i, f in enumerate([0.0, 0.25, 0.75, 1.0, 0.1, 0.0, 0.9, 0.4])}
FLAGGED = {k for k, f in FRACTIONS.items() if f > 0.5}


@pytest.fixture(scope="module")
def setup_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsfw")
    files = []
    for i, (key, fraction) in enumerate(FRACTIONS.items()):
        path = root / "images" / f"{key}.png"
        path.parent.mkdir(exist_ok=True)
        _picture(i, fraction).save(path)
        files.append(path)
    # an exact copy of a flagged image: exact dedup must not see the pair
    copy = root / "images" / "img99.png"
    copy.write_bytes(files[3].read_bytes())
    files.append(copy)
    broken = root / "images" / "broken.png"
    broken.write_bytes(b"not an image")
    files.append(broken)
    model = root / "magenta.pt"
    torch.jit.script(MagentaScore()).save(str(model))
    shards = write_encoded_shards(files, root / "encoded", rows_per_shard=4)
    return shards, model


def _config(model) -> NsfwConfig:
    return NsfwConfig(
        enabled=True,
        model="torchscript",
        path=model,
        classes=("magenta", "other"),
        groups={"colour": ["magenta"]},
        thresholds={"colour": 0.5},
        size=32,
        num_workers=1,
        batch_size=3,
    )


def test_flagged_rows_carry_status_and_score_and_later_stages_never_see_them(setup_files, tmp_path):
    shards, model = setup_files
    cfg = CurationConfig(name="nsfw", runs_dir=tmp_path)
    cfg = dataclasses.replace(cfg, ingest=IngestConfig(nsfw=_config(model)))
    stats = run_ingest(cfg, get_engine("local", progress=False), shards)
    run = cfg.run_dir
    rows = {r["key"]: r for r in pq.read_table(run.stage("nsfw").outputs()).to_pylist()}
    flagged = {k for k, r in rows.items() if r["status"] == STATUS_NSFW}
    assert flagged == FLAGGED | {"img99"}
    assert rows["broken"]["status"] == "decode_error" and rows["broken"]["nsfw_score"] is None
    for key, fraction in FRACTIONS.items():
        # the model sees a 32x32 resize: the magenta share survives within a row of pixels
        assert rows[key]["nsfw_score"] == pytest.approx(fraction, abs=0.05)
        assert rows[key]["nsfw_class"] == "magenta"
    assert "magenta" in rows["img03"]["error_message"]
    # nothing downstream reads a flagged row
    hashed = set(pq.read_table(run.stage("phash").outputs()).column("key").to_pylist())
    exact = pq.read_table(run.stage("dedup_exact").path / TABLE_OUTPUT)
    unique = set(pq.read_table(run.stage("unique_images").outputs()).column("key").to_pylist())
    kept = set(FRACTIONS) - FLAGGED
    assert hashed == kept and unique == kept
    assert set(exact.column("key").to_pylist()) == kept
    (record,) = stats["safety"]
    assert record["filter"] == "nsfw" and record["model_id"] == "torchscript:magenta.pt"
    assert record["thresholds"] == {"colour": 0.5}
    assert record["removed"] == len(FLAGGED) + 1 and record["checked"] == len(FRACTIONS) + 2


def test_a_group_threshold_moves_the_decision(setup_files, tmp_path):
    shards, model = setup_files
    config = dataclasses.replace(_config(model), thresholds={"colour": 0.2})
    stage_dir = CurationConfig(name="low", runs_dir=tmp_path).run_dir.stage("nsfw")
    ingest = CurationConfig(name="low", runs_dir=tmp_path).run_dir.stage("ingest")
    from curation.stages.ingest import IngestStage

    run_stage(StageSpec(IngestStage), shards, ingest, get_engine("local", progress=False))
    run_stage(StageSpec(NsfwStage, config), ingest.outputs(), stage_dir, get_engine("local"))
    table = pq.read_table(stage_dir.outputs())
    flagged = {r["key"] for r in table.to_pylist() if r["status"] == STATUS_NSFW}
    assert flagged == {k for k, f in FRACTIONS.items() if f > 0.2} | {"img99"}


def test_local_ray_and_spark_agree(setup_files, tmp_path, ray_runtime, spark_session):
    shards, model = setup_files
    from curation.stages.ingest import IngestStage

    ingest = CurationConfig(name="records", runs_dir=tmp_path).run_dir.stage("ingest")
    run_stage(StageSpec(IngestStage), shards, ingest, get_engine("local", progress=False))
    spec = StageSpec(NsfwStage, _config(model))
    tables = {}
    for name in ("local", "ray", "spark"):
        engine = get_engine(name, progress=False) if name == "local" else get_engine(name)
        stage_dir = CurationConfig(name=name, runs_dir=tmp_path).run_dir.stage("nsfw")
        run_stage(spec, ingest.outputs(), stage_dir, engine)
        tables[name] = pq.read_table(stage_dir.outputs()).sort_by("key")
    assert tables["local"].num_rows == len(FRACTIONS) + 2
    assert tables["local"].equals(tables["ray"])
    assert tables["local"].equals(tables["spark"])


def test_the_packaged_detector_scores_real_photographs_as_safe(require):
    require("onnxruntime")
    require("nudenet")
    from curation.eval.real_images import real_pictures
    from curation.models.nsfw_detector import NUDENET_CLASSES

    stage = NsfwStage(NsfwConfig(enabled=True, num_workers=0))
    stage.setup()
    pictures = real_pictures(("astronaut", "coffee", "chelsea"))
    scores = stage.runner.forward_uint8(
        torch.stack(
            [
                torch.from_numpy(np.array(Image.fromarray(p.image).resize((320, 320))))
                for p in pictures
            ]
        )
    ).numpy()
    assert scores.shape == (3, len(NUDENET_CLASSES))
    flagged, _, _, _ = stage.decide(scores)
    assert flagged == [False, False, False]
    # the astronaut's face is seen as a face: the detector is really running
    assert scores[0, NUDENET_CLASSES.index("FACE_FEMALE")] > 0.5
