"""Calibrated copy scores (curation/index/calibration.py): neighbour density against a background,
the calibrated pair score, centering, thresholds for a target precision, and the checkpoint copy."""

import numpy as np
import pytest
import torch

from curation.index.calibration import (
    ScoreCalibration,
    calibrated_scores,
    center_and_normalise,
    edge_scores,
    neighbour_density,
    threshold_for_precision,
)


def unit(rng, n, d=16):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_density(q, b, lo, hi, skip_self):
    sims = q @ b.T
    out = []
    for r, row in enumerate(sims):
        row = np.delete(row, r) if skip_self else row
        ranked = np.sort(row)[::-1]
        out.append(ranked[lo - 1 : hi].mean())
    return np.array(out, np.float32)


def test_density_is_the_mean_of_the_ranked_neighbours_never_the_image_itself():
    rng = np.random.default_rng(0)
    x = unit(rng, 300)
    got = neighbour_density(x, None, (5, 20))
    np.testing.assert_allclose(got, brute_density(x, x, 5, 20, True), atol=1e-5)
    background = unit(rng, 200)
    got = neighbour_density(x[:50], background, (1, 3))
    np.testing.assert_allclose(got, brute_density(x[:50], background, 1, 3, False), atol=1e-5)
    # with the image itself counted, rank 1 would always be 1.0
    assert neighbour_density(x, None, (1, 1)).max() < 0.99


def test_density_copes_with_fewer_background_rows_than_ranks():
    x = unit(np.random.default_rng(1), 4)
    got = neighbour_density(x, None, (5, 20))  # only 3 others: ranks clipped to what exists
    np.testing.assert_allclose(got, brute_density(x, x, 3, 3, True), atol=1e-6)
    assert neighbour_density(x[:1], None, (5, 20)).tolist() == [0.0]


def test_a_crowded_neighbourhood_lowers_the_score_of_the_same_cosine():
    sim = np.array([0.8, 0.8], np.float32)
    scores = calibrated_scores(sim, np.array([0.7, 0.1]), np.array([0.7, 0.1]))
    assert scores[0] == pytest.approx(0.1) and scores[1] == pytest.approx(0.7)
    calib = ScoreCalibration(kind="density")
    density = np.array([0.7, 0.7, 0.1, 0.1], np.float32)
    i, j = np.array([0, 2]), np.array([1, 3])
    np.testing.assert_allclose(edge_scores(calib, sim, i, j, density), scores)
    assert np.array_equal(edge_scores(ScoreCalibration(), sim, i, j, None), sim)
    with pytest.raises(ValueError, match="density"):
        edge_scores(calib, sim, i, j, None)


def test_centering_removes_the_common_direction():
    rng = np.random.default_rng(2)
    common = np.ones(16, np.float32) * 2
    x = unit(rng, 100) + common
    centred = center_and_normalise(x, x.mean(axis=0))
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    raw = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert (raw @ raw.T).mean() > 0.8 and abs((centred @ centred.T).mean()) < 0.1
    assert np.array_equal(center_and_normalise(raw, ()), raw)


def test_threshold_reaches_the_target_precision_with_the_most_recall():
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.3
    scores = np.where(labels, rng.normal(1.0, 0.5, 2000), rng.normal(0.0, 0.5, 2000))
    for target in (0.9, 0.95, 0.99):
        threshold, recall = threshold_for_precision(scores, labels, int(labels.sum()), target)
        accepted = scores > threshold
        assert labels[accepted].mean() >= target
        assert recall == pytest.approx(labels[accepted].sum() / labels.sum())
        # one more accepted prediction (the next lower score) would break the target or add no hit
        lower = scores[scores <= threshold].max()
        wider = scores >= lower
        assert labels[wider].mean() < target or labels[wider].sum() == labels[accepted].sum()
    assert threshold_for_precision(scores, np.zeros(2000, bool), 10, 0.9) == (None, 0.0)


