"""Dedup on real pictures (issue 10's acceptance): near-exact (pHash) and copy-detection dedup on
the real-image copy set (:mod:`curation.eval.copy_edits`), with the chaining guard on and off.

Measured on this set (seed 0, 6 copies per picture: 23 pictures, 137 images, 393 true copy pairs),
2 CPU cores:

* pHash, Hamming <= 6: 70 edges, all between copies of one picture. Guard on: 0 wrongly merged
  pictures, pair precision 1.000, recall 0.176; guard off: 0 wrongly merged, precision 1.000,
  recall 0.181. pHash finds re-encodes, resizes and mild colour changes, not crops, flips, frames.
  With 12 copies per picture (seeds 0 and 1) phone-screenshot copies of *different* pictures hash
  within 2-6 bits of each other (the chrome dominates the hash): a direct edge, which no chaining
  guard can stop: 4 and 6 pictures wrongly merged with the guard, 4 and 7 without.
* Descriptor (width 32, 128-d, 64 px, 100 steps on the 23 unedited pictures, about 20 s on an idle
  machine): pair micro-AP 0.51 (untrained 0.29). At SPEC's raw cosine 0.6 almost every pair of
  images is an edge: guard off merges all 137 images into one group (pair precision 0.042, recall
  1.0); guard on precision 0.06-0.09, recall 0.70-0.80, every one of the 23 pictures merged with
  another (the exact figures move with the trainer). 0.6 is the SSCD operating point for a
  descriptor trained on DISC21 at scale, not for this one.
* **Calibrated default threshold** (issue 10 point 3b, issue 11 point 3): the threshold is chosen
  with ``threshold_for_precision`` at precision 0.99 over every pair of a *tuning* copy set (seed 1:
  other distractors, edits, frames, look-alikes), stored in the checkpoint (``write_calibration``),
  recorded by ``lvd embed`` beside the embeddings and applied by ``lvd dedup`` with no option.
  Cosine > 0.9952 (tuning recall 0.113; the same threshold at precision 1.0): guard on and off
  both give pair precision 1.000, recall 0.135, 0 wrongly merged pictures, largest group 5. With
  the seed-2 tuning set: 0.9946, same test figures; at precision 0.95 instead (0.9893): guard on
  precision 0.937, recall 0.150, 4 pictures wrongly merged; off 0.873, 0.158, 5.
* **With the pixel check** (``dedup.verify``, on by default; the records point at the image files):
  the pairs within 0.15 under that threshold whose one image is a rescaled window of the other
  (``curation/models/window_match.py``) join: guard on precision 1.000, recall 0.333; off 1.000,
  0.448; 0 wrongly merged pictures either way, largest group 6. Before the whole-to-whole rule
  (``MAX_COVER``) two pictures in one phone-screenshot template matched on the shared chrome:
  precision 0.937, 7 pictures wrongly merged.
* Density scores (cosine less the mean of the two images' 5th-20th neighbour similarities, the
  pool as background) calibrated the same way do *not* hold here: threshold 0.21 (seed 1,
  precision 0.99, tuning recall 0.017) gives guard on precision 0.828, recall 0.061, guard off
  0.853, 0.074, and the two halves of the Hubble deep field (sibling pictures, a look-alike pair)
  merged either way; ranks (8, 20) or (10, 30) do no better. Each picture has 7 images here, so
  ranks 5-20 hold an image's own copies: its density is high exactly when it has copies. The
  acceptance test therefore calibrates cosine.
"""

from __future__ import annotations

import functools
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("skimage", reason="the real pictures ship with scikit-image (the dev extra)")

from curation.config import load_config  # noqa: E402
from curation.engines import get_engine  # noqa: E402
from curation.eval.copy_detection import micro_average_precision  # noqa: E402
from curation.eval.copy_edits import build_real_copy_set, copy_pairs  # noqa: E402
from curation.index.calibration import ScoreCalibration, threshold_for_precision  # noqa: E402
from curation.index.components import (  # noqa: E402
    connected_components,
    guarded_components,
    priority_rank,
)
from curation.index.knn import knn_pairs, normalized, pair_similarities  # noqa: E402
from curation.io import write_parquet_atomic  # noqa: E402
from curation.jobs.config import CurationConfig  # noqa: E402
from curation.jobs.decode import pack_folder  # noqa: E402
from curation.jobs.dedup import run_dedup  # noqa: E402
from curation.jobs.embed import run_embed  # noqa: E402
from curation.models.descriptor import write_calibration  # noqa: E402
from curation.models.embedder import load_embedder  # noqa: E402
from curation.models.inference import BatchEmbedder, InferenceOptions  # noqa: E402
from curation.runner import TABLE_OUTPUT  # noqa: E402
from curation.stages.near_dedup import close_pairs, hash_codes, near_duplicates  # noqa: E402
from curation.stages.phash import phash_bytes  # noqa: E402
from curation.train_descriptor import DescriptorTrainConfig, train_descriptor  # noqa: E402
from curation.train_descriptor.config import AugmentConfig  # noqa: E402
from schemas import IMAGE_RECORD_SCHEMA  # noqa: E402

