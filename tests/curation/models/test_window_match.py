"""Pixel verification of copy pairs (curation/models/window_match.py) and its stage, on real pictures."""

from __future__ import annotations

import io
from itertools import combinations

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageOps

from curation.models.window_match import prepare, prepare_bytes, window_score
from curation.stages.verify_pairs import VerifyPairsStage
from schemas import PAIR_CHECK_SCHEMA, STATUS_OK

NAMES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "china", "flower", "horse")


@pytest.fixture(scope="module")
def photos(require) -> dict[str, Image.Image]:
    require("skimage")
    require("sklearn")
    from curation.eval.real_images import real_pictures

    return {p.name: Image.fromarray(p.image) for p in real_pictures(NAMES)}


def _jpeg(image: Image.Image, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _reread(image: Image.Image, quality: int = 75) -> Image.Image:
    return Image.open(io.BytesIO(_jpeg(image, quality))).convert("RGB")


def _crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = image.size
    return image.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))


def _meme(image: Image.Image) -> Image.Image:
    """The picture under a white band of black text, as a meme template does."""
    w, h = image.size
    canvas = Image.new("RGB", (w, int(h * 1.35)), (255, 255, 255))
    canvas.paste(image, (0, int(h * 0.35)))
    draw = ImageDraw.Draw(canvas)
    for row in range(3):
        draw.rectangle((20, 12 + row * h // 10, w - 40, 12 + row * h // 10 + h // 20), fill=0)
    return canvas


def _screenshot(image: Image.Image) -> Image.Image:
    """The picture small in a phone screenshot whose chrome (text lines, icons) is most of it."""
    rng = np.random.default_rng(0)  # the same chrome for every picture: one template
    canvas = Image.new("RGB", (240, 480), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    for y in range(10, 470, 14):
        if 150 <= y < 300:
            continue
        x = 10
        while x < 220:
            width = int(rng.integers(8, 40))
            draw.rectangle((x, y, min(x + width, 230), y + 7), fill=(30, 30, 30))
            x += width + int(rng.integers(4, 10))
    picture = image.resize((round(140 * image.width / image.height), 140))
    canvas.paste(picture, ((240 - picture.width) // 2, 155))
    return canvas


def _pasted(image: Image.Image, background: Image.Image) -> Image.Image:
    """The picture shrunk and pasted onto another picture."""
    canvas = background.resize((int(image.width * 1.5), int(image.height * 1.5)))
    small = image.resize((int(image.width * 0.9), int(image.height * 0.9)))
    canvas.paste(small, (canvas.width // 10, canvas.height // 8))
    return canvas


def test_copies_that_keep_a_window_of_the_picture_score_high(photos):
    original = prepare(photos["astronaut"])
    copies = {
        "crop": _crop(photos["astronaut"], (0.1, 0.2, 0.85, 0.9)),
        "mirrored crop": ImageOps.mirror(_crop(photos["astronaut"], (0.3, 0.0, 1.0, 0.75))),
        "darker crop": _crop(photos["astronaut"].point(lambda v: v * 0.7), (0, 0, 0.8, 0.8)),
        "meme": _meme(photos["astronaut"]),
        "pasted": _pasted(photos["astronaut"], photos["coffee"]),
        "padded crop": ImageOps.expand(
            _crop(photos["astronaut"], (0.2, 0.2, 1.0, 0.9)),
            border=(40, 90, 10, 0),
            fill=(255, 0, 0),
        ),
    }
    for name, copy in copies.items():
        score = window_score(original, prepare(_reread(copy)))
        assert score >= 0.9, (name, score)


def test_a_mirrored_copy_needs_the_mirror_search(photos):
    original = prepare(photos["chelsea"])
    mirrored = prepare(_reread(ImageOps.mirror(_crop(photos["chelsea"], (0.0, 0.1, 0.75, 0.9)))))
    assert window_score(original, mirrored) >= 0.9
    assert window_score(original, mirrored, mirror=False) < 0.8


def test_copies_with_the_same_framing_are_left_to_the_descriptor(photos):
    # A pad (cropped away with the borders) or a recompression is the whole of the other image:
    # no strict window, so no score; two different pictures in one frame template would match
    # whole-to-whole on the frame, which is why whole-to-whole matches do not count.
    original = prepare(photos["astronaut"])
    padded = ImageOps.expand(photos["astronaut"], border=(40, 90, 10, 0), fill=(255, 0, 0))
    assert window_score(original, prepare(_reread(padded))) < 0.9
    assert window_score(original, prepare(_reread(photos["astronaut"], 30))) < 0.9
    framed = [_screenshot(photos[name]) for name in ("camera", "rocket")]
    assert window_score(prepare(framed[0]), prepare(framed[1])) < 0.8
    # ...while the picture is still found inside its own screenshot.
    assert window_score(prepare(photos["camera"]), prepare(_reread(framed[0]))) >= 0.9


def test_different_pictures_score_low(photos):
    prepared = {name: prepare(_reread(image)) for name, image in photos.items()}
    for a, b in combinations(NAMES, 2):
        score = window_score(prepared[a], prepared[b])
        assert score < 0.8, (a, b, score)


def test_a_plain_image_matches_nothing(photos):
    plain = prepare(Image.new("RGB", (300, 200), (120, 130, 140)))
    # The plain image is too flat to be a template, and no window of it has the photo's contrast.
    assert window_score(plain, prepare(photos["camera"])) == -1.0
    sky = Image.new("RGB", (300, 200), (90, 140, 220))
    assert window_score(prepare(sky), prepare(_pasted(photos["camera"], sky))) == -1.0


def _check_row(a: str, b: str, a_loc, b_loc) -> dict:
    return {
        "src_key": a,
        "dst_key": b,
        "similarity": 0.8,
        "score": 0.8,
        "src_file": a_loc[0],
        "src_offset": a_loc[1],
        "src_size": a_loc[2],
        "dst_file": b_loc[0],
        "dst_offset": b_loc[1],
        "dst_size": b_loc[2],
        "window_score": None,
        "status": "unchecked",
        "error_message": None,
    }


def test_the_stage_scores_pairs_from_their_bytes_and_reports_unreadable_ones(photos, tmp_path):
    # Two images in one tar-like file at offsets, a corrupt file, a missing one.
    original = _jpeg(photos["horse"])
    crop = _jpeg(_crop(photos["horse"], (0.2, 0.1, 0.9, 0.8)))
    other = _jpeg(photos["rocket"])
    blob = tmp_path / "images.bin"
    blob.write_bytes(b"x" * 100 + original + crop + other)
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    at = {
        "a": (str(blob), 100, len(original)),
        "b": (str(blob), 100 + len(original), len(crop)),
        "c": (str(blob), 100 + len(original) + len(crop), len(other)),
        "d": (str(tmp_path / "bad.jpg"), 0, 19),
        "e": (str(tmp_path / "gone.jpg"), 0, 10),
    }
    pairs = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "e")]
    batch = pa.Table.from_pylist(
        [_check_row(x, y, at[x], at[y]) for x, y in pairs], schema=PAIR_CHECK_SCHEMA
    )
    out = VerifyPairsStage()(batch).to_pylist()
    got = {(r["src_key"], r["dst_key"]): r for r in out}
    assert got["a", "b"]["status"] == STATUS_OK and got["a", "b"]["window_score"] >= 0.9
    assert got["a", "c"]["status"] == STATUS_OK and got["a", "c"]["window_score"] < 0.75
    assert got["b", "d"]["status"] == "decode_error" and got["b", "d"]["window_score"] is None
    assert got["c", "e"]["status"] == "read_error" and got["c", "e"]["window_score"] is None
    assert "gone.jpg" in got["c", "e"]["error_message"]
    # The same score from bytes as from the decoded picture.
    direct = window_score(prepare_bytes(original), prepare_bytes(crop))
    assert got["a", "b"]["window_score"] == pytest.approx(direct, abs=1e-6)
    assert np.isfinite([r["window_score"] for r in out if r["window_score"] is not None]).all()
