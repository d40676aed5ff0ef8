"""Loaders find an image's bytes wherever a record says they live: inline, a byte range, a row."""

import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.readers.image_bytes import ImageBytesError, image_bytes_loaders

ROWS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("image", pa.binary()),
        ("source_file", pa.string()),
        ("source_offset", pa.int64()),
        ("source_size", pa.int64()),
    ]
)


def test_inline_range_and_parquet_row_bytes(tmp_path):
    stored_file = tmp_path / "00000.tar"
    stored_file.write_bytes(b"headerTARBYTEStrailer")
    rows_file = tmp_path / "00000.parquet"  # what img2dataset's parquet output holds
    pq.write_table(pa.table({"key": ["p1", "p2"], "jpg": [b"ROW-ONE", b"ROW-TWO"]}), rows_file)
    table = pa.Table.from_pylist(
        [
            {"key": "i", "image": b"INLINE", "source_file": None},
            {"key": "t", "source_file": str(stored_file), "source_offset": 6, "source_size": 8},
            {"key": "p2", "source_file": str(rows_file), "source_offset": None},
            {"key": "p1", "source_file": str(rows_file), "source_offset": None},
            {"key": "gone", "source_file": str(rows_file), "source_offset": None},
        ],
        schema=ROWS_SCHEMA,
    )
    loaders = image_bytes_loaders(table)
    # Decode workers are processes: every loader must survive pickling.
    loaders = [pickle.loads(pickle.dumps(loader)) for loader in loaders]
    assert [loader() for loader in loaders[:4]] == [b"INLINE", b"TARBYTES", b"ROW-TWO", b"ROW-ONE"]
    with pytest.raises(ImageBytesError, match="gone: no image bytes"):
        loaders[4]()


def test_short_range_is_a_read_error(tmp_path):
    stored_file = tmp_path / "short.tar"
    stored_file.write_bytes(b"abc")
    table = pa.Table.from_pylist(
        [{"key": "t", "source_file": str(stored_file), "source_offset": 1, "source_size": 10}],
        schema=ROWS_SCHEMA,
    )
    with pytest.raises(OSError, match="wanted 10 bytes at offset 1, got 2"):
        image_bytes_loaders(table)[0]()