MAX_DISTANCE = 6  # NearDedupConfig's default
THRESHOLD, K = 0.6, 64  # CopyDedupConfig's defaults (SPEC.md section 1)
TRAIN_STEPS = 100
TUNE_SEED, TARGET_PRECISION = 1, 0.99  # the calibration's tuning copy set and precision


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def copy_set(tmp_path_factory):
    return build_real_copy_set(tmp_path_factory.mktemp("real") / "set", seed=0)


def _groups(keys: list[str], representative) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key, rep in zip(keys, representative):
        groups[rep].append(key)
    return groups


def _figures(groups: dict[str, list[str]], picture: dict[str, str], true: set) -> dict:
    """Pair precision and recall of a grouping, and the pictures merged with another picture."""
    grouped = {
        tuple(sorted((a, b))) for members in groups.values() for a in members for b in members
    } - {(k, k) for k in picture}
    found = len(grouped & true)
    mixed = [
        sorted({picture[k] for k in m}) for m in groups.values() if len({picture[k] for k in m}) > 1
    ]
    return {
        "precision": found / len(grouped) if grouped else 1.0,
        "recall": found / len(true),
        "wrongly_merged": sorted({p for pictures in mixed for p in pictures}),
        "largest": max(len(m) for m in groups.values()),
    }


@pytest.fixture(scope="module")
def hashed(copy_set):
    keys = copy_set.ground_truth.column("key").to_pylist()
    hashes = [phash_bytes(copy_set.path(key).read_bytes()) for key in keys]
    return pa.table({"key": keys, "phash": pa.array(hashes, pa.int64())})


def _phash_groups(hashed, guard: bool) -> dict[str, list[str]]:
    result = near_duplicates(hashed, MAX_DISTANCE, guard=guard)
    keys = result.column("key").to_pylist()
    reps = [rep or key for key, rep in zip(keys, result.column("duplicate_of").to_pylist())]
    return _groups(keys, reps)


def test_near_exact_dedup_with_the_guard_merges_no_two_pictures(copy_set, hashed):
    gt = copy_set.ground_truth
    picture = dict(zip(gt.column("key").to_pylist(), gt.column("picture_id").to_pylist()))
    true = copy_pairs(gt)
    guarded = _figures(_phash_groups(hashed, guard=True), picture, true)
    chained = _figures(_phash_groups(hashed, guard=False), picture, true)
    print(f"\npHash <= {MAX_DISTANCE}: guard on {guarded}\n  guard off {chained}")
    assert guarded["wrongly_merged"] == []
    assert set(guarded["wrongly_merged"]) <= set(chained["wrongly_merged"])
    assert 0.1 < guarded["recall"] <= chained["recall"]  # it finds copies, a subset of the chains


def test_near_exact_guard_leaves_only_direct_matches(copy_set, hashed):
    """Every image the guard drops is within the distance of the image it keeps instead."""
    result = near_duplicates(hashed, MAX_DISTANCE).to_pylist()
    dropped = [r for r in result if not r["keep"]]
    assert dropped and all(r["hamming_distance"] <= MAX_DISTANCE for r in dropped)
    codes = hash_codes(hashed.column("phash").to_numpy())
    edges = close_pairs(codes, MAX_DISTANCE)
    keys = hashed.column("key").to_pylist()
    linked = {(keys[i], keys[j]) for i, j, _ in edges} | {(keys[j], keys[i]) for i, j, _ in edges}
    assert all((r["key"], r["duplicate_of"]) in linked for r in dropped)


