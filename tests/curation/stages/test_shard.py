"""The shard stage's parts: the seeded shuffle, the samples it readies (bytes kept, formats found,
large images re-encoded, failures as rows) and the two shard writers."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.config import ConfigError, from_dict
from curation.readers.image_bytes import resolve_lineage
from curation.stages.shard import (
    ShardConfig,
    ShardSampleStage,
    cut_shards,
    ready_samples,
    shuffled_order,
    write_parquet,
    write_tar,
)
from schemas import LVD_SAMPLE_SCHEMA, PREPARED_SAMPLE_SCHEMA, SHARD_INDEX_SCHEMA, validate
from tests.shard_sources import image_bytes, write_sources


@pytest.fixture
def sources(tmp_path):
    table, expected = write_sources(tmp_path)
    return resolve_lineage(table, tmp_path), expected


def _prepare(table: pa.Table, **config) -> pa.Table:
    stage = ShardSampleStage(ShardConfig(**config))
    stage.setup()
    out = stage(table)
    validate(out, PREPARED_SAMPLE_SCHEMA)
    return out


def test_config_rejects_bad_values_in_one_line():
    for bad in (
        {"format": "zip"},
        {"samples_per_shard": 0},
        {"max_side": 0},
        {"jpeg_quality": 100},
        {"row_group_size": 0},
    ):
        with pytest.raises(ConfigError) as info:
            from_dict(ShardConfig, bad)
        assert "\n" not in str(info.value)
        assert next(iter(bad)) in str(info.value)
    assert from_dict(ShardConfig, {"format": "parquet", "max_side": 512}).max_side == 512


def test_shuffle_is_a_permutation_fixed_by_seed_not_by_input_order():
    keys = [f"k{i:03d}" for i in range(50)]
    order = shuffled_order(pa.array(keys), seed=3)
    assert sorted(order.tolist()) == list(range(50))
    assert order.tolist() != list(range(50))
    shuffled_keys = [keys[i] for i in order]
    reversed_keys = keys[::-1]
    again = [reversed_keys[i] for i in shuffled_order(pa.array(reversed_keys), seed=3)]
    assert again == shuffled_keys  # same keys, any input order: same shuffle
    other = [keys[i] for i in shuffled_order(pa.array(keys), seed=4)]
    assert other != shuffled_keys
    pieces = cut_shards(order, 16)
    assert [len(p) for p in pieces] == [16, 16, 16, 2]
    assert np.concatenate(pieces).tolist() == order.tolist()


def test_samples_keep_the_source_bytes_and_find_the_real_format(sources):
    table, expected = sources
    out = _prepare(table)
    assert set(out.column("status").to_pylist()) == {"ok"}
    by_key = {row["key"]: row for row in out.to_pylist()}
    assert set(by_key) == set(expected)
    for key, data in expected.items():
        row = by_key[key]
        assert row["image"] == data, key
        assert row["sha256"] == row["source_sha256"] == hashlib.sha256(data).hexdigest()
        assert row["extension"] == Image.open(io.BytesIO(data)).format.lower().replace(
            "jpeg", "jpg"
        )
    # Lineage and provenance go through unchanged, in the batch's order.
    assert out.column("key").to_pylist() == table.column("key").to_pylist()
    assert out.column("url").to_pylist() == table.column("url").to_pylist()
    assert out.column("seed_dataset").to_pylist() == table.column("seed_dataset").to_pylist()


def test_reencoding_caps_the_long_side_and_leaves_small_images_alone(tmp_path):
    big, _, _, _ = image_bytes(1, size=(200, 120))  # a PNG
    small, _, width, height = image_bytes(2)
    table, _ = write_sources(tmp_path, n_tar=0, n_parquet=0, n_inline=2)
    rows = table.to_pylist()
    rows[0].update(image=big, sha256=hashlib.sha256(big).hexdigest(), width=200, height=120)
    rows[1].update(
        image=small, sha256=hashlib.sha256(small).hexdigest(), width=width, height=height
    )
    out = _prepare(pa.Table.from_pylist(rows, schema=table.schema), max_side=64).to_pylist()
    resized = Image.open(io.BytesIO(out[0]["image"]))
    assert resized.format == "JPEG" and max(resized.size) == 64
    assert (out[0]["width"], out[0]["height"]) == resized.size == (64, 38)
    assert out[0]["extension"] == "jpg"
    assert out[0]["sha256"] == hashlib.sha256(out[0]["image"]).hexdigest()
    assert out[0]["source_sha256"] == hashlib.sha256(big).hexdigest()
    assert out[1]["image"] == small and (out[1]["width"], out[1]["height"]) == (width, height)


def test_failures_are_rows_with_a_status(sources):
    table, _ = sources
    rows = table.to_pylist()
    rows[0]["sha256"] = "0" * 64  # the bytes found are not the record's image
    rows[1]["source_offset"] += 1_000_000  # past the end of the tar
    rows[2]["key"] = "pool.dotted"  # cannot group in a WebDataset
    rows[3]["key"] = "../escape"
    rows[4].update(source_file=None, image=b"not an image at all", sha256=None)
    out = _prepare(pa.Table.from_pylist(rows, schema=table.schema))
    statuses = out.column("status").to_pylist()
    assert statuses[:5] == [
        "sha256_mismatch",
        "read_error",
        "unsafe_key",
        "unsafe_key",
        "decode_error",
    ]
    assert set(statuses[5:]) == {"ok"}
    assert all(out.column("error_message").to_pylist()[:5])
    assert out.column("image").to_pylist()[:5] == [None] * 5
    samples, dropped = ready_samples(out)
    validate(samples, LVD_SAMPLE_SCHEMA)
    assert samples.num_rows == table.num_rows - 5
    assert dropped == {
        "dropped_sha256_mismatch": 1,
        "dropped_read_error": 1,
        "dropped_unsafe_key": 2,
        "dropped_decode_error": 1,
    }
    # A dot is fine in a Parquet shard.
    parquet = _prepare(pa.Table.from_pylist(rows[2:3], schema=table.schema), format="parquet")
    assert parquet.column("status").to_pylist() == ["ok"]


def test_tar_members_and_index_locate_every_image(sources):
    samples, _ = ready_samples(_prepare(sources[0]))
    buffer = io.BytesIO()
    index = write_tar(samples, "shard-00007.tar", buffer)
    validate(index, SHARD_INDEX_SCHEMA)
    data = buffer.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert len(members) == 2 * samples.num_rows
    for row, sample in zip(index.to_pylist(), samples.to_pylist()):
        assert row["shard"] == "shard-00007.tar"
        assert row["member"] == f"{sample['key']}.{sample['extension']}"
        assert members[row["member"]].offset_data == row["offset"]
        assert data[row["offset"] : row["offset"] + row["size"]] == sample["image"]
        assert row["sha256"] == hashlib.sha256(sample["image"]).hexdigest()
        assert f"{sample['key']}.json" in members
    again = io.BytesIO()
    write_tar(samples, "shard-00007.tar", again)
    assert again.getvalue() == data  # no time or owner in the headers: reruns rewrite the same


def test_parquet_shard_has_row_groups_of_the_configured_size(sources):
    samples, _ = ready_samples(_prepare(sources[0]))
    buffer = io.BytesIO()
    write_parquet(samples, buffer, row_group_size=4)
    shard = pq.ParquetFile(io.BytesIO(buffer.getvalue()))
    sizes = [shard.metadata.row_group(i).num_rows for i in range(shard.num_row_groups)]
    assert sizes == [4, 4, 4, 2]
    table = shard.read()
    validate(table, LVD_SAMPLE_SCHEMA)
    assert table.column("image").to_pylist() == samples.column("image").to_pylist()
