"""The real-image copy-detection benchmark: its scorer on hand-made predictions, the split, the
stored calibration, and pictures unpacked from a Debian package built here (no network)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from curation.cli import main
from curation.config import ConfigError
from curation.eval import debian_pictures
from curation.eval.copy_detection import copy_set_truth, knn_pairs, score_copy_predictions
from curation.eval.copydetect_bench import (
    SPLITS,
    VERIFY_MARGIN,
    VERIFY_MIN,
    BenchSettings,
    build_benchmark,
    descriptor_scores,
    drop_near_duplicates,
    embed_descriptor,
    load_split,
    pair_window_scores,
    split_sources,
    split_truth,
)
from curation.eval.debian_pictures import (
    DebianPicturesUnavailable,
    PackageRecipe,
    fetch_package,
    package_pictures,
)
from curation.eval.real_images import RealPicture
from curation.index.calibration import ScoreCalibration, threshold_for_precision
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.stages.copy_dedup import CopyDedupConfig

# --- the scorer on hand-made predictions ------------------------------------------------------


def _set(n_pictures: int, n_copies: int = 3):
    """Keys ``p<n>-<c>`` (c = 0: the unedited image) and the picture of each."""
    keys = [f"p{p}-{c}" for p in range(n_pictures) for c in range(n_copies + 1)]
    picture_of = {key: key.split("-")[0] for key in keys}
    unedited = [key for key in keys if key.endswith("-0")]
    return keys, picture_of, unedited


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _score(truth, embeddings):
    i, j, cosine = knn_pairs(embeddings, 10)
    return score_copy_predictions(truth, i, j, cosine)


def test_perfect_embeddings_find_every_copy():
    keys, picture_of, unedited = _set(30)
    truth = copy_set_truth(keys, picture_of, unedited, [])
    rng = np.random.default_rng(0)
    centre = _unit(rng.normal(size=(30, 32)))
    embeddings = centre[truth.picture]  # every image of a picture: the same vector
    metrics = _score(truth, embeddings)
    assert metrics["n_true_pairs"] == 30 * 6 and metrics["n_copy_original_pairs"] == 30 * 3
    assert metrics["pair_micro_ap"] == pytest.approx(1.0)
    assert metrics["copy_original_micro_ap"] == pytest.approx(1.0)
    assert metrics["recall_at_p90"] == metrics["recall_at_p95"] == pytest.approx(1.0)


def test_random_embeddings_score_near_the_base_rate():
    keys, picture_of, unedited = _set(60)
    truth = copy_set_truth(keys, picture_of, unedited, [])
    embeddings = _unit(np.random.default_rng(1).normal(size=(len(keys), 32)))
    metrics = _score(truth, embeddings)
    base_rate = truth.n_pairs / (len(keys) * (len(keys) - 1) / 2)  # a random pair is a copy
    assert metrics["pair_micro_ap"] < 2 * base_rate
    assert metrics["copy_original_micro_ap"] < 0.1
    assert metrics["recall_at_p95"] < 0.05


def test_copy_original_ap_counts_only_pairs_with_the_unedited_image():
    # copies of a picture are one vector, their original lies anywhere: copy-copy pairs are all
    # found first, original-copy pairs never
    keys, picture_of, unedited = _set(30)
    truth = copy_set_truth(keys, picture_of, unedited, [])
    rng = np.random.default_rng(2)
    embeddings = _unit(rng.normal(size=(30, 32)))[truth.picture]
    embeddings[truth.unedited] = _unit(rng.normal(size=(30, 32)))
    metrics = _score(truth, embeddings)
    assert metrics["pair_micro_ap"] == pytest.approx(0.5, abs=0.05)  # 3 of 6 pairs per picture
    assert metrics["copy_original_micro_ap"] < 0.1


def test_clustered_lookalikes_are_flagged_while_copies_are_still_found():
    # 12 categories of 3 pictures: pictures of a category are close, copies of a picture closer
    # (a category's 12 images fit in each one's 10 neighbours); look-alikes are pairs of
    # pictures of one category
    keys, picture_of, unedited = _set(36)
    rng = np.random.default_rng(3)
    category = _unit(rng.normal(size=(12, 64)))
    picture = _unit(category[np.arange(36) // 3] + 0.35 * rng.normal(size=(36, 64)) / 8)
    lookalikes = [(f"p{p}-0", f"p{p + 1}-0") for p in range(36) if p % 3 < 2]
    truth = copy_set_truth(keys, picture_of, unedited, lookalikes)
    number = np.array([int(key[1:].split("-")[0]) for key in keys])  # p<number>-<copy>
    embeddings = _unit(picture[number] + 0.03 * rng.normal(size=(len(keys), 64)) / 8)
    metrics = _score(truth, embeddings)
    assert metrics["n_lookalike_pairs"] == len(lookalikes)
    assert metrics["lookalike_in_knn"] > 0.9
    assert metrics["pair_micro_ap"] > 0.95
    assert metrics["lookalike_above_threshold"] < 0.1  # copies score above every look-alike
    # the same look-alikes drawn far apart: not among each other's neighbours
    scattered = _unit(rng.normal(size=(36, 64)))[truth.picture]
    assert _score(truth, scattered)["lookalike_in_knn"] < 0.3  # only by chance


# --- the split ------------------------------------------------------------------------------


def _picture(name: str) -> RealPicture:
    return RealPicture(name, np.zeros((4, 4, 3), np.uint8), "CC0-1.0", f"x:{name}", "", "")


def test_split_is_deterministic_disjoint_and_complete():
    names = [f"pkg:folder/picture{n}" for n in range(300)]
    sources = [_picture(n) for n in ["brick", *names, "grass", "gravel"]]
    first, again = split_sources(sources), split_sources(list(reversed(sources)))
    members = {s: {p.name for p in first[s]} - {"brick", "grass", "gravel"} for s in SPLITS}
    assert members == {s: {p.name for p in again[s]} - {"brick", "grass", "gravel"} for s in SPLITS}
    assert not members["tuning"] & members["heldout"]
    assert members["tuning"] | members["heldout"] == set(names)
    assert 0.4 < len(members["tuning"]) / len(names) < 0.6
    for split in SPLITS:  # backgrounds serve both splits' picture-in-picture copies
        assert {"brick", "grass", "gravel"} <= {p.name for p in first[split]}


def test_near_duplicate_sources_are_dropped_mirrored_or_recoloured():
    rng = np.random.default_rng(4)
    scene = (rng.random((12, 16, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    other = (rng.random((12, 16, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    pictures = [
        RealPicture("scene", scene, "", "", "", ""),
        RealPicture("scene_mirror", np.ascontiguousarray(scene[:, ::-1]), "", "", "", ""),
        RealPicture("scene_darker", (scene * 0.7).astype(np.uint8), "", "", "", ""),
        RealPicture("other", other, "", "", "", ""),
    ]
    kept, dropped = drop_near_duplicates(pictures, max_bits=6)
    assert [p.name for p in kept] == ["scene", "other"]
    assert dropped == ["scene_mirror", "scene_darker"]


# --- the benchmark and the stored calibration -----------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    settings = BenchSettings(n_copies_per_picture=2, n_screenshot_templates=4)
    root = build_benchmark(cache, "packages", settings)
    return cache, root


def test_benchmark_splits_share_no_picture(bench):
    _, root = bench
    splits = {s: load_split(root, s) for s in SPLITS}
    sources = {s: set(splits[s].pictures.column("source_name").to_pylist()) for s in SPLITS}
    assert sources["tuning"] and sources["heldout"]
    assert not sources["tuning"] & sources["heldout"]
    train = sorted(p.stem for p in (root / "train_images").iterdir())
    truth = splits["tuning"].ground_truth.to_pylist()
    assert train == sorted(r["key"] for r in truth if r["kind"] in ("original", "distractor"))
    assert build_benchmark(bench[0], "packages") == root  # complete: reused, not rebuilt


def _tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_descriptor("resnet18", dim=32, width=8)
    inference = {"size": 64, "resize": "square", "scales": [], "multiple_of": 1}
    kwargs = {"width": 8}
    save_descriptor_checkpoint(path, model, arch="resnet18", dim=32, arch_kwargs=kwargs, inference=inference)  # fmt: skip
    return path


def test_store_calibration_reaches_the_target_on_the_tuning_split(bench, tmp_path, capsys):
    cache, root = bench
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "report.json"
    argv = ["--checkpoint", str(checkpoint), "--store-calibration", "--target-precision", "0.9"]
    argv += ["--device", "cpu", "--num-workers", "0", "--json", str(out)]
    assert main(["bench", "copydetect", "--cache", str(cache), "--source", "packages", *argv]) == 0
    printed = capsys.readouterr().out
    assert "tiny.pt  cosine" in printed and "tiny.pt  density" in printed
    stored = torch.load(checkpoint, weights_only=True)["inference"]["calibration"]
    calibration = ScoreCalibration.from_dict(stored)
    assert calibration.threshold is not None and calibration.measured_on.endswith(":tuning")
    assert calibration.target_precision == 0.9 and calibration.ranks == (5, 20)

    tuning = load_split(root, "tuning")
    keys, embeddings = embed_descriptor(checkpoint, tuning, device="cpu", num_workers=0)
    truth = split_truth(tuning, keys)
    i, j, kinds = descriptor_scores(embeddings)
    labels = truth.labels(i, j)
    accepted = kinds[calibration.kind] > calibration.threshold
    assert labels[accepted].mean() >= 0.9
    best = {
        kind: threshold_for_precision(s, labels, truth.n_pairs, 0.9) for kind, s in kinds.items()
    }
    # the kind with the best recall on tuning, at the lowest threshold that keeps the precision
    assert best[calibration.kind][1] == max(recall for _, recall in best.values())
    assert calibration.threshold == pytest.approx(best[calibration.kind][0])
    report = json.loads(out.read_text())
    assert report["calibrations"][0]["stored"]["threshold"] == calibration.threshold
    assert 0 <= report["calibrations"][0]["heldout"]["precision"] <= 1


def test_the_pixel_check_ranks_the_pairs_it_verifies_first(bench, tmp_path, capsys):
    cache, root = bench
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "report.json"
    argv = ["--checkpoint", str(checkpoint), "--verify", "--split", "tuning", "--json", str(out)]
    argv += ["--device", "cpu", "--num-workers", "2"]
    assert main(["bench", "copydetect", "--cache", str(cache), "--source", "packages", *argv]) == 0
    assert "tiny.pt  density+verify" in capsys.readouterr().out
    results = {r["score"]: r for r in json.loads(out.read_text())["results"]}
    dedup = CopyDedupConfig()  # the benchmark scores the check lvd dedup applies
    assert (VERIFY_MIN, VERIFY_MARGIN) == (dedup.verify_min, dedup.verify_margin)
    # The untrained network barely separates copies; the pixels do for crops, pads and frames.
    for kind in ("cosine", "density"):
        assert results[f"{kind}+verify"]["pair_micro_ap"] > results[kind]["pair_micro_ap"] + 0.05

    tuning = load_split(root, "tuning")
    keys, embeddings = embed_descriptor(checkpoint, tuning, device="cpu", num_workers=0)
    truth = split_truth(tuning, keys)
    i, j, _ = descriptor_scores(embeddings)
    window = pair_window_scores(tuning, keys, i, j, workers=1)
    verified = window >= VERIFY_MIN
    labels = truth.labels(i, j)
    assert verified.sum() >= 10 and labels[verified].mean() >= 0.75
    # The only non-copies the pixels pass are the two halves of one photograph (a near-mirror
    # fundus image): siblings, which share the scene's structure.
    truth_table = tuning.ground_truth
    picture_of = dict(zip(truth_table["key"].to_pylist(), truth_table["picture_id"].to_pylist()))
    sibling = dict(
        zip(tuning.pictures["picture_id"].to_pylist(), tuning.pictures["sibling"].to_pylist())
    )
    for a, b in zip(i[verified & ~labels], j[verified & ~labels]):
        assert sibling[picture_of[keys[a]]] == picture_of[keys[b]]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "not_a_descriptor.pt").write_bytes(b"")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    cases = {
        ("--checkpoint", str(tmp_path / "missing.pt")): "missing.pt does not exist",
        ("--checkpoint", str(tmp_path / "other.pt")): "not an lvd descriptor checkpoint",
        ("--checkpoint", str(tmp_path / "not_a_descriptor.pt")): "the file is empty",
        ("--untrained", "vgg"): "'vgg' is not a descriptor arch",
        ("--store-calibration", "--phash"): "needs a --checkpoint",
    }
    for args, expect in cases.items():
        argv = ["bench", "copydetect", "--cache", str(tmp_path / "c"), "--source", "packages"]
        assert main([*argv, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lvd bench: error:") and expect in err[0]
    assert not (tmp_path / "c").exists()  # refused before any work


# --- Debian pictures ------------------------------------------------------------------------

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: test

Files: *
Copyright: 2020 Someone
License: GPL-2

Files: art/photos/*
Copyright: 2021 A Photographer
License: CC0-1.0
"""


