"""Weighted k-NN evaluation (``pretrain.eval``) and ``lvd eval knn``."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.cli import main
from curation.config import ConfigError
from pretrain.eval.knn import linear_probe, weighted_knn
from pretrain.eval.labelled import LabelledSplitError, read_labelled_split
from pretrain.models import build_model


def _unit(angle_degrees: float) -> list[float]:
    angle = math.radians(angle_degrees)
    return [math.cos(angle), math.sin(angle)]


def _clusters(rng: np.random.Generator, n_per_class: int, n_classes: int, dim: int, noise: float):
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return centres[labels] + noise * rng.normal(size=(len(labels), dim)), labels


# --- the classifier -------------------------------------------------------------------------------


def test_separated_clusters_are_classified_perfectly():
    rng = np.random.default_rng(0)
    train, train_y = _clusters(rng, 30, 8, 16, noise=0.05)
    test = train[::3] + 0.01 * rng.normal(size=train[::3].shape)
    result = weighted_knn(train, train_y, test, train_y[::3])
    assert result == {"top1": 1.0, "top5": 1.0}


def test_random_features_score_near_chance():
    rng = np.random.default_rng(1)
    n_classes = 10
    train, test = rng.normal(size=(1000, 32)), rng.normal(size=(600, 32))
    train_y, test_y = rng.integers(0, n_classes, 1000), rng.integers(0, n_classes, 600)
    result = weighted_knn(train, train_y, test, test_y, n_classes=n_classes)
    assert 0.05 < result["top1"] < 0.16  # chance: 0.10
    assert 0.4 < result["top5"] < 0.6  # chance: 0.50
    assert result["top5"] >= result["top1"]


def _weighting_case():
    """Query (1, 0); one class-0 neighbour at cosine 0.9, two class-1 neighbours at cosine 0.5
    and a far class-2 point. With k = 3 an unweighted majority says class 1; weights exp(s / T)
    at T = 0.07 give class 0 exp(0.9 / 0.07) = 3.8e5 against 2 exp(0.5 / 0.07) = 2.5e3."""
    cos09 = math.degrees(math.acos(0.9))
    train = [_unit(cos09), _unit(60), _unit(-60), _unit(180)]
    return train, [0, 1, 1, 2], [_unit(0)]


def test_similarity_weights_outvote_a_majority():
    train, train_y, test = _weighting_case()
    assert math.exp(0.9 / 0.07) > 2 * math.exp(0.5 / 0.07)  # the hand computation above
    weighted = weighted_knn(train, train_y, test, [0], k=3, temperature=0.07)
    assert weighted["top1"] == 1.0
    # at a very high temperature every weight is ~1: the plain majority (class 1) wins
    flat = weighted_knn(train, train_y, test, [0], k=3, temperature=1000.0)
    assert flat["top1"] == 0.0
    assert weighted_knn(train, train_y, test, [1], k=3, temperature=1000.0)["top1"] == 1.0


def test_top5_counts_the_runner_up_but_not_unvoted_classes():
    train, train_y, test = _weighting_case()
    # class 1 is second in the vote: a top-5 hit, not a top-1 hit
    assert weighted_knn(train, train_y, test, [1], k=3) == {"top1": 0.0, "top5": 1.0}
    # class 2 is not among the 3 neighbours: no vote, no hit (even with only 3 classes)
    assert weighted_knn(train, train_y, test, [2], k=3) == {"top1": 0.0, "top5": 0.0}
    assert weighted_knn(train, train_y, test, [2], k=4)["top5"] == 1.0


def test_top5_is_the_five_largest_votes():
    # neighbours of classes 0..6 with decreasing similarity: class c is ranked c-th
    angles = [5 * (c + 1) for c in range(7)]
    train = [_unit(a) for a in angles]
    test = [_unit(0)] * 7
    labels = list(range(7))
    result = weighted_knn(train, labels, test, labels, k=7)
    assert result == {"top1": pytest.approx(1 / 7), "top5": pytest.approx(5 / 7)}


def test_features_are_l2_normalised():
    # by inner product the long class-0 vector wins; by cosine the short class-1 vector does
    train = [[10.0, 10.0], [1.0, 0.1]]
    assert weighted_knn(train, [0, 1], [[1.0, 0.0]], [1], k=1)["top1"] == 1.0
    assert weighted_knn(train, [0, 1], [[5.0, 0.0]], [1], k=1)["top1"] == 1.0


def test_blocks_give_the_same_result_as_one_pass():
    rng = np.random.default_rng(2)
    train, train_y = _clusters(rng, 20, 6, 8, noise=1.0)
    test, test_y = _clusters(rng, 7, 6, 8, noise=1.0)
    whole = weighted_knn(train, train_y, test, test_y, block_size=10_000)
    assert weighted_knn(train, train_y, test, test_y, block_size=5) == whole
    assert 0 < whole["top1"] < 1  # a case where blocks could matter


def test_bad_arguments_are_refused():
    train, train_y, test = _weighting_case()
    with pytest.raises(ValueError, match="k must be"):
        weighted_knn(train, train_y, test, [0], k=0)
    with pytest.raises(ValueError, match="temperature"):
        weighted_knn(train, train_y, test, [0], temperature=0)
    with pytest.raises(ValueError, match="dim"):
        weighted_knn(train, train_y, [[1.0, 0.0, 0.0]], [0])
    with pytest.raises(ValueError, match="one integer label per row"):
        weighted_knn(train, [0, 1], test, [0])
    with pytest.raises(ValueError, match="n_classes"):
        weighted_knn(train, train_y, test, [0], n_classes=2)


def test_linear_probe_separates_clusters():
    rng = np.random.default_rng(3)
    train, train_y = _clusters(rng, 20, 4, 16, noise=0.1)
    test, test_y = _clusters(np.random.default_rng(3), 5, 4, 16, noise=0.1)
    assert linear_probe(train, train_y, test, test_y)["top1"] == 1.0


# --- labelled splits ------------------------------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _png(colour: tuple[int, int, int], seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 12, (size, size, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _class_folders(root: Path, per_class: int, seed: int) -> Path:
    for c, (name, colour) in enumerate(COLOURS.items()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(_png(colour, seed + 100 * c + i))
    return root


def test_class_folders_are_read_with_their_labels(tmp_path):
    root = _class_folders(tmp_path / "train", 2, seed=0)
    (root / "blue" / "nested").mkdir()
    (root / "blue" / "nested" / "x.png").write_bytes(_png(COLOURS["blue"], 9))
    (root / "blue" / "notes.txt").write_text("not an image")
    split = read_labelled_split(root)
    assert split.classes == ["blue", "green", "red"]
    assert sorted(zip(split.keys, split.labels))[:3] == [
        ("blue/0.png", "blue"),
        ("blue/1.png", "blue"),
        ("blue/nested/x.png", "blue"),
    ]
    assert len(split) == 7
    assert split.loaders[0]() == (root / split.keys[0]).read_bytes()


def test_parquet_split_with_bytes_or_paths(tmp_path):
    images = [_png(COLOURS["red"], 1), _png(COLOURS["green"], 2)]
    pq.write_table(
        pa.table({"key": ["a", "b"], "image": images, "label": ["red", "green"]}),
        tmp_path / "bytes.parquet",
    )
    split = read_labelled_split(tmp_path / "bytes.parquet")
    assert (split.keys, split.labels) == (["a", "b"], ["red", "green"])
    assert [load() for load in split.loaders] == images
    folder = tmp_path / "paths"
    (folder / "imgs").mkdir(parents=True)
    (folder / "imgs" / "r.png").write_bytes(images[0])
    # relative paths are read from the parquet file's folder; integer labels become names
    pq.write_table(pa.table({"path": ["imgs/r.png"], "label": [3]}), folder / "p.parquet")
    split = read_labelled_split(tmp_path / "paths")  # a folder of parquet files
    assert split.labels == ["3"] and split.loaders[0]() == images[0]


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        (lambda root: None, FileNotFoundError, "does not exist"),
        (lambda root: root.mkdir(), LabelledSplitError, "holds no labelled images"),
        (
            lambda root: (root.mkdir(), (root / "x.png").write_bytes(b"")),
            LabelledSplitError,
            "outside class folders",
        ),
        (
            lambda root: (root.mkdir(), pq.write_table(pa.table({"a": [1]}), root / "t.parquet")),
            LabelledSplitError,
            "needs a 'label' column",
        ),
    ],
    ids=["missing", "no_classes", "loose_images", "parquet_without_labels"],
)
def test_unusable_splits_are_refused(tmp_path, setup, error, message):
    root = tmp_path / "split"
    setup(root)
    with pytest.raises(error, match=message):
        read_labelled_split(root)
    assert issubclass(LabelledSplitError, ConfigError)  # one line from the CLI


# --- lvd eval knn ---------------------------------------------------------------------------------

FAST = ["--size", "28", "--num-workers", "0", "--device", "cpu", "--batch-size", "16"]


@pytest.fixture(scope="module")
def colour_split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    _class_folders(root / "train", 6, seed=0)
    _class_folders(root / "val", 3, seed=50)
    return root


def test_eval_knn_end_to_end(colour_split, tmp_path, capsys):
    out = tmp_path / "report" / "knn.json"
    train, val = str(colour_split / "train"), str(colour_split / "val")
    code = main(
        ["eval", "knn", "--train", train, "--val", val, "--model", "vit_small", "--k", "5"]
        + ["--json", str(out), *FAST]
    )
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert (report["train_images"], report["val_images"], report["classes"]) == (18, 9, 3)
    assert (report["k"], report["dim"]) == (5, 384)
    # flat colours are told apart even by a random ViT; 3 classes: every voted class is in top-5
    assert report["knn_top1"] == 1.0 and report["knn_top5"] == 1.0
    assert "top-1 100.00%" in printed and "18 train / 9 val images, 3 classes" in printed


def test_eval_knn_loads_an_exported_teacher(colour_split, tmp_path, capsys):
    # a backbone state dict in the official layout, as export_teacher_backbone writes it
    torch.manual_seed(123)
    teacher = tmp_path / "teacher_backbone.pth"
    torch.save(build_model("vit_small").state_dict(), teacher)
    argv = [
        "eval",
        "knn",
        "--train",
        str(colour_split / "train"),
        "--val",
        str(colour_split / "val"),
    ]
    argv += [
        "--model",
        "vit_small",
        "--checkpoint",
        str(teacher),
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main([*argv, "--linear-probe", *FAST]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model_id"].startswith("vit_small:teacher_backbone.pth")
    assert 0 <= report["knn_top1"] <= report["knn_top5"] <= 1
    assert 0 <= report["linear_top1"] <= 1


def test_eval_knn_refuses_a_val_class_unknown_to_train(colour_split, tmp_path, capsys):
    val = _class_folders(tmp_path / "val", 1, seed=7)
    (val / "purple").mkdir()
    (val / "purple" / "0.png").write_bytes(_png((150, 20, 150), 3))
    argv = ["eval", "knn", "--train", str(colour_split / "train"), "--val", str(val)]
    assert main([*argv, "--model", "vit_small", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lvd eval: error: val class(es) 'purple'")