def test_a_threshold_for_a_larger_pool_keeps_its_precision_there():
    """True pairs grow with the pool, false ones with its square: a threshold chosen for
    precision 0.95 on a labelled set misses it on a pool 5x larger (many more false pairs per
    true one), unless chosen with pool_scale=5."""
    rng = np.random.default_rng(8)

    def pairs(n_true, n_false):
        scores = np.concatenate([rng.normal(1.0, 0.4, n_true), rng.normal(0.0, 0.4, n_false)])
        return scores, np.arange(len(scores)) < n_true

    small_scores, small_labels = pairs(2_000, 20_000)
    big_scores, big_labels = pairs(10_000, 500_000)  # 5x the images: 5x true, 25x false
    for scale, holds in ((1.0, False), (5.0, True)):
        threshold, _ = threshold_for_precision(
            small_scores, small_labels, 2_000, 0.95, pool_scale=scale
        )
        precision = big_labels[big_scores > threshold].mean()
        assert (precision >= 0.94) == holds, (scale, precision)
    with pytest.raises(ValueError, match="pool_scale"):
        threshold_for_precision(small_scores, small_labels, 2_000, 0.95, pool_scale=0.5)


def test_ties_are_accepted_or_rejected_together():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([True, True, False, False])
    threshold, recall = threshold_for_precision(scores, labels, 2, 0.9)
    assert 0.5 <= threshold < 0.9 and recall == 0.5


def test_calibration_round_trips_through_a_dict_and_a_checkpoint(tmp_path):
    from curation.models.descriptor import (
        build_descriptor,
        load_descriptor_checkpoint,
        save_descriptor_checkpoint,
        write_calibration,
    )

    calib = ScoreCalibration("density", (4, 16), 0.5, 0.12, 0.95, (0.1, -0.2), "bench:tuning")
    assert ScoreCalibration.from_dict(calib.to_dict()) == calib
    assert ScoreCalibration.from_dict(None) == ScoreCalibration()
    with pytest.raises(ValueError):
        ScoreCalibration(kind="l2")
    torch.manual_seed(0)
    model = build_descriptor("resnet18", dim=8, width=4)
    path = save_descriptor_checkpoint(
        tmp_path / "d.pt", model, arch="resnet18", dim=8, arch_kwargs={"width": 4},
        inference={"size": 32, "resize": "square", "scales": [], "multiple_of": 1},
    )  # fmt: skip
    write_calibration(path, calib.to_dict())
    loaded, meta = load_descriptor_checkpoint(path)
    assert ScoreCalibration.from_dict(meta["inference"]["calibration"]) == calib
    assert meta["inference"]["size"] == 32  # the other inference settings are kept
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_fit_picks_the_score_with_the_most_recall_at_the_target():
    """Copies in a crowded cluster of look-alikes and copies in empty space: raw cosine must set
    its threshold above the look-alikes and loses the sparse copies' recall; density does not."""
    from curation.index.calibration import fit_calibration
    from curation.index.knn import knn_pairs

    rng = np.random.default_rng(4)
    d = 32
    crowd_centre = unit(rng, 1, d)[0]
    crowd = crowd_centre + 0.25 * rng.normal(size=(60, d)) / np.sqrt(d)  # look-alikes, cos ~0.94
    sparse = unit(rng, 60, d)
    copies = sparse + 0.5 * rng.normal(size=(60, d)) / np.sqrt(d)  # copies of sparse, cos ~0.89
    x = np.concatenate([crowd, sparse, copies]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    picture = np.concatenate([np.arange(60), 100 + np.arange(60), 100 + np.arange(60)])
    i, j, sim = knn_pairs(x, k=10, threshold=-1.0)
    labels = picture[i] == picture[j]
    calib, per_kind = fit_calibration(x, i, j, sim, labels, 60, 0.95, measured_on="planted")
    assert calib.kind == "density" and calib.target_precision == 0.95
    assert per_kind["density"]["recall"] > per_kind["cosine"]["recall"] + 0.3
    assert calib.measured_on == "planted" and calib.threshold == per_kind["density"]["threshold"]
    with pytest.raises(ValueError, match="no score reaches"):
        fit_calibration(x, i, j, sim, np.zeros_like(labels), 60, 0.95)
    # for a pool 5x larger: a threshold no lower, and the scale recorded with it
    larger, _ = fit_calibration(x, i, j, sim, labels, 60, 0.95, pool_scale=5.0)
    assert larger.pool_scale == 5.0 and calib.pool_scale == 1.0
    assert larger.threshold >= calib.threshold
    assert ScoreCalibration.from_dict(larger.to_dict()) == larger