@pytest.fixture(scope="module")
def trained(copy_set, tmp_path_factory) -> Path:
    """A descriptor trained briefly on the unedited pictures only (originals and distractors:
    never a copy): ``trained.pt``, and ``init.pt`` the same network untrained."""
    rows = copy_set.ground_truth.to_pylist()
    train = [
        functools.partial(_read, str(copy_set.path(r["key"])))
        for r in rows
        if r["kind"] in ("original", "distractor")
    ]
    cfg = DescriptorTrainConfig(
        width=32,
        dim=128,
        augment=AugmentConfig(size=64),
        batch_size=16,  # 23 training pictures
        max_steps=TRAIN_STEPS,
        time_budget_s=None,
        autocast="fp32",
        threads=1,
        num_workers=0,
        seed=0,
    )
    folder = tmp_path_factory.mktemp("descriptor")
    train_descriptor(cfg, train, folder / "trained.pt", init_checkpoint=folder / "init.pt")
    return folder


def _embed(checkpoint: Path, copy_set) -> np.ndarray:
    rows = copy_set.ground_truth.to_pylist()
    loaders = [functools.partial(_read, str(copy_set.path(r["key"]))) for r in rows]
    embedder = BatchEmbedder(
        load_embedder("descriptor", checkpoint),
        InferenceOptions(device="cpu", num_workers=0, batch_size=64),
    )
    embedded = embedder.embed(loaders)
    embedder.close()
    assert not embedded.failures and len(embedded.embeddings) == len(rows)
    return embedded.embeddings


@pytest.fixture(scope="module")
def descriptors(copy_set, trained):
    """Embeddings of every image by the trained descriptor and by the same network untrained."""
    return {
        "trained": _embed(trained / "trained.pt", copy_set),
        "untrained": _embed(trained / "init.pt", copy_set),
    }


def _copy_dedup(copy_set, vectors, threshold: float, guard: bool):
    gt = copy_set.ground_truth
    keys = gt.column("key").to_pylist()
    pixels = (np.asarray(gt.column("width")) * np.asarray(gt.column("height"))).astype(np.int64)
    rank = priority_rank(pixels, keys)
    i, j, sim = knn_pairs(vectors, K, threshold)
    if guard:
        rep = guarded_components(len(keys), i, j, sim, rank, threshold)
    else:
        labels = connected_components(len(keys), i, j)
        best = {}
        for node in np.argsort(rank, kind="stable"):
            best.setdefault(labels[node], node)
        rep = np.array([best[label] for label in labels])
    return keys, rep, (i, j, sim)


def test_training_on_the_pictures_alone_improves_copy_detection_of_real_copies(
    copy_set, descriptors
):
    gt = copy_set.ground_truth
    picture = gt.column("picture_id").to_pylist()
    true = copy_pairs(gt)
    scores = {}
    for name, vectors in descriptors.items():
        i, j, sim = knn_pairs(vectors, K, -1.0)  # every neighbour: the whole ranking
        labels = np.array([picture[a] == picture[b] for a, b in zip(i, j)])
        scores[name] = micro_average_precision(sim, labels, len(true))
    print(f"\npair micro-AP on real copies: {scores}")
    assert scores["trained"] > scores["untrained"] + 0.1


def test_copy_dedup_guard_keeps_every_member_above_the_threshold_with_its_representative(
    copy_set, descriptors
):
    gt = copy_set.ground_truth
    picture = dict(zip(gt.column("key").to_pylist(), gt.column("picture_id").to_pylist()))
    true = copy_pairs(gt)
    vectors = descriptors["trained"] / np.linalg.norm(descriptors["trained"], axis=1, keepdims=True)
    figures = {}
    for guard in (True, False):
        keys, rep, _ = _copy_dedup(copy_set, vectors, THRESHOLD, guard)
        figures[guard] = _figures(_groups(keys, [keys[r] for r in rep]), picture, true)
        if guard:
            members = np.flatnonzero(rep != np.arange(len(keys)))
            cosine = np.einsum("ij,ij->i", vectors[members], vectors[rep[members]])
            assert np.all(cosine > THRESHOLD - 1e-5)
    print(f"\ncopy dedup at cosine > {THRESHOLD}: guard on {figures[True]}\n  off {figures[False]}")
    assert figures[True]["largest"] <= figures[False]["largest"]
    assert figures[True]["precision"] >= figures[False]["precision"]


