"""Ingest: every file gets a status, bombs are refused within bounded memory, faces get blurred."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.engines import get_engine
from curation.io import read_parquet
from curation.jobs.config import CurationConfig, IngestConfig
from curation.jobs.ingest import run_ingest
from curation.models.face_blur import FaceBlurConfig, FaceBlurrer
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.ingest import IngestChecks, IngestStage, IngestStageConfig
from schemas import IMAGE_RECORD_SCHEMA

EXPECTED_STATUS = {
    "corrupt": "decode_error",
    "not_an_image": "decode_error",
    "empty": "empty",
    "too_large": "rejected_too_large",
    "ok_convert": "ok",
    "ok_rotated": "ok",
}


@pytest.fixture(scope="module")
def bad_shards(small_web, tmp_path_factory):
    files = list_image_files(small_web.bad_dir)
    return write_encoded_shards(files, tmp_path_factory.mktemp("bad"), rows_per_shard=3)


def test_bad_files_get_their_status_and_convertible_ones_their_true_size(
    small_web, bad_shards, tmp_path
):
    cfg = CurationConfig(name="bad", runs_dir=tmp_path)
    run_ingest(cfg, get_engine("local", progress=False), bad_shards)
    records = {
        r["key"]: r
        for r in read_parquet(
            cfg.run_dir.stage("ingest").outputs(), IMAGE_RECORD_SCHEMA
        ).to_pylist()
    }
    for truth in small_web.read("bad").to_pylist():
        stem = truth["file"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        record = records[stem]
        assert record["status"] == EXPECTED_STATUS[truth["expected"]], record
        if record["status"] == "ok":
            assert (record["width"], record["height"]) == (truth["width"], truth["height"])
            assert record["sha256"] and record["error_message"] is None
        else:
            assert record["error_message"]


def test_size_and_aspect_filters(tmp_path):
    def png(size):
        buffer = io.BytesIO()
        Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
        return buffer.getvalue()

    import pyarrow as pa

    from schemas import ENCODED_IMAGE_SCHEMA

    batch = pa.Table.from_pylist(
        [
            {"key": "small", "image": png((20, 100))},
            {"key": "wide", "image": png((400, 36))},
            {"key": "fine", "image": png((64, 48))},
        ],
        schema=ENCODED_IMAGE_SCHEMA,
    )
    stage = IngestStage(IngestStageConfig(IngestChecks(min_side=32, max_aspect_ratio=10.0)))
    stage.setup()
    statuses = stage(batch).column("status").to_pylist()
    assert statuses == ["rejected_too_small", "rejected_aspect_ratio", "ok"]


def test_a_50000_pixel_square_png_is_rejected_in_bounded_memory(small_web, tmp_path):
    """Decoding runs in a fresh process; its peak RSS must stay far below the 2.5 GB of pixels."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from curation.runner import run_stage
        from curation.rundir import StageDir
        from curation.readers.image_files import write_encoded_shards
        from curation.stages.base import StageSpec
        from curation.stages.ingest import IngestStage
        from curation.engines import get_engine
        import pyarrow.parquet as pq
        shards = write_encoded_shards([Path({str(small_web.bad_dir / "huge.png")!r})], Path({str(tmp_path / "in")!r}))
        stage = StageDir(Path({str(tmp_path / "ingest")!r}))
        run_stage(StageSpec(IngestStage), shards, stage, get_engine("local", progress=False))
        row = pq.read_table(stage.outputs()[0]).to_pylist()[0]
        # VmHWM is this process's own peak: ru_maxrss would carry the forking parent's RSS over exec.
        peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
        print(json.dumps({{"status": row["status"], "message": row["error_message"], "peak": peak}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "rejected_too_large"
    assert "2500000000 pixels" in report["message"] or "50000x50000" in report["message"]
    assert report["peak"] < 1024**3, f"peak RSS {report['peak'] / 2**20:.0f} MiB"


# The astronaut photograph (scikit-image, public domain): one face, labelled by hand.
ASTRONAUT_FACE = (178, 72, 266, 172)


def test_face_blurring_blurs_faces_only_and_counts_them(small_web, tmp_path):
    from curation.eval.real_images import real_pictures

    face_file = tmp_path / "images" / "astronaut.png"
    face_file.parent.mkdir()
    original = Image.fromarray(real_pictures(("astronaut",))[0].image)
    original.save(face_file)
    pool = list_image_files(small_web.pool_dir)[:30]
    shards = write_encoded_shards([face_file, *pool], tmp_path / "in", rows_per_shard=16)
    cfg = CurationConfig(name="faces", runs_dir=tmp_path)
    cfg = cfg.__class__(
        **{**cfg.__dict__, "ingest": IngestConfig(face_blur=FaceBlurConfig(enabled=True))}
    )
    stats = run_ingest(cfg, get_engine("local", progress=False), shards)
    records = {r["key"]: r for r in pq.read_table(cfg.run_dir.stage("faces").outputs()).to_pylist()}
    face = records["astronaut"]
    assert "blurred" in face["source_file"] and face["status"] == "ok"
    assert face["face_count"] == len(face["face_boxes"]) >= 1
    covering = [
        (left, top, right, bottom)
        for left, top, right, bottom in face["face_boxes"]
        if left <= ASTRONAUT_FACE[0] + 10
        and right >= ASTRONAUT_FACE[2] - 10
        and top <= ASTRONAUT_FACE[1] + 10
        and bottom >= ASTRONAUT_FACE[3] - 10
    ]
    assert covering, f"the labelled face {ASTRONAUT_FACE} is not among {face['face_boxes']}"
    # Lineage is run-relative: the blurred tar is found under the run folder.
    with open(cfg.run_dir.root / face["source_file"], "rb") as fh:
        fh.seek(face["source_offset"])
        stored = Image.open(io.BytesIO(fh.read(face["source_size"]))).convert("RGB")
    before, after = np.asarray(original, np.float32), np.asarray(stored, np.float32)
    left, top, right, bottom = covering[0]
    inside = (slice(top, bottom), slice(left, right))
    assert np.abs(before[inside] - after[inside]).mean() > 15  # the face changed a lot
    outside = np.ones(before.shape[:2], bool)
    for left, top, right, bottom in face["face_boxes"]:  # JPEG blocks spill a little
        outside[max(0, top - 8) : bottom + 8, max(0, left - 8) : right + 8] = False
    assert np.abs(before[outside] - after[outside]).mean() < 2  # the rest did not (JPEG aside)
    # later stages read the blurred records: the unique images point at the blurred copy
    unique = pq.read_table(cfg.run_dir.stage("unique_images").outputs()).to_pylist()
    assert [r["source_file"] for r in unique if r["key"] == "astronaut"] == [face["source_file"]]
    assert stats["faces"]["face_blur_images"] >= 1
    assert stats["faces"]["face_blur_faces"] >= 1
    (blur,) = [entry for entry in stats["safety"] if entry["filter"] == "face_blur"]
    assert blur["changed"] == stats["faces"]["face_blur_images"]
    assert blur["checked"] == stats["faces"]["face_blur_checked"] > 0
    saved = json.loads((cfg.run_dir.root / "_safety.json").read_text())
    assert saved["filters"] == stats["safety"]
    # Synthetic shapes are not faces: few false positives among pool images.
    assert stats["faces"]["face_blur_images"] <= 1 + 2


def test_face_blurrer_leaves_an_image_without_faces_alone(small_web):
    blurrer = FaceBlurrer(FaceBlurConfig(enabled=True))
    blurrer.setup()
    image = Image.new("RGB", (120, 90), (200, 30, 30))
    out, boxes = blurrer(image)
    assert boxes == [] and out is image


def test_ingest_gives_the_same_records_on_spark(bad_shards, tmp_path, spark_session):
    spec = StageSpec(IngestStage, IngestStageConfig())
    outputs = {}
    for name, engine in (
        ("local", get_engine("local", progress=False)),
        ("spark", get_engine("spark")),
    ):
        stage_dir = CurationConfig(name=name, runs_dir=tmp_path).run_dir.stage("ingest")
        run_stage(spec, bad_shards, stage_dir, engine)
        outputs[name] = pq.read_table(stage_dir.outputs()).sort_by("key")
    local, spark = (
        outputs["local"].drop_columns(["source_file"]),
        outputs["spark"].drop_columns(["source_file"]),
    )
    assert local.equals(spark)
