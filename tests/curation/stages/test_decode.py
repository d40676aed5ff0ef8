import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.imaging import ImageRejected, decode_rgb
from curation.stages.decode import DecodeConfig, DecodeStage
from schemas import ENCODED_IMAGE_SCHEMA, IMAGE_RECORD_SCHEMA, validate

EXPECTED_STATUS = {
    "corrupt": "decode_error",
    "empty": "empty",
    "not_an_image": "decode_error",
    "too_large": "rejected_too_large",
    "ok_convert": "ok",
    "ok_rotated": "ok",
}


def _batch(files: list[Path]) -> pa.Table:
    rows = []
    for file in files:
        data = file.read_bytes()
        rows.append(
            {
                "key": file.stem,
                "url": None,
                "image": data,
                "source_file": str(file),
                "source_offset": 0,
                "source_size": len(data),
            }
        )
    return pa.Table.from_pylist(rows, schema=ENCODED_IMAGE_SCHEMA)


def test_bad_files_get_the_status_the_ground_truth_expects(small_web):
    bad = small_web.read("bad").to_pylist()
    stage = DecodeStage()
    stage.setup()
    out = stage(_batch([small_web.root / row["file"] for row in bad]))
    validate(out, IMAGE_RECORD_SCHEMA)
    for row, result in zip(bad, out.to_pylist()):
        assert result["status"] == EXPECTED_STATUS[row["expected"]], (row, result)
        if result["status"] == "ok":
            assert (result["width"], result["height"]) == (row["width"], row["height"]), row
            assert result["error_message"] is None
        else:
            assert result["error_message"], row
            assert result["width"] is None
    empty = next(r for r in out.to_pylist() if r["status"] == "empty")
    assert empty["sha256"] is None


def test_pixel_limit_is_configurable(small_web):
    file = small_web.pool_dir / sorted(p.name for p in small_web.pool_dir.iterdir())[0]
    with Image.open(file) as image:
        pixels = image.width * image.height
    out = DecodeStage(DecodeConfig(max_pixels=pixels - 1))(_batch([file]))
    assert out.column("status").to_pylist() == ["rejected_too_large"]
    assert str(pixels) in out.column("error_message")[0].as_py()


def test_sixteen_bit_grey_keeps_its_dynamic_range():
    ramp = (np.arange(64 * 8, dtype=np.uint16).reshape(8, 64) * 128).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    rgb = np.asarray(decode_rgb(buffer.getvalue()))
    assert rgb.shape == (8, 64, 3)
    # A clipping conversion would saturate almost everything at 255.
    assert 100 < rgb[..., 0].mean() < 160
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    assert np.asarray(decode_rgb(buffer.getvalue()))[0, 0].tolist() == [255, 255, 255]


def test_rejections_carry_a_status():
    with pytest.raises(ImageRejected) as err:
        decode_rgb(b"")
    assert err.value.status == "empty"


def test_decompression_bomb_is_rejected_without_allocating(small_web):
    huge = next(r for r in small_web.read("bad").to_pylist() if r["expected"] == "too_large")
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from curation.imaging import decode_rgb, ImageRejected
        try:
            decode_rgb(Path({str(small_web.root / huge["file"])!r}).read_bytes())
        except ImageRejected as exc:
            print(exc.status)
        # VmHWM (kB) is this process's own peak: ru_maxrss would carry the parent's RSS over exec.
        print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    status, peak_kib = result.stdout.split()
    assert status == "rejected_too_large"
    assert 0 < int(peak_kib) < 1024 * 1024  # under 1 GiB (50000^2 grey pixels would be 2.3 GiB)


def _smooth_jpeg(width: int, height: int, **save) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=92, **save)
    return buffer.getvalue()


def test_reduced_jpeg_decode_keeps_at_least_the_requested_pixels():
    data = _smooth_jpeg(1280, 960)
    full = decode_rgb(data)
    reduced = decode_rgb(data, draft_size=(200, 200))
    assert full.size == (1280, 960)
    assert reduced.size == (320, 240)  # 1/4 scale: the largest that keeps both sides >= 200
    # After the resize a model applies anyway, the two decodes agree closely.
    a = np.asarray(full.resize((200, 200), Image.Resampling.BILINEAR), dtype=np.float32)
    b = np.asarray(reduced.resize((200, 200), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(a - b).mean() < 3.0


def test_reduced_decode_respects_exif_orientation_and_other_formats():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = decode_rgb(_smooth_jpeg(1200, 600, exif=exif.tobytes()), draft_size=(100, 100))
    assert rotated.size == (150, 300)  # 1/4 scale of 1200x600, then width and height swap
    buffer = io.BytesIO()
    Image.new("RGB", (800, 800), (10, 20, 30)).save(buffer, format="PNG")
    assert decode_rgb(buffer.getvalue(), draft_size=(100, 100)).size == (800, 800)
