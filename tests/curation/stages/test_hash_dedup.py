"""Exact (sha256) and near-exact (perceptual hash) dedup, scored against the synthetic ground truth."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.ingest import run_ingest
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.stages.exact_dedup import exact_duplicates
from curation.stages.near_dedup import (
    close_pairs,
    hash_codes,
    near_dedup_component_stats,
    near_duplicates,
)
from curation.stages.phash import hamming, phash_bytes
from curation.synth.transforms import NEAR_EXACT_TRANSFORMS
from schemas import HASH_DEDUP_SCHEMA, validate


def test_exact_dedup_keeps_the_first_key_and_names_it():
    table = pa.table(
        {
            "key": ["c", "a", "b", "d", "e"],
            "sha256": ["h1", "h1", "h2", "h1", None],
        }
    )
    result = exact_duplicates(table)
    validate(result, HASH_DEDUP_SCHEMA)
    rows = {r["key"]: r for r in result.to_pylist()}
    assert [k for k, r in rows.items() if r["keep"]] == ["a", "b", "e"]
    assert rows["c"]["duplicate_of"] == rows["d"]["duplicate_of"] == "a"
    assert rows["c"]["reason"] == "exact_duplicate" and rows["c"]["hamming_distance"] == 0


def _chain_table() -> pa.Table:
    base = 0x0F0F_0F0F_0F0F_0F0F
    # b is 3 bits from a; c is 3 bits from b and 6 from a; d and e are far from all.
    hashes = [base, base ^ 0b111, base ^ 0b111 ^ (0b111 << 20), ~base, base ^ (0xFF << 8)]
    return pa.table({"key": list("abcde"), "phash": pa.array(hashes, pa.int64())})


def test_near_dedup_without_the_guard_links_within_the_distance_transitively():
    rows = {
        r["key"]: r
        for r in near_duplicates(_chain_table(), max_distance=4, guard=False).to_pylist()
    }
    assert [k for k, r in rows.items() if r["keep"]] == ["a", "d", "e"]
    assert rows["b"]["duplicate_of"] == "a" and rows["b"]["hamming_distance"] == 3
    # c is linked to a through b although 6 bits from it.
    assert rows["c"]["duplicate_of"] == "a" and rows["c"]["hamming_distance"] == 6


def test_near_dedup_guard_keeps_an_image_out_of_reach_of_the_kept_one():
    result = near_duplicates(_chain_table(), max_distance=4)  # the guard is the default
    validate(result, HASH_DEDUP_SCHEMA)
    rows = {r["key"]: r for r in result.to_pylist()}
    assert rows["b"]["duplicate_of"] == "a" and rows["b"]["hamming_distance"] == 3
    # b was taken by a, so c (6 bits from a) starts its own group instead of chaining.
    assert rows["c"]["keep"] and rows["c"]["duplicate_of"] is None
    assert [k for k, r in rows.items() if r["keep"]] == ["a", "c", "d", "e"]
    dropped = [r for r in rows.values() if not r["keep"]]
    assert all(r["hamming_distance"] <= 4 for r in dropped)


def test_component_stats_name_the_largest_groups():
    result = near_duplicates(_chain_table(), max_distance=4, guard=False)
    stats = near_dedup_component_stats(result)
    assert stats["images"] == 5 and stats["components"] == 3
    assert stats["size_histogram"] == {"1": 2, "3": 1}
    assert stats["largest"] == [["a", "b", "c"]]
    guarded = near_dedup_component_stats(near_duplicates(_chain_table(), max_distance=4))
    assert guarded["size_histogram"] == {"1": 3, "2": 1} and guarded["largest"] == [["a", "b"]]


def test_multi_hash_index_finds_exactly_the_pairs_the_flat_index_finds():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(4000, 8), dtype=np.uint8)
    for i in range(0, 400, 2):  # plant pairs at distance <= 7
        flips = rng.choice(64, size=int(rng.integers(0, 8)), replace=False)
        bits = np.unpackbits(codes[i])
        bits[flips] ^= 1
        codes[i + 1] = np.packbits(bits)
    flat = close_pairs(codes, 7, multi_hash=False)
    multi = close_pairs(codes, 7, multi_hash=True)
    assert len(flat) >= 200
    assert sorted(map(tuple, flat.tolist())) == sorted(map(tuple, multi.tolist()))


def test_phash_survives_reencoding_and_resizing_but_not_a_different_image(small_web):
    pool = small_web.read("pool").to_pylist()
    data = {r["key"]: (small_web.root / r["file"]).read_bytes() for r in pool}
    original = next(r for r in pool if r["kind"] == "original")
    image = Image.open(io.BytesIO(data[original["key"]]))
    reference = phash_bytes(data[original["key"]])
    for quality in (30, 60):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        assert hamming(phash_bytes(buffer.getvalue()), reference) <= 6
    buffer = io.BytesIO()
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(buffer, format="PNG")
    assert hamming(phash_bytes(buffer.getvalue()), reference) <= 6
    others = [phash_bytes(data[r["key"]]) for r in pool if r["kind"] == "original"][1:]
    assert min(hamming(reference, other) for other in others) > 6
    assert hash_codes(np.array([reference])).shape == (1, 8)


@pytest.fixture(scope="module")
def deduplicated(small_web, tmp_path_factory):
    """The served pool ingested and deduplicated: keys are the pool's ground-truth keys."""
    root = tmp_path_factory.mktemp("dedup")
    shards = write_encoded_shards(
        list_image_files(small_web.pool_dir), root / "in", rows_per_shard=64
    )
    cfg = CurationConfig(name="pool", runs_dir=root)
    run_ingest(cfg, get_engine("local", progress=False), shards)
    exact = pq.read_table(cfg.run_dir.stage("dedup_exact").path / "part-00000.parquet")
    near = pq.read_table(cfg.run_dir.stage("dedup_near").path / "part-00000.parquet")
    return exact, near


