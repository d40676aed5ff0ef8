"""``dedup.verify``: copy pairs just under the threshold are checked with the images' pixels.

Real pictures, copies of some of them (a crop, a meme frame, a pad: the edits a descriptor scores a
little under its original) and distractors, with embeddings built so that every copy and one pair
of *different* pictures score inside the band under the threshold: the descriptor alone cannot
tell them apart, the pixels can. The check runs in-process, on Ray (partitioned search) and on
Spark, and all keep the same set."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageOps

from curation.cli import main
from curation.io import write_parquet_atomic
from schemas import IMAGE_RECORD_SCHEMA, embedding_schema

DIM = 32
PICTURES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "china", "flower", "horse")
ORIGINALS = PICTURES[:4]  # each gets copies; the others are distractors
THRESHOLD, BAND_COSINE = 0.6, 0.52  # verify_margin 0.15: the band is (0.45, 0.6]


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _copies(image: Image.Image) -> dict[str, Image.Image]:
    """Three copies, each smaller than the original (so the original is the representative)."""
    w, h = image.size
    crop = image.crop((w // 10, h // 6, w * 8 // 10, h * 9 // 10))
    meme = Image.new("RGB", (w, h * 4 // 3), (255, 255, 255))
    meme.paste(image, (0, h // 3))
    ImageDraw.Draw(meme).rectangle((20, 20, w - 30, h // 6), fill=(0, 0, 0))
    # A pad is no strict window once its borders are cropped: the descriptor's to find. Padding
    # around a crop is one.
    pad = ImageOps.expand(crop, border=(w // 8, 0, w // 8, h // 5), fill=(30, 200, 40))
    return {
        name: copy.resize((copy.width * 3 // 5, copy.height * 3 // 5))
        for name, copy in (("crop", crop), ("meme", meme), ("pad", pad))
    }


def _unit(x):
    return x / np.linalg.norm(x)


def _at_cosine(rng, anchor: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to the unit ``anchor``."""
    other = rng.normal(size=anchor.shape)
    other = _unit(other - (other @ anchor) * anchor)
    return cosine * anchor + np.sqrt(1 - cosine**2) * other


@pytest.fixture(scope="module")
def pool(require, tmp_path_factory):
    require("skimage")
    require("sklearn")
    from curation.eval.real_images import real_pictures

    root = tmp_path_factory.mktemp("verify")
    rng = np.random.default_rng(3)
    images: dict[str, Image.Image] = {}
    for picture in real_pictures(PICTURES):
        images[picture.name] = Image.fromarray(picture.image)
        if picture.name in ORIGINALS:
            for edit, copy in _copies(images[picture.name]).items():
                images[f"{picture.name}-{edit}"] = copy
    # Nearly orthogonal bases (32-d random: |cosine| ~0.2), copies in the band around their
    # original, one distractor in the band around an original (a look-alike that is no copy).
    base = {name: _unit(rng.normal(size=DIM)) for name in PICTURES}
    vectors = dict(base)
    for name in images:
        if "-" in name:
            vectors[name] = _at_cosine(rng, base[name.split("-")[0]], BAND_COSINE)
    vectors["china"] = _at_cosine(rng, base["camera"], BAND_COSINE)
    keys = sorted(images)
    folder = root / "images"
    folder.mkdir()
    sizes = {}
    for key in keys:
        data = _jpeg(images[key])
        sizes[key] = len(data)
        if key != "coffee-pad":  # its file is gone: its pairs cannot be checked
            (folder / f"{key}.jpg").write_bytes(data)
    table = pa.table(
        {
            "key": keys,
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.stack([vectors[k] for k in keys]).reshape(-1), pa.float32()), DIM
            ),
            "model_id": ["m"] * len(keys),
            "status": ["ok"] * len(keys),
            "error_message": pa.nulls(len(keys), pa.string()),
        },
        schema=embedding_schema(DIM),
    )
    write_parquet_atomic(root / "emb" / "part-00000.parquet", table, embedding_schema(DIM))
    records = pa.table(
        {
            "key": keys,
            "url": pa.nulls(len(keys), pa.string()),
            "sha256": pa.nulls(len(keys), pa.string()),
            "width": pa.array([images[k].width for k in keys], pa.int32()),
            "height": pa.array([images[k].height for k in keys], pa.int32()),
            "status": ["ok"] * len(keys),
            "error_message": pa.nulls(len(keys), pa.string()),
            "source_file": [str(folder / f"{k}.jpg") for k in keys],
            "source_offset": pa.array([0] * len(keys), pa.int64()),
            "source_size": pa.array([sizes[k] for k in keys], pa.int64()),
        },
        schema=IMAGE_RECORD_SCHEMA,
    )
    write_parquet_atomic(root / "records" / "part-00000.parquet", records, IMAGE_RECORD_SCHEMA)
    return root


