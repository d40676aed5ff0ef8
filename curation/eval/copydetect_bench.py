"""``lvd bench copydetect``: the project's real-image copy-detection benchmark (issue 11).

**Data.** Real pictures with recorded licences (:mod:`curation.eval.debian_pictures`: Debian's
Tux Paint stamps, Open Clip Art drawings, MATE and Plasma wallpapers; plus the wheel pictures of
:mod:`curation.eval.real_images`, whose textures serve as the backgrounds of picture-in-picture
edits), near-duplicate sources dropped by pHash, are split by a hash of their name into ``tuning``
and ``heldout`` (held-out is never used to choose anything). Each split is a
:func:`~curation.eval.copy_edits.build_real_copy_set`: DISC21-style copies in easy/medium/hard
tiers, distractors, look-alikes. The benchmark is built once into
``<cache>/copydetect-<VERSION>-<source>/`` (a temporary folder renamed when complete, with
``_SUCCESS`` inside) and reused; ``train_images/`` holds the unedited tuning pictures, for
``lvd train-descriptor --images``.

**Scoring.** Every image queries its ``k`` = 10 nearest neighbours; the pooled pairs are scored
by :func:`~curation.eval.copy_detection.score_copy_predictions`. Descriptors are scored by raw
cosine and by the density-calibrated score (SSCD's normalisation with the split's own pool as
background, :mod:`curation.index.calibration`); pHash by minus the Hamming distance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from curation.eval.copy_detection import (
    CopySetTruth,
    copy_set_truth,
    knn_pairs,
    score_copy_predictions,
)
from curation.eval.copy_edits import (
    BACKGROUND_SOURCES,
    RealCopySet,
    build_real_copy_set,
    lookalike_pairs,
)
from curation.eval.debian_pictures import DEFAULT_PACKAGES, apt_download, package_pictures
from curation.eval.real_images import RealPicture, real_pictures
from curation.index.calibration import calibrated_scores, neighbour_density
from curation.stages.phash import BITS, phash_image

logger = logging.getLogger(__name__)

VERSION = "v1"
SPLITS = ("tuning", "heldout")
SOURCES = ("packages", "debian")
K_NEIGHBOURS = 10
# The pixel check of lvd dedup: a pair passes at dedup.verify_min, and passing adds
# dedup.verify_margin to its score, so that every threshold t splits the pairs as lvd dedup with
# threshold t does (a copy: score > t, or score > t - margin and verified).
VERIFY_MIN = 0.9
VERIFY_MARGIN = 0.15
DENSITY_RANKS = (5, 20)
_SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class BenchSettings:
    """How the copy sets are made (part of the benchmark's identity: change VERSION with them)."""

    seed: int = 0
    n_copies_per_picture: int = 3
    distractor_fraction: float = 0.25
    n_meme_templates: int = 4
    n_screenshot_templates: int = 8
    lookalikes_per_template: int = 4
    max_side: int = 320
    near_duplicate_bits: int = 6  # sources whose pHashes differ in at most this many bits: one kept
    min_grey_std: float = 12.0  # sources flatter than this (blank paper, one colour) are left out
    packages: tuple[str, ...] = DEFAULT_PACKAGES


def benchmark_root(cache: Path, source: str) -> Path:
    return Path(cache) / f"copydetect-{VERSION}-{source}"


def is_built(root: Path) -> bool:
    return (Path(root) / _SUCCESS).is_file()


def split_of(name: str) -> str:
    """The split of source picture ``name``: a hash, so adding pictures never moves others."""
    return SPLITS[hashlib.sha256(name.encode()).digest()[0] % 2]


def split_sources(sources: list[RealPicture]) -> dict[str, list[RealPicture]]:
    """Sources per split, in input order; background textures go to both (they are never
    pictures of the set, only what picture-in-picture copies are pasted on)."""
    out: dict[str, list[RealPicture]] = {split: [] for split in SPLITS}
    for source in sources:
        if source.name in BACKGROUND_SOURCES:
            for split in SPLITS:
                out[split].append(source)
        else:
            out[split_of(source.name)].append(source)
    return out


def _hash_bits(pixels: np.ndarray) -> np.ndarray:
    image = Image.fromarray(pixels)
    hashes = [phash_image(image), phash_image(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    return np.unpackbits(np.array(hashes, ">i8").view(np.uint8)).reshape(2, BITS)


def drop_near_duplicates(sources: list[RealPicture], max_bits: int) -> tuple[list, list[str]]:
    """``sources`` without those whose pHash, or that of their mirror image, is within
    ``max_bits`` of an earlier one's (the same drawing shipped twice, mirrored or recoloured: not
    distinct pictures, a flip is a copy edit); and the names dropped."""
    if not sources:
        return [], []
    bits = np.stack([_hash_bits(s.image) for s in sources]).astype(np.int16)  # [n, 2, BITS]
    signs = 2 * bits - 1
    plain = signs[:, 0]
    # distance of each picture, as is or mirrored, to each picture as is
    distance = np.minimum(BITS - plain @ plain.T, BITS - signs[:, 1] @ plain.T) // 2
    kept: list[int] = []
    dropped = []
    for n, source in enumerate(sources):
        if kept and distance[n, kept].min() <= max_bits:
            dropped.append(source.name)
        else:
            kept.append(n)
    return [sources[n] for n in kept], dropped


def _grey_std(pixels: np.ndarray) -> float:
    return float(np.asarray(Image.fromarray(pixels).convert("L"), np.float32).std())


def collect_sources(
    source: str, cache: Path, settings: BenchSettings, download=apt_download
) -> tuple[list[RealPicture], dict]:
    """The source pictures of ``source`` and a record of where they came from."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    pictures = real_pictures()
    record: dict = {"packages": {"wheels": {"pictures": len(pictures)}}}
    if source == "debian":
        for package in settings.packages:
            logger.info("loading pictures of Debian package %s", package)
            found = package_pictures(package, cache, download=download)
            pictures.extend(found.pictures)
            record["packages"][package] = {
                "version": found.version,
                "pictures": len(found.pictures),
                "skipped": found.skipped,
            }
    backgrounds = [p for p in pictures if p.name in BACKGROUND_SOURCES]
    others = [p for p in pictures if p.name not in BACKGROUND_SOURCES]
    flat = [p.name for p in others if _grey_std(p.image) < settings.min_grey_std]
    others = [p for p in others if p.name not in set(flat)]
    others, dropped = drop_near_duplicates(others, settings.near_duplicate_bits)
    record["flat_dropped"] = flat
    record["near_duplicates_dropped"] = dropped
    return backgrounds + others, record


def _package(source: str) -> str:
    parts = source.split(":")
    return parts[1] if parts[0] == "debian" else parts[0]


def _counts(pictures_table) -> dict:
    rows = pictures_table.to_pylist()
    return {
        "pictures": len(rows),
        "sources": len({r["source_name"] for r in rows}),
        "by_package": dict(sorted(Counter(_package(r["source"]) for r in rows).items())),
        "by_licence": dict(sorted(Counter(r["licence"] for r in rows).items())),
    }


def build_benchmark(
    cache: Path,
    source: str,
    settings: BenchSettings | None = None,
    *,
    download=apt_download,
) -> Path:
    """The benchmark folder of ``source`` under ``cache``, built first when it is not complete."""
    settings = settings or BenchSettings()
    root = benchmark_root(cache, source)
    if is_built(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}.*"):  # an interrupted earlier build
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    sources, record = collect_sources(source, Path(cache), settings, download)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        manifest: dict = {
            "version": VERSION,
            "source": source,
            "settings": asdict(settings),
            **record,
            "splits": {},
        }
        for n, (split, members) in enumerate(split_sources(sources).items()):
            logger.info("building the %s split from %d source pictures", split, len(members))
            built = build_real_copy_set(
                tmp / split,
                seed=settings.seed + n,
                n_copies_per_picture=settings.n_copies_per_picture,
                distractor_fraction=settings.distractor_fraction,
                max_side=settings.max_side,
                n_meme_templates=settings.n_meme_templates,
                n_screenshot_templates=settings.n_screenshot_templates,
                lookalikes_per_template=settings.lookalikes_per_template,
                sources=members,
            )
            kinds = Counter(built.ground_truth.column("kind").to_pylist())
            manifest["splits"][split] = {
                **_counts(built.pictures),
                "images": built.ground_truth.num_rows,
                "by_kind": dict(sorted(kinds.items())),
                "lookalike_pairs": len(lookalike_pairs(built.ground_truth, built.pictures)),
            }
            if split == "tuning":
                _write_train_images(built, tmp / "train_images")
        manifest["build_seconds"] = round(time.monotonic() - started, 1)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (tmp / _SUCCESS).write_text("")
        if root.exists():  # incomplete (no marker)
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("benchmark built in %.0f s: %s", time.monotonic() - started, root)
    return root


def _write_train_images(built: RealCopySet, folder: Path) -> None:
    """The unedited tuning pictures (originals and distractors), one file each."""
    folder.mkdir()
    for row in built.ground_truth.to_pylist():
        if row["kind"] in ("original", "distractor"):
            shutil.copyfile(built.root / row["file"], folder / f"{row['key']}.jpg")


def manifest(root: Path) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def load_split(root: Path, split: str) -> RealCopySet:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(root) / split
    return RealCopySet(
        folder,
        pq.read_table(folder / "ground_truth.parquet"),
        pq.read_table(folder / "pictures.parquet"),
    )


def split_truth(copy_set: RealCopySet, keys: list[str] | None = None) -> CopySetTruth:
    """The scorer's view of a split, for ``keys`` (default: the ground truth's order)."""
    table = copy_set.ground_truth
    all_keys = table.column("key").to_pylist()
    return copy_set_truth(
        keys if keys is not None else all_keys,
        dict(zip(all_keys, table.column("picture_id").to_pylist())),
        (
            k
            for k, kind in zip(all_keys, table.column("kind").to_pylist())
            if kind in ("original", "distractor")
        ),
        lookalike_pairs(table, copy_set.pictures),
    )


# --- methods -----------------------------------------------------------------------------------


def embed_descriptor(
    checkpoint: Path,
    copy_set: RealCopySet,
    *,
    scales: tuple[int, ...] = (),
    device: str = "auto",
    num_workers: int = 2,
) -> tuple[list[str], np.ndarray]:
    """Keys and embeddings of the split's images under the descriptor at ``checkpoint``."""
    from curation.models.embedder import load_embedder
    from curation.models.inference import BatchEmbedder, InferenceOptions

    embedder = load_embedder("descriptor", checkpoint, scales=scales)
    keys = copy_set.ground_truth.column("key").to_pylist()
    loaders = [partial(Path.read_bytes, copy_set.path(key)) for key in keys]
    runner = BatchEmbedder(embedder, InferenceOptions(device=device, num_workers=num_workers))
    try:
        result = runner.embed(loaders)
    finally:
        runner.close()
    if result.failures:
        index, status, message = result.failures[0]
        raise RuntimeError(f"{len(result.failures)} images failed, e.g. {keys[index]}: {message}")
    return [keys[i] for i in result.positions], result.embeddings


def descriptor_scores(
    embeddings: np.ndarray, k: int = K_NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """kNN pairs of ``embeddings`` with their raw cosine and density-calibrated scores."""
    i, j, cosine = knn_pairs(embeddings, k)
    density = neighbour_density(embeddings, None, DENSITY_RANKS)
    return i, j, {"cosine": cosine, "density": calibrated_scores(cosine, density[i], density[j])}


def phash_scores(copy_set: RealCopySet, k: int = K_NEIGHBOURS):
    """Keys, kNN pairs by Hamming distance of pHashes, and their score (minus the distance)."""
    from curation.stages.phash import phash_bytes

    keys = copy_set.ground_truth.column("key").to_pylist()
    hashes = np.array([phash_bytes(copy_set.path(key).read_bytes()) for key in keys], ">i8")
    bits = np.unpackbits(hashes.view(np.uint8)).reshape(len(keys), BITS).astype(np.float32)
    signs = (2 * bits - 1) / np.sqrt(BITS)  # inner product = 1 - 2 * hamming / BITS
    i, j, similarity = knn_pairs(signs, k)
    hamming = np.rint((1 - similarity) * BITS / 2)
    return keys, i, j, {"hamming": -hamming}


_PREPARED: dict = {}  # a window-check worker's prepared images, by path


def _window_score_of(pair: tuple[str, str]) -> float:
    from curation.models.window_match import prepare_bytes, window_score

    for path in pair:
        if path not in _PREPARED:
            _PREPARED[path] = prepare_bytes(Path(path).read_bytes())
    return window_score(_PREPARED[pair[0]], _PREPARED[pair[1]])


def pair_window_scores(
    copy_set: RealCopySet, keys: list[str], i: np.ndarray, j: np.ndarray, workers: int = 2
) -> np.ndarray:
    """:func:`curation.models.window_match.window_score` of each pair ``(keys[i], keys[j])``, in
    ``workers`` processes (each image prepared once per process: pairs go out sorted)."""
    from multiprocessing import get_context

    order = np.lexsort((j, i))
    pairs = [(str(copy_set.path(keys[a])), str(copy_set.path(keys[b]))) for a, b in zip(i, j)]
    pairs = [pairs[k] for k in order]
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            found = pool.map(_window_score_of, pairs, chunksize=256)
    else:
        found = [_window_score_of(pair) for pair in pairs]
    _PREPARED.clear()
    scores = np.empty(len(pairs), np.float32)
    scores[order] = found
    return scores


def evaluate_embeddings(
    truth: CopySetTruth, embeddings: np.ndarray, window: Callable | None = None
) -> dict[str, dict]:
    """Metrics per score kind (cosine, density) of embeddings whose rows are ``truth.keys``;
    with ``window`` (``(i, j) -> window scores``), also each kind with the pixel check
    (``<kind>+verify``: :data:`VERIFY_MARGIN` added where the window score reaches
    :data:`VERIFY_MIN`)."""
    i, j, kinds = descriptor_scores(embeddings)
    if window is not None:
        verified = window(i, j) >= np.float32(VERIFY_MIN)
        for kind in list(kinds):
            kinds[f"{kind}+verify"] = kinds[kind] + np.float32(VERIFY_MARGIN) * verified
    return {kind: score_copy_predictions(truth, i, j, s) for kind, s in kinds.items()}


def untrained_checkpoint(arch: str, folder: Path) -> Path:
    """The network ``lvd train-descriptor arch=<arch>`` starts from (its defaults, its seed),
    saved as a checkpoint, like the trainer's ``--baseline``."""
    from curation.models.descriptor import save_descriptor_checkpoint
    from curation.train_descriptor import DescriptorTrainConfig
    from curation.train_descriptor.train import build_model

    cfg = DescriptorTrainConfig(arch=arch)
    model, arch_kwargs = build_model(cfg)
    inference = cfg.inference_settings(getattr(model, "patch_size", 1))
    path = Path(folder) / f"untrained-{arch}.pt"
    save_descriptor_checkpoint(
        path, model, arch=arch, dim=cfg.dim, arch_kwargs=arch_kwargs, inference=inference
    )
    return path


@dataclass(frozen=True)
class Method:
    name: str
    checkpoint: Path | None = None  # None: pHash
    store_calibration: bool = False


def choose_calibration(
    truth: CopySetTruth,
    embeddings: np.ndarray,
    target_precision: float,
    measured_on: str,
    pool_images: int | None = None,
):
    """The score kind and threshold reaching ``target_precision`` with the highest pair recall on
    this split (cosine on a tie), for a pool of ``pool_images`` (None: one the split's size);
    None when neither kind reaches it."""
    from curation.index.calibration import fit_calibration

    i, j, cosine = knn_pairs(embeddings, K_NEIGHBOURS)
    try:
        calibration, _ = fit_calibration(
            embeddings,
            i,
            j,
            cosine,
            truth.labels(i, j),
            truth.n_pairs,
            target_precision,
            ranks=DENSITY_RANKS,
            measured_on=measured_on,
            pool_scale=max(1.0, (pool_images or 0) / max(len(embeddings), 1)),
        )
    except ValueError:  # no kind reaches the target
        return None
    return calibration


def check_at_threshold(truth: CopySetTruth, embeddings: np.ndarray, calibration) -> dict:
    """Precision and recall of pairs scoring above a stored calibration's threshold."""
    from curation.eval.copy_detection import precision_recall_above

    i, j, kinds = descriptor_scores(embeddings)
    precision, recall = precision_recall_above(
        kinds[calibration.kind], truth.labels(i, j), truth.n_pairs, calibration.threshold
    )
    return {"precision": precision, "recall": recall}


def run_copydetect(
    root: Path,
    split: str,
    methods: list[Method],
    *,
    scales: tuple[int, ...] = (),
    target_precision: float = 0.95,
    device: str = "auto",
    num_workers: int = 2,
    pool_images: int | None = None,
    verify: bool = False,
) -> dict:
    """Evaluate ``methods`` on ``split`` of the built benchmark at ``root``; store calibrations
    (chosen on the tuning split for a pool of ``pool_images``, checked on held-out) for methods
    that ask. ``verify``: descriptors are also scored with the pixel check of every kNN pair
    (:func:`evaluate_embeddings`). A JSON-ready report."""
    from curation.models.descriptor import write_calibration

    sets = {name: load_split(root, name) for name in SPLITS}
    report: dict = {"benchmark": str(root), "split": split, "results": [], "calibrations": []}
    cache: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}

    def embedded(method: Method, name: str):
        if (method.name, name) not in cache:
            started = time.monotonic()
            logger.info("embedding the %s split with %s", name, method.name)
            cache[method.name, name] = embed_descriptor(
                method.checkpoint, sets[name], scales=scales, device=device, num_workers=num_workers
            )
            logger.info("embedded in %.0f s", time.monotonic() - started)
        return cache[method.name, name]

    for method in methods:
        started = time.monotonic()
        if method.checkpoint is None:
            keys, i, j, kinds = phash_scores(sets[split])
            truth = split_truth(sets[split], keys)
            scored = {kind: score_copy_predictions(truth, i, j, s) for kind, s in kinds.items()}
        else:
            keys, embeddings = embedded(method, split)
            window = None
            if verify:
                window = partial(pair_window_scores, sets[split], keys, workers=num_workers)
            scored = evaluate_embeddings(split_truth(sets[split], keys), embeddings, window)
        seconds = round(time.monotonic() - started, 1)
        for kind, metrics in scored.items():
            report["results"].append(
                {"method": method.name, "score": kind, **metrics, "seconds": seconds}
            )
        if method.store_calibration:
            keys, embeddings = embedded(method, "tuning")
            calibration = choose_calibration(
                split_truth(sets["tuning"], keys),
                embeddings,
                target_precision,
                f"{Path(root).name}:tuning",
                pool_images,
            )
            entry: dict = {"method": method.name, "checkpoint": str(method.checkpoint)}
            if calibration is None:
                entry["stored"] = None
                logger.warning(
                    "%s: no score threshold reaches precision %.2f on the tuning split; nothing "
                    "stored",
                    method.name,
                    target_precision,
                )
            else:
                write_calibration(method.checkpoint, calibration.to_dict())
                keys, embeddings = embedded(method, "heldout")
                entry["stored"] = calibration.to_dict()
                entry["heldout"] = check_at_threshold(
                    split_truth(sets["heldout"], keys), embeddings, calibration
                )
            report["calibrations"].append(entry)
    return report