def _build_deb(tmp_path: Path) -> Path:
    package = tmp_path / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        "Package: lvd-test-pictures\nVersion: 1.2-3\nArchitecture: all\n"
        "Maintainer: Test <test@example.com>\nDescription: pictures for a test\n"
    )
    doc = package / "usr/share/doc/lvd-test-pictures"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    art = package / "usr/share/pics/art"
    (art / "photos").mkdir(parents=True)
    drawing = Image.new("RGBA", (80, 90), (0, 0, 0, 0))  # transparent, a red square inside
    drawing.paste((255, 0, 0, 255), (20, 20, 60, 60))
    drawing.save(art / "drawing.png")
    Image.new("RGB", (120, 100), (10, 120, 30)).save(art / "photos" / "photo.jpg")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(art / "tiny.png")
    (art / "vector.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (art / "notes.txt").write_text("not a picture")
    deb = tmp_path / "lvd-test-pictures_1.2-3_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(package), str(deb)], check=True, capture_output=True)
    return deb


RECIPE = PackageRecipe("lvd-test-pictures", "test", ("usr/share/pics/*",))


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_pictures_of_a_debian_package(tmp_path):
    deb = _build_deb(tmp_path)
    downloads = []

    def download(package: str, folder: Path) -> Path:
        downloads.append(package)
        return Path(shutil.copy(deb, folder))

    found = package_pictures(
        "lvd-test-pictures", tmp_path / "cache", recipe=RECIPE, download=download
    )
    assert [p.name for p in found.pictures] == [
        "test:pics/art/drawing",
        "test:pics/art/photos/photo",
    ]
    drawing, photo = found.pictures
    assert (drawing.licence, photo.licence) == ("GPL-2", "CC0-1.0")
    assert "2021 A Photographer" in photo.statement
    assert photo.source == "debian:lvd-test-pictures:usr/share/pics/art/photos/photo.jpg"
    assert drawing.image.shape == (90, 80, 3)
    assert tuple(drawing.image[5, 5]) == (255, 255, 255)  # transparency on white
    assert tuple(drawing.image[40, 40]) == (255, 0, 0)
    assert found.skipped == {"too_small": 1}
    assert found.version == "1.2-3"
    root = tmp_path / "cache" / "debian" / "lvd-test-pictures"
    kept = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert not [k for k in kept if k.endswith((".svg", ".txt"))]  # only pictures and licence
    again = package_pictures(
        "lvd-test-pictures", tmp_path / "cache", recipe=RECIPE, download=download
    )
    assert downloads == ["lvd-test-pictures"]  # unpacked once, then reused
    assert [p.name for p in again.pictures] == [p.name for p in found.pictures]


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_a_failed_fetch_leaves_nothing_behind(tmp_path, monkeypatch):
    def failing(package: str, folder: Path) -> Path:
        (folder / "partial.deb").write_bytes(b"half a download")
        raise DebianPicturesUnavailable(f"apt-get download {package} failed (E: no network)")

    with pytest.raises(DebianPicturesUnavailable, match="no network"):
        fetch_package("lvd-test-pictures", tmp_path, download=failing)
    assert list((tmp_path / "debian").iterdir()) == []
    monkeypatch.setattr(debian_pictures.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="needs apt-get"):
        debian_pictures.apt_download("lvd-test-pictures", tmp_path)
    with pytest.raises(ConfigError, match="needs dpkg-deb"):
        fetch_package("lvd-test-pictures", tmp_path)
