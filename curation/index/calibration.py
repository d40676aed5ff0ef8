"""Calibrated copy scores: raw cosine corrected for how crowded each image's neighbourhood is.

A raw cosine of 0.8 means "copy" for a photograph in a sparse region of descriptor space and
"same clip-art style" for an icon among hundreds of similar icons. SSCD (Pizzi et al. 2022, §4 and
SPEC.md §2) normalises scores against a background set: each image's *density* is the mean
similarity of its neighbours ranked ``ranks = (lo, hi)`` in the background (ranks count from 1,
never itself; the first few neighbours may be its own copies, hence ``lo > 1``), and the score of a
pair is ``cosine - beta * (density_a + density_b) / 2``. The background is the pool itself unless
another set is given. Thresholds on this score are chosen for a target precision on a labelled
benchmark (``lvd bench copydetect``) and stored with the descriptor checkpoint
(:func:`write_calibration`), so ``lvd dedup`` applies them with no option.

Centering (SSCD's "centering then L2"): subtracting the mean descriptor of a background set and
re-normalising spreads the descriptors over the sphere; :func:`center_and_normalise` applies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

ScoreKind = Literal["cosine", "density"]
SCORE_KINDS = ("cosine", "density")
_BLOCK = 2048  # query rows per exact search block


@dataclass(frozen=True)
class ScoreCalibration:
    """How an edge's score is computed and the copy threshold that goes with it.

    ``threshold`` None means: no calibrated threshold is known (the dedup config's applies)."""

    kind: ScoreKind = "cosine"
    ranks: tuple[int, int] = (5, 20)  # background neighbours [lo, hi] (1-based, inclusive)
    beta: float = 1.0
    threshold: float | None = None
    target_precision: float | None = None  # the precision the threshold was chosen for
    center: tuple[float, ...] = field(default=(), repr=False)  # background mean; () = none
    measured_on: str = ""  # which benchmark split chose the threshold
    # the pool the threshold was chosen for, in multiples of the measured set's size (see
    # threshold_for_precision): 1 = a pool like the measured set
    pool_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCORE_KINDS:
            raise ValueError(f"score kind must be one of {SCORE_KINDS}, got {self.kind!r}")
        lo, hi = self.ranks
        if not 1 <= lo <= hi:
            raise ValueError(f"ranks must satisfy 1 <= lo <= hi, got {self.ranks}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ranks"] = list(self.ranks)
        out["center"] = list(self.center)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ScoreCalibration:
        if not data:
            return cls()
        data = dict(data)
        data["ranks"] = tuple(data.get("ranks", (5, 20)))
        data["center"] = tuple(float(v) for v in data.get("center", ()))
        return cls(**data)


def center_and_normalise(vectors: np.ndarray, center: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """``(x - center) / ||x - center||`` row-wise as float32; an empty center leaves ``x`` as is."""
    x = np.asarray(vectors, dtype=np.float32)
    if len(center) == 0:
        return np.ascontiguousarray(x)
    y = x - np.asarray(center, dtype=np.float32)[None, :]
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(y / norms, dtype=np.float32)


def neighbour_density(
    queries: np.ndarray,
    background: np.ndarray | None = None,
    ranks: tuple[int, int] = (5, 20),
) -> np.ndarray:
    """Mean inner product of each query with its background neighbours ranked ``lo..hi``.

    ``background`` None: the queries are their own background and each query's own row is skipped.
    Exact and blockwise (no n x n matrix); fewer background rows than ``hi`` use what there is.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    self_background = background is None
    b = q if self_background else np.ascontiguousarray(background, dtype=np.float32)
    lo, hi = ranks
    available = len(b) - (1 if self_background else 0)
    hi = min(hi, available)
    out = np.zeros(len(q), dtype=np.float32)
    if hi < 1 or len(q) == 0:
        return out
    lo = min(lo, hi)
    for start in range(0, len(q), _BLOCK):
        scores = q[start : start + _BLOCK] @ b.T
        if self_background:
            rows = np.arange(len(scores))
            scores[rows, start + rows] = -np.inf
        top = -np.partition(-scores, hi - 1, axis=1)[:, :hi]
        top = -np.sort(-top, axis=1)
        out[start : start + _BLOCK] = top[:, lo - 1 : hi].mean(axis=1)
    return out


def calibrated_scores(
    similarity: np.ndarray,
    density_a: np.ndarray,
    density_b: np.ndarray,
    beta: float = 1.0,
) -> np.ndarray:
    """``similarity - beta * (density_a + density_b) / 2`` as float32."""
    s = np.asarray(similarity, dtype=np.float32)
    mean = (np.asarray(density_a, np.float32) + np.asarray(density_b, np.float32)) / 2
    return (s - np.float32(beta) * mean).astype(np.float32)


def edge_scores(
    calibration: ScoreCalibration,
    similarity: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    density: np.ndarray | None,
) -> np.ndarray:
    """The score of edges ``(i, j)`` with cosine ``similarity`` under ``calibration``."""
    if calibration.kind == "cosine":
        return np.asarray(similarity, dtype=np.float32)
    if density is None:
        raise ValueError("density scores need each image's neighbour density")
    return calibrated_scores(similarity, density[i], density[j], calibration.beta)


def threshold_for_precision(
    scores: np.ndarray,
    labels: np.ndarray,
    n_positives: int,
    precision: float,
    *,
    pool_scale: float = 1.0,
) -> tuple[float | None, float]:
    """The lowest score threshold whose predictions ``score > threshold`` reach ``precision``,
    and the recall there (over ``n_positives``). None when no threshold reaches it.

    ``pool_scale``: the pool the threshold is for, in multiples of the labelled set's size (same
    share of copies). True pairs grow with the pool, false pairs with its square (every image can
    meet every other), so at ``pool_scale`` times the images each false pair found here stands
    for ``pool_scale`` times as many per true one: precision there is ``tp / (tp + scale * fp)``.
    (Measured on the demo's synthetic web: a threshold for precision 0.95 on 400 originals gave
    0.70 on 2,000.)

    The threshold is the midpoint between the last accepted score and the next lower one, so
    ``score > threshold`` accepts exactly the chosen prefix of the ranking."""
    if pool_scale < 1:
        raise ValueError(
            f"pool_scale must be >= 1 (the pool's size / the labelled set's), got {pool_scale}"
        )
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s = s[order]
    hits = np.asarray(labels, dtype=bool)[order]
    tp = np.cumsum(hits)
    fp = np.arange(1, len(hits) + 1) - tp
    ok = tp >= precision * (tp + pool_scale * fp)
    # only cut between distinct scores (ties are accepted or rejected together)
    distinct = np.append(s[1:] < s[:-1], True)
    ok &= distinct
    if not ok.any() or n_positives <= 0:
        return None, 0.0
    best = int(np.flatnonzero(ok & (tp == tp[ok].max()))[0])
    below = s[best + 1] if best + 1 < len(s) else s[best] - 1e-3
    return float((s[best] + below) / 2), float(tp[best] / n_positives)


def fit_calibration(
    embeddings: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    similarity: np.ndarray,
    labels: np.ndarray,
    n_positives: int,
    target_precision: float,
    *,
    ranks: tuple[int, int] = (5, 20),
    kinds: tuple[str, ...] = SCORE_KINDS,
    measured_on: str = "",
    pool_scale: float = 1.0,
) -> tuple[ScoreCalibration, dict[str, dict[str, float | None]]]:
    """Choose the score kind and threshold with the most recall at ``target_precision`` on a
    labelled set: candidate pairs ``(i, j)`` (e.g. each image's nearest neighbours) with their
    cosine ``similarity`` among ``embeddings`` (the background for density), ``labels`` True for
    true copies, ``n_positives`` the number of true copy pairs; ``pool_scale``: the size of the
    pool the threshold is for, over this set's (:func:`threshold_for_precision`). Returns the
    chosen calibration and each kind's threshold and recall (on this set). Raises ValueError when
    no kind reaches the target."""
    density = neighbour_density(embeddings, None, ranks)
    per_kind: dict[str, dict[str, float | None]] = {}
    best: ScoreCalibration | None = None
    best_recall = -1.0
    for kind in kinds:
        calibration = ScoreCalibration(kind=kind, ranks=ranks)
        scores = edge_scores(calibration, similarity, i, j, density)
        threshold, recall = threshold_for_precision(
            scores, labels, n_positives, target_precision, pool_scale=pool_scale
        )
        per_kind[kind] = {"threshold": threshold, "recall": recall}
        if threshold is not None and recall > best_recall:
            best_recall = recall
            best = ScoreCalibration(
                kind=kind,
                ranks=ranks,
                threshold=threshold,
                target_precision=target_precision,
                measured_on=measured_on,
                pool_scale=pool_scale,
            )
    if best is None:
        raise ValueError(f"no score reaches precision {target_precision} on this set: {per_kind}")
    return best, per_kind