def lvd_dedup(pool, name, *overrides, engine="local"):
    code = main(
        [
            "dedup",
            "--embeddings", str(pool / "emb"),
            "--records", str(pool / "records"),
            "--run", name,
            "--engine", engine,
            f"runs_dir={pool / 'runs'}",
            "dedup.score=cosine",
            f"dedup.threshold={THRESHOLD}",
            *overrides,
        ]
    )  # fmt: skip
    assert code == 0
    run = pool / "runs" / name
    components = pq.read_table(run / "dedup_copy").sort_by("key")
    kept = set(pq.read_table(run / "deduplicated_images", columns=["key"])["key"].to_pylist())
    stats = json.loads((run / "dedup_edges" / "_stats.json").read_text())
    return components, kept, stats


def test_the_pixels_merge_the_copies_the_descriptor_left_under_the_threshold(pool):
    _, kept_without, _ = lvd_dedup(pool, "descriptor_only", "dedup.verify=false")
    components, kept, stats = lvd_dedup(pool, "verified")  # the check is on by default
    # Without the check every image is its own group; with it each original absorbs its copies.
    assert kept_without == set(components["key"].to_pylist())
    assert kept == set(PICTURES) | {"coffee-pad"}  # coffee-pad's file is gone: not merged
    rows = {r["key"]: r for r in components.to_pylist()}
    for name in ORIGINALS:
        for edit in ("crop", "meme", "pad"):
            if f"{name}-{edit}" != "coffee-pad":
                assert rows[f"{name}-{edit}"]["representative_key"] == name
    # The look-alike distractor scored in the band too, and the pixels kept it apart.
    assert rows["china"]["keep"] and rows["china"]["representative_key"] == "china"
    checked = {
        (r["src_key"], r["dst_key"]): r
        for r in pq.read_table(pool / "runs" / "verified" / "dedup_checked").to_pylist()
    }
    assert checked["camera", "china"]["window_score"] < 0.9
    assert checked["coffee", "coffee-pad"]["status"] == "read_error"
    assert checked["coffee", "coffee-pad"]["window_score"] is None
    assert "coffee-pad" in checked["coffee", "coffee-pad"]["error_message"]
    # Every copy-original pair was in the band, and the ones with both files passed.
    band = {(o, f"{o}-{e}") for o in ORIGINALS for e in ("crop", "meme", "pad")}
    assert band <= set(checked)
    assert all(checked[p]["window_score"] >= 0.9 for p in band - {("coffee", "coffee-pad")})
    assert stats["pairs_checked"] == len(checked) >= 13
    assert stats["pairs_unreadable"] == sum(r["window_score"] is None for r in checked.values())
    assert stats["pairs_verified"] == sum(
        (r["window_score"] or -1) >= 0.9 for r in checked.values()
    )


def test_ray_and_spark_keep_what_the_in_process_check_keeps(pool, ray_runtime, spark_session):
    reference, kept, stats = lvd_dedup(pool, "verified_ref", "dedup.verify=true")
    on_ray, ray_kept, _ = lvd_dedup(
        pool, "verified_ray", "dedup.verify=true", "dedup.partitions=2", engine="ray"
    )
    on_spark, spark_kept, spark_stats = lvd_dedup(
        pool, "verified_spark", "dedup.verify=true", "dedup.partitions=2", engine="spark"
    )
    assert ray_kept == spark_kept == kept
    columns = ["key", "representative_key", "keep", "reason"]
    assert on_ray.select(columns).equals(reference.select(columns))
    assert on_spark.select(columns).equals(reference.select(columns))
    assert spark_stats["rows_out"] == stats["rows_out"]
