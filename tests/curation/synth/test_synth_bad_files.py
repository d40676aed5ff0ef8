from __future__ import annotations

import warnings

import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.synth import SynthWeb

EXPECTED = {
    "bad-truncated": "corrupt",
    "bad-empty": "empty",
    "bad-html": "not_an_image",
    "bad-huge": "too_large",
    "bad-cmyk": "ok_convert",
    "bad-gray16": "ok_convert",
    "bad-exif-rotated": "ok_rotated",
    "bad-gif": "ok_convert",
}


@pytest.fixture(scope="module")
def bad(small_synth_web: SynthWeb) -> dict[str, dict]:
    return {row["key"]: row for row in small_synth_web.read("bad").to_pylist()}


def path_of(web: SynthWeb, row: dict):
    return web.root / row["file"]


def test_bad_table(small_synth_web: SynthWeb, bad: dict[str, dict]) -> None:
    assert {k: r["expected"] for k, r in bad.items()} == EXPECTED
    for row in bad.values():
        assert path_of(small_synth_web, row).exists()
        assert row["file"].startswith("images/bad/")
        assert row["note"]


def test_truncated_jpeg_fails_on_load(small_synth_web: SynthWeb, bad: dict[str, dict]) -> None:
    with Image.open(path_of(small_synth_web, bad["bad-truncated"])) as img:
        assert img.format == "JPEG"  # the header is fine ...
        with pytest.raises(OSError, match="truncated"):
            img.load()  # ... the pixels are not


@pytest.mark.parametrize("key", ["bad-empty", "bad-html"])
def test_empty_and_html_are_not_images(
    small_synth_web: SynthWeb, bad: dict[str, dict], key: str
) -> None:
    path = path_of(small_synth_web, bad[key])
    assert path.suffix == ".jpg"
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)
    if key == "bad-empty":
        assert path.stat().st_size == 0
    else:
        assert path.read_bytes().lstrip().lower().startswith(b"<!doctype html")


def test_huge_png_trips_the_pixel_limit_without_allocating(
    small_synth_web: SynthWeb, bad: dict[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = path_of(small_synth_web, bad["bad-huge"])
    assert path.stat().st_size < 4096
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Pillow's default limit refuses it at open time (pixels > 2 x MAX_IMAGE_PIXELS) ...
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    # ... and with the limit lifted it parses as a well-formed 50000 x 50000 header.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(path) as img:
        assert img.size == (50_000, 50_000) and img.format == "PNG"
    # A tighter explicit limit also catches it, as a warning turned error.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises((Image.DecompressionBombError, Image.DecompressionBombWarning)):
            Image.open(path)


@pytest.mark.parametrize(
    "key, mode", [("bad-cmyk", "CMYK"), ("bad-gray16", "I;16"), ("bad-gif", "P")]
)
def test_unusual_modes_convert_to_rgb(
    small_synth_web: SynthWeb, bad: dict[str, dict], key: str, mode: str
) -> None:
    row = bad[key]
    with Image.open(path_of(small_synth_web, row)) as img:
        assert img.mode == mode
        if key == "bad-gif":
            assert getattr(img, "n_frames", 1) == 2
        rgb = img.convert("RGB")
    assert rgb.mode == "RGB"
    assert rgb.size == (row["width"], row["height"])


def test_exif_rotated_jpeg_swaps_sides(small_synth_web: SynthWeb, bad: dict[str, dict]) -> None:
    row = bad["bad-exif-rotated"]
    with Image.open(path_of(small_synth_web, row)) as img:
        assert img.getexif().get(0x0112) == 6
        stored = img.size
        upright = ImageOps.exif_transpose(img)
    assert upright.size == (stored[1], stored[0]) == (row["width"], row["height"])
    assert row["width"] < row["height"]
