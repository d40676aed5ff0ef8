"""The real-image copy set: licensed pictures from installed packages, seeded DISC21-style copies
that change the pixels but keep the picture, and look-alikes that are different pictures."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

pytest.importorskip("skimage", reason="the real pictures ship with scikit-image (the dev extra)")

from curation.eval import real_images  # noqa: E402
from curation.eval.copy_edits import (  # noqa: E402
    EDITS,
    TIERS,
    EditContext,
    _perspective_coefficients,
    apply_edit,
    build_real_copy_set,
    copy_pairs,
    draw_edit,
    fit_box,
    lookalike_pairs,
    make_templates,
)
from curation.eval.real_images import (  # noqa: E402
    CATALOGUE,
    RealImagesUnavailable,
    real_pictures,
)

LICENCES = {"public-domain", "CC0-1.0", "CC-BY-2.0", "no-known-restrictions"}


@pytest.fixture(scope="module")
def pictures():
    return real_pictures()


@pytest.fixture(scope="module")
def copy_set(tmp_path_factory, pictures):
    return build_real_copy_set(
        tmp_path_factory.mktemp("real") / "set", seed=0, n_copies_per_picture=3, sources=pictures
    )


def _grey(image) -> np.ndarray:
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    return np.asarray(image.convert("L"), dtype=np.float64)


def _correlation(a, b) -> float:
    a, b = _grey(a).ravel(), _grey(b).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_every_picture_has_a_source_file_and_a_licence(pictures):
    assert [p.name for p in pictures] == [e.name for e in CATALOGUE]
    assert len(pictures) >= 15
    for picture, entry in zip(pictures, CATALOGUE):
        assert picture.licence in LICENCES, picture.name
        assert len(picture.statement) > 20 and picture.stated_in
        folder = real_images.package_folder(entry.package)
        assert (folder / entry.file).is_file()
        assert picture.image.dtype == np.uint8 and picture.image.shape[2] == 3
        assert picture.image.std() > 5, f"{picture.name} is blank"


def test_the_set_records_each_pictures_licence(copy_set):
    table = copy_set.pictures.to_pylist()
    assert {row["licence"] for row in table} <= LICENCES
    assert all(row["statement"] and row["source"] for row in table)
    in_set = set(copy_set.ground_truth.column("picture_id").to_pylist())
    assert in_set == {row["picture_id"] for row in table}


def test_a_missing_package_names_what_to_install(monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "skimage" else found(name, *a),
    )
    with pytest.raises(RealImagesUnavailable, match="pip install scikit-image"):
        real_pictures()


def test_same_seed_same_bytes(tmp_path, pictures):
    built = [
        build_real_copy_set(tmp_path / name, seed=seed, n_copies_per_picture=2, sources=pictures)
        for name, seed in (("a", 5), ("b", 5), ("c", 6))
    ]
    files = [sorted(p.relative_to(s.root) for p in s.root.rglob("*") if p.is_file()) for s in built]
    assert files[0] == files[1]
    for name in files[0]:
        assert (built[0].root / name).read_bytes() == (built[1].root / name).read_bytes(), name
    assert built[0].ground_truth.equals(pq.read_table(built[1].root / "ground_truth.parquet"))
    assert built[0].ground_truth.column("key") != built[2].ground_truth.column("key")


def test_every_copy_changes_the_pixels_at_every_tier(copy_set):
    rows = copy_set.ground_truth.to_pylist()
    unedited = {r["picture_id"]: r for r in rows if r["kind"] in ("original", "distractor")}
    seen, changed_same_size = set(), 0
    for row in rows:
        if row["kind"] != "copy":
            continue
        seen.add(row["tier"])
        copy = Image.open(copy_set.path(row["key"])).convert("RGB")
        original = Image.open(copy_set.path(unedited[row["picture_id"]]["key"])).convert("RGB")
        if copy.size != original.size:
            continue  # resized, cropped, padded, rotated or framed: changed
        difference = np.abs(np.asarray(copy, np.float64) - np.asarray(original, np.float64))
        # The worst 1% of pixels moved visibly (a flat drawing keeps most pixels under JPEG).
        assert np.percentile(difference, 99) > 8, f"{row['edit']} left {row['key']} unchanged"
        changed_same_size += 1
    assert seen == set(TIERS) and changed_same_size >= 5


@pytest.mark.parametrize("name", EDITS)
def test_each_edit_keeps_the_picture(name, pictures):
    """Undo what the recorded parameters say the edit did, and find the picture again."""
    ctx = EditContext(
        templates=make_templates(np.random.default_rng(0), 2, 2),
        backgrounds=[p.image for p in pictures if p.name == "brick"],
    )
    for picture in (p for p in pictures if p.name in ("astronaut", "coffee", "camera")):
        original = Image.fromarray(picture.image).resize((240, 180))
        for seed in range(3):
            params = draw_edit(name, np.random.default_rng(seed), original.size, ctx)
            copy = apply_edit(name, original, params, ctx)
            if name == "flip":
                assert ImageOps.mirror(copy).tobytes() == original.tobytes()
            elif name.endswith("crop"):
                assert copy.tobytes() == original.crop(tuple(params["box"])).tobytes()
                kept = copy.width * copy.height / (original.width * original.height)
                assert kept >= 0.2
            elif name in ("thin_pad", "pad"):
                left = round(params["border"][0] * original.width)
                top = round(params["border"][1] * original.height)
                inner = copy.crop((left, top, left + original.width, top + original.height))
                assert inner.tobytes() == original.tobytes()
            elif name == "resize":
                assert _correlation(copy.resize(original.size), original) > 0.95
            elif name == "rotate":
                back = copy.rotate(-params["angle"], Image.Resampling.BICUBIC)
                left, top = (back.width - original.width) // 2, (back.height - original.height) // 2
                back = back.crop((left, top, left + original.width, top + original.height))
                centre = (60, 45, 180, 135)
                assert _correlation(back.crop(centre), original.crop(centre)) > 0.8
            elif name == "perspective":
                w, h = original.size
                rect = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
                undo = _perspective_coefficients(rect, np.asarray(params["corners"], float))
                back = copy.transform(copy.size, Image.Transform.PERSPECTIVE, undo)
                centre = (60, 45, 180, 135)
                assert _correlation(back.crop(centre), original.crop(centre)) > 0.8
            elif name == "picture_in_picture":
                left, top, w, h = params["box"]
                inner = copy.crop((left, top, left + w, top + h)).resize(original.size)
                assert _correlation(inner, original) > 0.95
            elif name.endswith("_frame"):
                template = ctx.templates[params["template"]]
                assert copy.size == template.size
                sx, sy, sw, sh = template.slot
                left, top, w, h = fit_box(original.size, (sw, sh))
                inner = copy.crop((sx + left, sy + top, sx + left + w, sy + top + h))
                assert _correlation(inner.resize(original.size), original) > 0.95
                assert w * h >= 0.2 * copy.width * copy.height  # the picture stays visible
            else:  # photometric edits and overlays keep the geometry
                assert copy.size == original.size
                floor = 0.4 if name in ("text", "emoji", "colour") else 0.8
                assert _correlation(copy, original) > floor, (name, params)


def test_lookalikes_are_other_pictures_in_the_same_frame(copy_set):
    rows = {r["key"]: r for r in copy_set.ground_truth.to_pylist()}
    lookalikes = [r for r in rows.values() if r["kind"] == "lookalike"]
    assert lookalikes
    for row in lookalikes:
        imitated = rows[row["lookalike_of"]]
        assert imitated["kind"] == "copy" and imitated["picture_id"] != row["picture_id"]
        template = json.loads(row["params"])[-1]["template"]
        assert json.loads(imitated["params"])[-1]["template"] == template
    pairs = lookalike_pairs(copy_set.ground_truth, copy_set.pictures)
    assert not pairs & copy_pairs(copy_set.ground_truth)


def test_sibling_halves_are_different_pictures_of_one_photograph(copy_set):
    pictures = {r["picture_id"]: r for r in copy_set.pictures.to_pylist()}
    siblings = [r for r in pictures.values() if r["sibling"] is not None]
    assert len(siblings) >= 4
    unedited = {
        r["picture_id"]: r["key"]
        for r in copy_set.ground_truth.to_pylist()
        if r["kind"] in ("original", "distractor")
    }
    for row in siblings:
        other = pictures[row["sibling"]]
        assert other["sibling"] == row["picture_id"] and other["source"] == row["source"]
        a = Image.open(copy_set.path(unedited[row["picture_id"]]))
        b = Image.open(copy_set.path(unedited[other["picture_id"]])).resize(a.size)
        assert np.abs(_grey(a) - _grey(b)).mean() > 3.0


def test_copy_pairs_are_all_pairs_within_a_picture(copy_set):
    pictures = copy_set.ground_truth.column("picture_id").to_pylist()
    counts = np.unique(pictures, return_counts=True)[1]
    assert len(copy_pairs(copy_set.ground_truth)) == int((counts * (counts - 1) // 2).sum())
    kinds = set(copy_set.ground_truth.column("kind").to_pylist())
    assert kinds == {"original", "distractor", "copy", "lookalike"}
