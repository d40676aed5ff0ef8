from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.synth import SynthConfig, SynthWeb, generate_synthetic_web
from curation.synth.layout import CONFIG_NAME, SUCCESS_NAME
from curation.synth.transforms import NEAR_DUPLICATE_TRANSFORMS, NEAR_EXACT_TRANSFORMS


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def pixel_hash(path: Path) -> str:
    with Image.open(path) as img:
        return hashlib.sha256(img.convert("RGB").tobytes()).hexdigest()


def thumbnails(root: Path, files: list[str], side: int = 16) -> np.ndarray:
    """(n, side*side*3) float32 box-filtered thumbnails: a crude but honest copy detector."""
    out = []
    for file in files:
        with Image.open(root / file) as img:
            small = img.convert("RGB").resize((side, side), Image.Resampling.BOX)
        out.append(np.asarray(small, dtype=np.float32).ravel())
    return np.stack(out)


def rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0) / a.shape[1])


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_tree(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    again = generate_synthetic_web(tmp_path / "again", small_synth_web.config, progress=False)
    first, second = tree_digest(small_synth_web.root), tree_digest(again.root)
    assert len(first) > small_synth_web.config.n_served_pool
    assert "ground_truth/pool.parquet" in first
    assert first == second


def test_different_seed_differs(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    other_cfg = dataclasses.replace(small_synth_web.config, seed=small_synth_web.config.seed + 1)
    other = generate_synthetic_web(tmp_path / "other", other_cfg, progress=False)
    first, second = tree_digest(small_synth_web.root), tree_digest(other.root)
    assert first.keys() == second.keys()  # same layout ...
    differing = [name for name in first if first[name] != second[name]]
    pool_files = [n for n in first if n.startswith("images/pool/")]
    assert all(name in differing for name in pool_files)  # ... different content
    assert "ground_truth/pool.parquet" in differing


# --- layout and ground truth --------------------------------------------------------------------


def test_layout_and_counts(small_synth_web: SynthWeb) -> None:
    cfg = small_synth_web.config
    pool = small_synth_web.read("pool")
    assert pool.num_rows == cfg.n_served_pool == len(list(small_synth_web.pool_dir.glob("*.jpg")))
    kinds = Counter(pool.column("kind").to_pylist())
    assert kinds == {
        "original": cfg.n_pool,
        "near_duplicate": cfg.n_near_duplicates,
        "exact_duplicate": cfg.n_exact_duplicates,
        "eval_copy": cfg.n_eval_copies_in_pool,
    }
    assert small_synth_web.read("seed").num_rows == cfg.n_seed_classes * cfg.n_seed_per_class
    assert small_synth_web.read("eval").num_rows == cfg.n_eval
    assert json.loads((small_synth_web.root / CONFIG_NAME).read_text())["config"] == cfg.to_dict()
    assert (small_synth_web.root / SUCCESS_NAME).exists()
    # No temp directories left beside the web.
    assert [p.name for p in small_synth_web.root.parent.iterdir()] == [small_synth_web.root.name]


def test_pool_ground_truth_is_consistent(small_synth_web: SynthWeb) -> None:
    cfg = small_synth_web.config
    rows = small_synth_web.read("pool").to_pylist()
    by_key = {row["key"]: row for row in rows}
    eval_keys = set(small_synth_web.read("eval").column("key").to_pylist())
    assert len(by_key) == len(rows)

    originals = [r for r in rows if r["kind"] == "original"]
    class_counts = Counter(r["class_id"] for r in originals)
    assert set(class_counts) == set(range(cfg.n_classes))
    assert max(class_counts.values()) - min(class_counts.values()) <= 1

    for row in rows:
        path = small_synth_web.root / row["file"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        with Image.open(path) as img:
            assert img.size == (row["width"], row["height"])
            assert img.format == "JPEG" and img.mode == "RGB"
        if row["kind"] == "original":
            assert row["source_key"] is None and row["transform"] is None
        elif row["kind"] == "eval_copy":
            assert row["source_key"] in eval_keys
        else:
            source = by_key[row["source_key"]]
            assert source["kind"] == "original"
            assert source["class_id"] == row["class_id"]
            if row["kind"] == "exact_duplicate":
                assert row["transform"] == "exact" and row["sha256"] == source["sha256"]
            else:
                assert row["transform"] in NEAR_DUPLICATE_TRANSFORMS
                assert row["sha256"] != source["sha256"]

    # Exact dedup by sha256 removes exactly the planted exact duplicates (and exact eval copies).
    exact_eval = sum(1 for r in rows if r["kind"] == "eval_copy" and r["transform"] == "exact")
    n_distinct = len({r["sha256"] for r in rows})
    assert n_distinct == len(rows) - cfg.n_exact_duplicates
    assert exact_eval >= 1  # eval copies include byte copies of eval files, not in the pool twice


def test_pool_is_shuffled(small_synth_web: SynthWeb) -> None:
    rows = small_synth_web.read("pool").to_pylist()
    position = {r["key"]: i for i, r in enumerate(rows)}
    copies = [r for r in rows if r["kind"] in ("near_duplicate", "exact_duplicate")]
    gaps = [abs(position[r["key"]] - position[r["source_key"]]) for r in copies]
    assert np.median(gaps) > 5
    kinds_head = {r["kind"] for r in rows[: len(rows) // 2]}
    assert "near_duplicate" in kinds_head  # copies are not all appended at the end


def test_eval_copies_point_at_eval_images(small_synth_web: SynthWeb) -> None:
    cfg = small_synth_web.config
    eval_rows = small_synth_web.read("eval").to_pylist()
    copies = [r for r in small_synth_web.read("pool").to_pylist() if r["kind"] == "eval_copy"]
    copied = {r["key"] for r in eval_rows if r["copied_into_pool"]}
    assert len(copied) == cfg.n_eval_copies_in_pool
    assert {r["source_key"] for r in copies} == copied
    eval_by_key = {r["key"]: r for r in eval_rows}
    for copy in copies:
        source = eval_by_key[copy["source_key"]]
        assert copy["class_id"] == source["class_id"]
        if copy["transform"] == "exact":
            assert copy["sha256"] == source["sha256"]


def test_seed_set_is_not_drawn_from_the_pool(small_synth_web: SynthWeb) -> None:
    cfg = small_synth_web.config
    seed = small_synth_web.read("seed").to_pylist()
    pool = small_synth_web.read("pool").to_pylist()
    assert len({r["class_id"] for r in seed}) == cfg.n_seed_classes
    assert Counter(r["class_id"] for r in seed) == {
        c: cfg.n_seed_per_class for c in {r["class_id"] for r in seed}
    }
    assert not {r["key"] for r in seed} & {r["key"] for r in pool}
    pool_pixels = {pixel_hash(small_synth_web.root / r["file"]) for r in pool}
    seed_pixels = {pixel_hash(small_synth_web.root / r["file"]) for r in seed}
    assert not pool_pixels & seed_pixels
    assert not {r["sha256"] for r in seed} & {r["sha256"] for r in pool}
    classes = small_synth_web.read("classes").to_pylist()
    assert {c["class_id"] for c in classes if c["in_seed"]} == {r["class_id"] for r in seed}


def test_copies_are_near_and_distinct_images_are_far(default_web) -> None:
    """With a plain thumbnail distance, planted near-exact copies sit close to their source while no
    two pool originals (nor seed or uncopied eval images) come anywhere near each other."""
    web = default_web
    pool = web.read("pool").to_pylist()
    originals = [r for r in pool if r["kind"] == "original"]
    thumbs = thumbnails(web.root, [r["file"] for r in originals])
    index = {r["key"]: i for i, r in enumerate(originals)}

    between = rms_distances(thumbs, thumbs)
    np.fill_diagonal(between, np.inf)
    closest_pair = float(between.min())
    copies = [
        r for r in pool if r["transform"] in NEAR_EXACT_TRANSFORMS and r["kind"] != "eval_copy"
    ]
    copy_thumbs = thumbnails(web.root, [r["file"] for r in copies])
    source_thumbs = thumbs[[index[r["source_key"]] for r in copies]]
    copy_distance = np.sqrt(((copy_thumbs - source_thumbs) ** 2).mean(1))
    assert float(copy_distance.max()) < 8.0 < 10.0 < closest_pair

    seed = web.read("seed").to_pylist()
    uncopied = [r for r in web.read("eval").to_pylist() if not r["copied_into_pool"]]
    others = thumbnails(web.root, [r["file"] for r in seed + uncopied])
    assert float(rms_distances(others, thumbs).min()) > 10.0


# --- reuse, replacement and validation ----------------------------------------------------------


def test_complete_web_is_reused_not_regenerated(small_synth_web: SynthWeb) -> None:
    marker = small_synth_web.root / "images" / "pool" / "pool-000000.jpg"
    before = marker.stat().st_mtime_ns
    again = generate_synthetic_web(small_synth_web.root, small_synth_web.config)
    assert again == small_synth_web
    assert marker.stat().st_mtime_ns == before


def test_web_with_other_config_is_replaced(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        small_synth_web.config, n_pool=30, n_near_duplicates=5, n_exact_duplicates=2
    )
    generate_synthetic_web(tmp_path / "web", cfg, progress=False)
    bigger = dataclasses.replace(cfg, n_pool=40)
    web = generate_synthetic_web(tmp_path / "web", bigger, progress=False)
    assert SynthWeb.load(tmp_path / "web").config == bigger
    assert web.read("pool").num_rows == bigger.n_served_pool
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web"]


def test_refuses_non_empty_foreign_directory(small_synth_web: SynthWeb, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic_web(tmp_path, small_synth_web.config, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_failed_generation_leaves_nothing(
    small_synth_web: SynthWeb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import curation.synth.web as web_module

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(web_module, "write_bad_files", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_synthetic_web(tmp_path / "web", small_synth_web.config, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no complete synthetic web"):
        SynthWeb.load(tmp_path / "web")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_near_duplicates": 5000}, "exceeds n_pool"),
        ({"n_seed_classes": 11}, "exceeds n_classes"),
        ({"n_eval_copies_in_pool": 101}, "exceeds n_eval"),
        ({"n_classes": 0}, "n_classes"),
        ({"seed": -1}, "seed"),
        ({"n_pool": 2.5}, "n_pool"),
    ],
)
def test_config_validation(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthConfig(**{**dataclasses.asdict(SynthConfig()), **changes})


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown SynthConfig keys"):
        SynthConfig.from_dict({"seed": 1, "n_pools": 3})


# --- the default-size web -----------------------------------------------------------------------


def test_default_web_size_and_shapes(default_web) -> None:
    # How fast it generates is measured by benchmarks/bench_synth.py, not asserted here.
    cfg = default_web.config
    assert cfg == SynthConfig(seed=0)
    total = cfg.n_served_pool + cfg.n_eval + cfg.n_seed_classes * cfg.n_seed_per_class
    assert total >= 2000
    assert default_web.read("pool").num_rows == cfg.n_served_pool
    sizes = pq.read_table(default_web.pool_table, columns=["width", "height"]).to_pydict()
    widths, heights = np.array(sizes["width"]), np.array(sizes["height"])
    originals_square = np.mean(widths == heights)
    assert 0.2 < originals_square < 0.7  # a mix of square and non-square images
    assert widths.min() >= 32 and widths.max() > 200