@pytest.fixture(scope="module")
def calibrated_checkpoint(trained, tmp_path_factory):
    """The trained descriptor with a cosine threshold chosen for TARGET_PRECISION on a *tuning* copy
    set (other seed: other distractors, edits, frames and look-alikes) stored in its checkpoint."""
    tune = build_real_copy_set(tmp_path_factory.mktemp("tune") / "set", seed=TUNE_SEED)
    vectors = normalized(_embed(trained / "trained.pt", tune))
    i, j = np.triu_indices(len(vectors), 1)  # every pair: the whole ranking
    picture = np.asarray(tune.ground_truth.column("picture_id").to_pylist())
    threshold, recall = threshold_for_precision(
        pair_similarities(vectors, i, j),
        picture[i] == picture[j],
        len(copy_pairs(tune.ground_truth)),
        TARGET_PRECISION,
    )
    assert threshold is not None
    path = tmp_path_factory.mktemp("calibrated") / "descriptor.pt"
    shutil.copyfile(trained / "trained.pt", path)
    calibration = ScoreCalibration(
        kind="cosine",
        threshold=threshold,
        target_precision=TARGET_PRECISION,
        measured_on=f"real copy set, seed {TUNE_SEED}",
    )
    write_calibration(path, calibration.to_dict())
    return path, threshold, recall


def _records(copy_set, folder: Path) -> list[Path]:
    """IMAGE_RECORD rows of the set (their pixel counts pick each group's representative, their
    files are what the pixel check of dedup.verify reads)."""
    gt = copy_set.ground_truth
    n = gt.num_rows
    files = [copy_set.path(key) for key in gt.column("key").to_pylist()]
    located = {
        "source_file": pa.array([str(f) for f in files], pa.string()),
        "source_offset": pa.array([0] * n, pa.int64()),
        "source_size": pa.array([f.stat().st_size for f in files], pa.int64()),
    }
    table = pa.table(
        {
            name: gt.column(name)
            if name in ("key", "width", "height")
            else located.get(name, pa.nulls(n, field.type))
            for name, field in zip(IMAGE_RECORD_SCHEMA.names, IMAGE_RECORD_SCHEMA)
        }
    ).set_column(IMAGE_RECORD_SCHEMA.get_field_index("status"), "status", pa.array(["ok"] * n))
    path = folder / "part-00000.parquet"
    write_parquet_atomic(path, table.cast(IMAGE_RECORD_SCHEMA), IMAGE_RECORD_SCHEMA)
    return [path]


def test_copy_dedup_at_the_calibrated_default_threshold_merges_no_two_pictures(
    copy_set, calibrated_checkpoint, tmp_path
):
    """The whole path a user takes: `lvd embed` with the calibrated checkpoint, then `lvd dedup`
    with no score or threshold option; the calibration travels with the embeddings."""
    checkpoint, threshold, tune_recall = calibrated_checkpoint
    gt = copy_set.ground_truth
    picture = dict(zip(gt.column("key").to_pylist(), gt.column("picture_id").to_pylist()))
    records = _records(copy_set, tmp_path)
    figures, stats = {}, {}
    with get_engine("local", progress=False) as engine:
        for guard in (True, False):
            cfg = load_config(
                CurationConfig,
                [],
                [
                    f"runs_dir={tmp_path}",
                    f"name=guard_{guard}",
                    "embed.model=descriptor",
                    f"embed.checkpoint={checkpoint}",
                    "embed.num_workers=0",
                    "embed.device=cpu",
                    f"dedup.guard={str(guard).lower()}",
                ],
            )
            run_embed(cfg, engine, pack_folder(cfg, copy_set.root / "images"))
            stats[guard] = run_dedup(cfg, engine, records=records)["dedup_copy"]
            components = pq.read_table(cfg.run_dir.stage("dedup_copy").path / TABLE_OUTPUT)
            keys = components.column("key").to_pylist()
            reps = components.column("representative_key").to_pylist()
            figures[guard] = _figures(_groups(keys, reps), picture, copy_pairs(gt))
    print(
        f"\ncalibrated cosine > {threshold:.4f} (tuning recall {tune_recall:.3f}): "
        f"guard on {figures[True]}\n  off {figures[False]}"
    )
    scoring = stats[True]["scoring"]
    assert (scoring["kind"], scoring["threshold_from"]) == ("cosine", "calibration")
    assert scoring["threshold"] == pytest.approx(threshold)
    assert figures[True]["wrongly_merged"] == figures[False]["wrongly_merged"] == []
    assert figures[True]["recall"] > 0.05  # it still finds copies: not a threshold above all