def _family(pool):
    """Each pool key's original (eval copies belong to their eval image, outside the pool)."""
    return {
        r["key"]: r["source_key"]
        if r["kind"] in ("near_duplicate", "exact_duplicate")
        else r["key"]
        for r in pool
    }


def test_precision_and_recall_against_the_synthetic_ground_truth(small_web, deduplicated):
    exact, near = deduplicated
    pool = small_web.read("pool").to_pylist()
    family = _family(pool)
    representative = {}
    for table in (exact, near):
        for row in table.to_pylist():
            if not row["keep"]:
                representative[row["key"]] = row["duplicate_of"]

    def group(key):
        while key in representative:
            key = representative[key]
        return key

    dropped = list(representative)
    true_drops = [k for k in dropped if family[k] == family[representative[k]]]
    precision = len(true_drops) / len(dropped)
    figures = {}
    for kinds, transforms, label in (
        (("exact_duplicate",), ("exact",), "exact copies"),
        (("near_duplicate",), NEAR_EXACT_TRANSFORMS, "re-encodes and small resizes"),
        (("near_duplicate",), None, "all planted near duplicates"),
    ):
        planted = [
            r
            for r in pool
            if r["kind"] in kinds and (transforms is None or r["transform"] in transforms)
        ]
        found = [r for r in planted if group(r["key"]) == group(r["source_key"])]
        figures[label] = (len(found), len(planted))
    print(
        f"\nhash dedup on the synthetic pool: precision {precision:.3f} ({len(true_drops)}/{len(dropped)})"
    )
    for label, (found, planted) in figures.items():
        print(f"  recall, {label}: {found / planted:.3f} ({found}/{planted})")
    assert precision == 1.0
    assert figures["exact copies"][0] == figures["exact copies"][1]
    found, planted = figures["re-encodes and small resizes"]
    assert planted >= 5 and found == planted
