"""The header-only tar index agrees with the standard library on every header flavour."""

from __future__ import annotations

import io
import tarfile

import pytest

from curation.readers.tar_index import TarIndexError, tar_index, tar_members
from curation.safe_names import UnsafeNameError


def _write(path, members, fmt):
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data, mtime in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_index_matches_tarfile(tmp_path, fmt):
    long_name = "k" * 150 + ".jpg"  # beyond ustar's 100 bytes: pax path / GNU longname / prefix
    members = [
        ("000001.jpg", b"\xff\xd8" + b"x" * 1000, 1.5),  # a float mtime makes a pax header
        ("000001.json", b"{}", 7),
        ("000002.txt", b"", 7),
        ("d" * 120 + "/000003.jpg" if fmt == tarfile.USTAR_FORMAT else long_name, b"y" * 513, 7),
    ]
    path = tmp_path / "shard.tar"
    _write(path, members, fmt)
    with tarfile.open(path) as tar:
        expected = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
    assert tar_index(path) == expected
    with open(path, "rb") as fh:
        for name, (offset, size) in tar_index(path).items():
            fh.seek(offset)
            assert fh.read(size) == next(d for n, d, _ in members if n == name)


def test_tar_index_rejects_what_is_not_a_tar_and_members_with_paths(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(TarIndexError):
        tar_index(tmp_path / "junk.tar")
    (tmp_path / "empty.tar").write_bytes(b"")
    assert tar_index(tmp_path / "empty.tar") == {}
    _write(tmp_path / "escape.tar", [("../evil.jpg", b"x", 1)], tarfile.PAX_FORMAT)
    with pytest.raises(UnsafeNameError):
        tar_members(tmp_path / "escape.tar")
