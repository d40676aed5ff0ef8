"""The resized download profile (examples/profiles/download_resized.yaml): it loads as an overlay,
and a download of the synthetic web with it stores images whose longer side exceeds the profile's
side shrunk to it, the others byte for byte as served, with width/height that fit the bytes."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli import main
from curation.config import load_config
from curation.download.shards import STATUS_SUCCESS
from curation.jobs.config import CurationConfig
from curation.synth import SynthWebServer
from curation.synth.urls import build_url_list

PROFILE = Path(__file__).parents[3] / "examples" / "profiles" / "download_resized.yaml"
SIDE = 160  # inside the synthetic web's 96-256 px range: some images above it, some not
URLS = 30


def test_the_profile_loads_as_an_overlay_and_bounds_the_longer_side():
    download = load_config(CurationConfig, [PROFILE]).download
    assert download.resize_mode == "keep_ratio_largest"
    assert download.image_size == 800
    assert download.resize_only_if_bigger and download.skip_reencode
    assert download.encode_format == "jpg"
    # Everything else stays the default: the profile is only about stored image sizes.
    assert download.number_sample_per_shard == CurationConfig().download.number_sample_per_shard


def _stored_images(run: Path) -> dict[str, tuple[dict, bytes]]:
    """Each successful sample's record and the bytes its tar holds, by synthetic-web key."""
    samples = pq.read_table(run / "download").to_pylist()
    stored = {}
    for row in samples:
        if row["status"] != STATUS_SUCCESS:
            continue
        with tarfile.open(row["source_file"]) as tar:
            data = tar.extractfile(row["source_member"]).read()
        stored[Path(row["url"]).stem] = (row, data)
    return stored


@pytest.mark.timeout(120)
def test_a_download_with_the_profile_shrinks_only_images_above_its_side(small_web, tmp_path):
    pool = {row["key"]: row["file"] for row in small_web.read("pool").to_pylist()}
    with SynthWebServer(small_web.root) as server:
        urls = build_url_list(small_web, server, include_bad=False, slow=False).to_pylist()
        urls = [row for row in urls if row["expected"] == "ok" and row["expected_key"] in pool]
        with open(tmp_path / "urls.jsonl", "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in urls[:URLS])
        argv = [
            "download",
            "--config",
            str(PROFILE),
            "--url-list",
            str(tmp_path / "urls.jsonl"),
            "--allow-private-networks",
            "--run",
            "resized",
            f"runs_dir={tmp_path}",
            f"download.image_size={SIDE}",
            "download.processes_count=1",
            "download.thread_count=8",
            "download.timeout=10",
        ]
        assert main(argv) == 0
    stored = _stored_images(tmp_path / "resized")
    assert len(stored) == URLS
    shrunk = kept = 0
    for key, (row, data) in stored.items():
        served = (small_web.root / pool[key]).read_bytes()
        with Image.open(io.BytesIO(served)) as image:
            original = image.size
        with Image.open(io.BytesIO(data)) as image:
            size, kind = image.size, image.format
        assert (row["width"], row["height"]) == size  # the record describes the stored bytes
        assert (row["original_width"], row["original_height"]) == original
        # img2dataset hashes the served bytes (what verify_sha256_col checks); ingest hashes
        # the stored ones again.
        assert row["sha256"] == hashlib.sha256(served).hexdigest()
        if max(original) > SIDE:
            shrunk += 1
            assert max(size) == SIDE and kind == "JPEG"
            # Aspect ratio kept, to the rounding of the shorter side.
            scale = SIDE / max(original)
            assert abs(min(size) - min(original) * scale) <= 1
        else:
            kept += 1
            assert data == served  # resize_only_if_bigger and skip_reencode: untouched
    assert shrunk and kept  # both branches were exercised
