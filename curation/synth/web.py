"""A deterministic synthetic web: an image pool with planted copies, a seed set, an eval set and bad
files, plus the ground truth that later stages are scored against.

Layout under ``out_dir``::

    images/pool/<key>.jpg      pool originals, planted near/exact duplicates and eval copies (shuffled)
    images/seed/<key>.jpg      a seed dataset: a few classes, never drawn from the pool
    images/eval/<key>.jpg      an evaluation set; some of its images are copied into the pool
    images/bad/<name>          broken and unusual files
    ground_truth/{pool,seed,eval,bad,classes}.parquet
    synth_config.json          the config that made this web
    _SUCCESS                   completion marker

Every random choice comes from its own ``SeedSequence`` stream (keyed by purpose and item index), so
the same config gives byte-identical files on the same library versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from curation.synth.bad_files import write_bad_files
from curation.synth.images import MAX_CLASSES, class_recipe, render_image
from curation.synth.transforms import NEAR_DUPLICATE_TRANSFORMS, TRANSFORMS, apply_transform

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
JPEG_QUALITY = 90
MIN_SIDE, MAX_SIDE = 96, 256
SQUARE_FRACTION = 0.4
CONFIG_NAME = "synth_config.json"
SUCCESS_NAME = "_SUCCESS"

# One random stream per purpose, so changing one count does not reshuffle everything else.
STREAM_PLAN, STREAM_POOL, STREAM_COPY, STREAM_SEED, STREAM_EVAL, STREAM_EVAL_COPY = range(6)
STREAM_BAD, STREAM_URLS = 6, 7

POOL_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("class_id", pa.int32(), nullable=False),
        # "original" | "near_duplicate" | "exact_duplicate" | "eval_copy"
        pa.field("kind", pa.string(), nullable=False),
        # The original's pool key (or the eval key for eval copies); null for originals.
        pa.field("source_key", pa.string()),
        pa.field("transform", pa.string()),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)
SEED_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("class_id", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)
EVAL_SCHEMA = SEED_SCHEMA.append(pa.field("copied_into_pool", pa.bool_(), nullable=False))
CLASSES_SCHEMA = pa.schema(
    [
        pa.field("class_id", pa.int32(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("shape", pa.string(), nullable=False),
        pa.field("texture", pa.string(), nullable=False),
        pa.field("in_seed", pa.bool_(), nullable=False),
    ]
)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. ``n_pool`` counts pool *originals*; the served pool also holds the planted
    near duplicates, exact duplicates and eval copies."""

    seed: int = 0
    n_pool: int = 2000
    n_classes: int = 10
    n_near_duplicates: int = 200
    n_exact_duplicates: int = 40
    n_seed_classes: int = 4
    n_seed_per_class: int = 25
    n_eval: int = 100
    n_eval_copies_in_pool: int = 20

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SynthConfig.{field.name} must be an int >= 0, got {value!r}")
        if not 1 <= self.n_classes <= MAX_CLASSES:
            raise ValueError(f"n_classes must be in [1, {MAX_CLASSES}], got {self.n_classes}")
        if self.n_pool < 1:
            raise ValueError("n_pool must be >= 1")
        for name in ("n_near_duplicates", "n_exact_duplicates"):
            if getattr(self, name) > self.n_pool:
                raise ValueError(f"{name} ({getattr(self, name)}) exceeds n_pool ({self.n_pool})")
        if self.n_seed_classes > self.n_classes:
            raise ValueError(
                f"n_seed_classes ({self.n_seed_classes}) exceeds n_classes ({self.n_classes})"
            )
        if self.n_eval_copies_in_pool > self.n_eval:
            raise ValueError(
                f"n_eval_copies_in_pool ({self.n_eval_copies_in_pool}) exceeds n_eval ({self.n_eval})"
            )

    @property
    def n_served_pool(self) -> int:
        return (
            self.n_pool
            + self.n_near_duplicates
            + self.n_exact_duplicates
            + self.n_eval_copies_in_pool
        )

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SynthConfig keys {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class SynthWeb:
    """Where a generated synthetic web lives; all paths are absolute."""

    root: Path
    config: SynthConfig
    pool_dir: Path
    seed_dir: Path
    eval_dir: Path
    bad_dir: Path
    pool_table: Path
    seed_table: Path
    eval_table: Path
    bad_table: Path
    classes_table: Path

    @classmethod
    def at(cls, root: Path, config: SynthConfig) -> SynthWeb:
        root = Path(root).resolve()
        images, truth = root / "images", root / "ground_truth"
        return cls(
            root=root,
            config=config,
            pool_dir=images / "pool",
            seed_dir=images / "seed",
            eval_dir=images / "eval",
            bad_dir=images / "bad",
            pool_table=truth / "pool.parquet",
            seed_table=truth / "seed.parquet",
            eval_table=truth / "eval.parquet",
            bad_table=truth / "bad.parquet",
            classes_table=truth / "classes.parquet",
        )

    @classmethod
    def load(cls, root: Path) -> SynthWeb:
        """Open a complete web; raises FileNotFoundError if ``root`` holds none."""
        config = _read_config(Path(root))
        if config is None or not (Path(root) / SUCCESS_NAME).exists():
            raise FileNotFoundError(
                f"{root} holds no complete synthetic web; generate one with `lvd synth --out {root}`"
            )
        return cls.at(root, config)

    def read(self, name: str) -> pa.Table:
        """Read one ground-truth table: "pool", "seed", "eval", "bad" or "classes"."""
        tables = {
            "pool": self.pool_table,
            "seed": self.seed_table,
            "eval": self.eval_table,
            "bad": self.bad_table,
            "classes": self.classes_table,
        }
        if name not in tables:
            raise ValueError(f"unknown ground-truth table {name!r}; known: {sorted(tables)}")
        return pq.read_table(tables[name])


def stream_rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """The generator for item ``index`` of purpose ``stream`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(stream, index)))


def draw_size(rng: np.random.Generator) -> tuple[int, int]:
    """A (width, height) between MIN_SIDE and MAX_SIDE; some square, most not."""
    width = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    if rng.random() < SQUARE_FRACTION:
        return width, width
    return width, int(rng.integers(MIN_SIDE, MAX_SIDE + 1))


def encode_jpeg(img: Image.Image) -> bytes:
    # Fixed quality, no optimize/progressive and no metadata: the bytes depend only on the pixels.
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _balanced(n: int, values: list[Any] | tuple[Any, ...], rng: np.random.Generator) -> list[Any]:
    """``n`` values cycling through ``values`` (counts differ by at most one), shuffled."""
    cycled = [values[i % len(values)] for i in range(n)]
    return [cycled[i] for i in rng.permutation(n)] if n else []


@dataclass
class _PoolItem:
    class_id: int
    kind: str
    source: int | None = None  # original index, or eval index for eval copies
    transform: str | None = None
    key: str = ""


class _Writer:
    """Writes image bytes under a root and records what was written."""

    def __init__(self, root: Path, progress: tqdm) -> None:
        self.root = root
        self.progress = progress

    def write(self, relative: str, data: bytes) -> dict[str, Any]:
        (self.root / relative).write_bytes(data)
        self.progress.update(1)
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        return {
            "file": relative,
            "width": width,
            "height": height,
            "sha256": hashlib.sha256(data).hexdigest(),
        }


def _plan_pool(
    cfg: SynthConfig, rng: np.random.Generator, eval_classes: list[int]
) -> list[_PoolItem]:
    originals = [
        _PoolItem(int(c), "original") for c in _balanced(cfg.n_pool, range(cfg.n_classes), rng)
    ]
    items = list(originals)
    near_sources = rng.choice(cfg.n_pool, size=cfg.n_near_duplicates, replace=False)
    near_transforms = _balanced(cfg.n_near_duplicates, NEAR_DUPLICATE_TRANSFORMS, rng)
    for source, transform in zip(near_sources.tolist(), near_transforms):
        items.append(_PoolItem(originals[source].class_id, "near_duplicate", source, transform))
    exact_sources = rng.choice(cfg.n_pool, size=cfg.n_exact_duplicates, replace=False)
    for source in exact_sources.tolist():
        items.append(_PoolItem(originals[source].class_id, "exact_duplicate", source, "exact"))
    copied = np.sort(rng.choice(cfg.n_eval, size=cfg.n_eval_copies_in_pool, replace=False))
    eval_transforms = _balanced(cfg.n_eval_copies_in_pool, list(TRANSFORMS), rng)
    for source, transform in zip(copied.tolist(), eval_transforms):
        items.append(_PoolItem(eval_classes[source], "eval_copy", source, transform))
    # Shuffle so copies are not adjacent to their originals; keys follow the shuffled order.
    width = max(6, len(str(len(items) - 1)))
    for position, index in enumerate(rng.permutation(len(items)).tolist()):
        items[index].key = f"pool-{position:0{width}d}"
    return items


def _write_web(root: Path, cfg: SynthConfig, progress: bool | None) -> None:
    web = SynthWeb.at(root, cfg)
    for directory in (web.pool_dir, web.seed_dir, web.eval_dir, web.bad_dir, web.pool_table.parent):
        directory.mkdir(parents=True, exist_ok=True)
    plan_rng = stream_rng(cfg.seed, STREAM_PLAN)
    eval_classes = [int(c) for c in _balanced(cfg.n_eval, range(cfg.n_classes), plan_rng)]
    seed_classes = sorted(
        int(c) for c in plan_rng.choice(cfg.n_classes, cfg.n_seed_classes, replace=False)
    )
    items = _plan_pool(cfg, plan_rng, eval_classes)

    total = cfg.n_served_pool + cfg.n_eval + cfg.n_seed_classes * cfg.n_seed_per_class
    # disable=None lets tqdm decide: shown on a terminal only.
    bar = tqdm(
        total=total,
        desc="synth web",
        unit="img",
        disable=None if progress is None else not progress,
    )
    writer = _Writer(root, bar)

    def rel(directory: Path, name: str) -> str:
        return (directory / name).relative_to(root).as_posix()

    # Eval set first: the pool's eval copies are made from its files.
    eval_rows, eval_bytes = [], []
    for i, class_id in enumerate(eval_classes):
        rng = stream_rng(cfg.seed, STREAM_EVAL, i)
        data = encode_jpeg(render_image(rng, class_id, draw_size(rng)))
        key = f"eval-{i:04d}"
        eval_rows.append(
            {
                "key": key,
                "class_id": class_id,
                **writer.write(rel(web.eval_dir, f"{key}.jpg"), data),
            }
        )
        eval_bytes.append(data)

    pool_rows: list[dict[str, Any]] = []
    original_bytes: dict[int, bytes] = {}
    needed = {it.source for it in items if it.kind in ("near_duplicate", "exact_duplicate")}
    for i, item in enumerate(items[: cfg.n_pool]):
        rng = stream_rng(cfg.seed, STREAM_POOL, i)
        data = encode_jpeg(render_image(rng, item.class_id, draw_size(rng)))
        if i in needed:
            original_bytes[i] = data
        pool_rows.append(
            _pool_row(item, None, writer.write(rel(web.pool_dir, f"{item.key}.jpg"), data))
        )
    for j, item in enumerate(items[cfg.n_pool :]):
        if item.kind == "eval_copy":
            source_bytes, source_key = eval_bytes[item.source], eval_rows[item.source]["key"]
            stream = STREAM_EVAL_COPY
        else:
            source_bytes, source_key = original_bytes[item.source], items[item.source].key
            stream = STREAM_COPY
        if item.transform == "exact":
            data = source_bytes
        else:
            img = apply_transform(
                item.transform, _decode(source_bytes), stream_rng(cfg.seed, stream, j)
            )
            data = encode_jpeg(img)
        pool_rows.append(
            _pool_row(item, source_key, writer.write(rel(web.pool_dir, f"{item.key}.jpg"), data))
        )

    seed_rows = []
    for i in range(cfg.n_seed_classes * cfg.n_seed_per_class):
        class_id = seed_classes[i // cfg.n_seed_per_class]
        rng = stream_rng(cfg.seed, STREAM_SEED, i)
        data = encode_jpeg(render_image(rng, class_id, draw_size(rng)))
        key = f"seed-{i:04d}"
        seed_rows.append(
            {
                "key": key,
                "class_id": class_id,
                **writer.write(rel(web.seed_dir, f"{key}.jpg"), data),
            }
        )
    bar.close()

    copied = {it.source for it in items if it.kind == "eval_copy"}
    for i, row in enumerate(eval_rows):
        row["copied_into_pool"] = i in copied
    pool_rows.sort(key=lambda row: row["key"])
    _write_table(web.pool_table, pool_rows, POOL_SCHEMA)
    _write_table(web.seed_table, seed_rows, SEED_SCHEMA)
    _write_table(web.eval_table, eval_rows, EVAL_SCHEMA)
    bad = write_bad_files(web.bad_dir, stream_rng(cfg.seed, STREAM_BAD), relative_to=root)
    pq.write_table(bad, web.bad_table)
    classes = [class_recipe(c) for c in range(cfg.n_classes)]
    class_rows = [
        {
            "class_id": r.class_id,
            "name": r.name,
            "shape": r.shape,
            "texture": r.texture,
            "in_seed": r.class_id in seed_classes,
        }
        for r in classes
    ]
    _write_table(web.classes_table, class_rows, CLASSES_SCHEMA)
    config_json = {"format_version": FORMAT_VERSION, "config": cfg.to_dict()}
    (root / CONFIG_NAME).write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    (root / SUCCESS_NAME).write_text("")


def _pool_row(item: _PoolItem, source_key: str | None, written: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": item.key,
        "class_id": item.class_id,
        "kind": item.kind,
        "source_key": source_key,
        "transform": item.transform,
        **written,
    }


def _write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _read_config(root: Path) -> SynthConfig | None:
    path = root / CONFIG_NAME
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
        if payload.get("format_version") != FORMAT_VERSION:
            return None
        return SynthConfig.from_dict(payload["config"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        logger.warning("ignoring unreadable %s: %s", path, err)
        return None


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def generate_synthetic_web(
    out_dir: Path, cfg: SynthConfig, *, progress: bool | None = None
) -> SynthWeb:
    """Generate the synthetic web described by ``cfg`` into ``out_dir`` and return its paths.

    If ``out_dir`` already holds a complete web made with the same config, it is returned as is. A
    web made with another config is replaced; any other non-empty directory is refused. Everything
    is written to a temp directory beside ``out_dir`` and renamed into place, so an interrupted run
    never leaves a half web. ``progress``: show a progress bar (None: only on a terminal).
    """
    out_dir = Path(out_dir).resolve()
    existing = _read_config(out_dir)
    if existing == cfg and (out_dir / SUCCESS_NAME).exists():
        logger.info("synthetic web at %s is complete for this config; reusing it", out_dir)
        return SynthWeb.at(out_dir, cfg)
    if out_dir.exists() and not (out_dir / CONFIG_NAME).exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} is not empty and holds no synthetic web; choose another --out or empty it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        _write_web(tmp, cfg, progress)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "synthetic web at %s: %d pool files (%d originals), %d seed, %d eval, in %.1fs",
        out_dir,
        cfg.n_served_pool,
        cfg.n_pool,
        cfg.n_seed_classes * cfg.n_seed_per_class,
        cfg.n_eval,
        time.perf_counter() - started,
    )
    return SynthWeb.at(out_dir, cfg)
