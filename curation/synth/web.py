"""Generate a deterministic synthetic web: an image pool with planted copies, a seed set, an eval
set and bad files, plus the ground truth that later stages are scored against (layout and tables in
:mod:`curation.synth.layout`).

Every random choice comes from its own ``SeedSequence`` stream (keyed by purpose and item index), so
the same config gives byte-identical files on the same library versions.
"""

from __future__ import annotations

import hashlib
import io
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
from curation.synth.images import class_recipe, render_image
from curation.synth.layout import (
    CLASSES_SCHEMA,
    CONFIG_NAME,
    EVAL_SCHEMA,
    POOL_SCHEMA,
    SEED_SCHEMA,
    STREAM_BAD,
    STREAM_COPY,
    STREAM_EVAL,
    STREAM_EVAL_COPY,
    STREAM_PLAN,
    STREAM_POOL,
    STREAM_SEED,
    SUCCESS_NAME,
    SynthConfig,
    SynthWeb,
    read_config,
    stream_rng,
    write_config,
)
from curation.synth.transforms import NEAR_DUPLICATE_TRANSFORMS, TRANSFORMS, apply_transform

logger = logging.getLogger(__name__)

__all__ = ["SynthConfig", "SynthWeb", "generate_synthetic_web"]

JPEG_QUALITY = 90
MIN_SIDE, MAX_SIDE = 96, 256
SQUARE_FRACTION = 0.4


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


def render_jpeg(seed: int, stream: int, index: int, class_id: int) -> bytes:
    """Item ``index`` of ``stream``: its size and pixels both drawn from its own generator."""
    rng = stream_rng(seed, stream, index)
    return encode_jpeg(render_image(rng, class_id, draw_size(rng)))


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
    kind: str  # "original" | "near_duplicate" | "exact_duplicate" | "eval_copy"
    source: int | None = None  # index of the pool original, or of the eval image
    transform: str | None = None
    key: str = ""


@dataclass(frozen=True)
class _Plan:
    pool: list[_PoolItem]  # originals first (index = original index), then copies
    eval_classes: list[int]
    seed_classes: list[int]


def _plan(cfg: SynthConfig) -> _Plan:
    """Decide every class, copy source and transform up front, from the plan stream alone."""
    rng = stream_rng(cfg.seed, STREAM_PLAN)
    eval_classes = [int(c) for c in _balanced(cfg.n_eval, range(cfg.n_classes), rng)]
    seed_classes = sorted(
        int(c) for c in rng.choice(cfg.n_classes, cfg.n_seed_classes, replace=False)
    )

    pool_classes = _balanced(cfg.n_pool, range(cfg.n_classes), rng)
    items = [_PoolItem(int(c), "original") for c in pool_classes]
    # Sources without replacement: two copies of one original by the same deterministic edit
    # (say hflip) would be byte-identical to each other, which the ground truth would not say.
    near_sources = rng.choice(cfg.n_pool, size=cfg.n_near_duplicates, replace=False).tolist()
    near_transforms = _balanced(cfg.n_near_duplicates, NEAR_DUPLICATE_TRANSFORMS, rng)
    for source, transform in zip(near_sources, near_transforms):
        items.append(_PoolItem(items[source].class_id, "near_duplicate", source, transform))
    for source in rng.choice(cfg.n_pool, size=cfg.n_exact_duplicates, replace=False).tolist():
        items.append(_PoolItem(items[source].class_id, "exact_duplicate", source, "exact"))
    copied = np.sort(rng.choice(cfg.n_eval, size=cfg.n_eval_copies_in_pool, replace=False))
    eval_transforms = _balanced(cfg.n_eval_copies_in_pool, list(TRANSFORMS), rng)
    for source, transform in zip(copied.tolist(), eval_transforms):
        items.append(_PoolItem(eval_classes[source], "eval_copy", source, transform))

    # Shuffle so copies are not adjacent to their originals; keys follow the shuffled order.
    width = max(6, len(str(len(items) - 1)))
    for position, index in enumerate(rng.permutation(len(items)).tolist()):
        items[index].key = f"pool-{position:0{width}d}"
    return _Plan(items, eval_classes, seed_classes)


class _Writer:
    """Writes image files under the web's root and describes what it wrote."""

    def __init__(self, root: Path, progress: tqdm) -> None:
        self.root = root
        self.progress = progress

    def write(self, directory: Path, key: str, data: bytes) -> dict[str, Any]:
        path = directory / f"{key}.jpg"
        path.write_bytes(data)
        self.progress.update(1)
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        return {
            "key": key,
            "file": path.relative_to(self.root).as_posix(),
            "width": width,
            "height": height,
            "sha256": hashlib.sha256(data).hexdigest(),
        }


def _write_eval(web: SynthWeb, plan: _Plan, writer: _Writer) -> tuple[list[dict], list[bytes]]:
    copied = {item.source for item in plan.pool if item.kind == "eval_copy"}
    rows, files = [], []
    for i, class_id in enumerate(plan.eval_classes):
        data = render_jpeg(web.config.seed, STREAM_EVAL, i, class_id)
        row = writer.write(web.eval_dir, f"eval-{i:04d}", data)
        rows.append({**row, "class_id": class_id, "copied_into_pool": i in copied})
        files.append(data)
    return rows, files


def _write_pool(
    web: SynthWeb, plan: _Plan, writer: _Writer, eval_rows: list[dict], eval_files: list[bytes]
) -> list[dict]:
    cfg = web.config
    needed = {item.source for item in plan.pool if item.kind != "eval_copy"}
    originals: dict[int, bytes] = {}
    rows = []
    for i, item in enumerate(plan.pool[: cfg.n_pool]):
        data = render_jpeg(cfg.seed, STREAM_POOL, i, item.class_id)
        if i in needed:
            originals[i] = data
        rows.append(_pool_row(item, None, writer.write(web.pool_dir, item.key, data)))
    for j, item in enumerate(plan.pool[cfg.n_pool :]):
        if item.kind == "eval_copy":
            source, source_key = eval_files[item.source], eval_rows[item.source]["key"]
            rng = stream_rng(cfg.seed, STREAM_EVAL_COPY, j)
        else:
            source, source_key = originals[item.source], plan.pool[item.source].key
            rng = stream_rng(cfg.seed, STREAM_COPY, j)
        if item.transform == "exact":
            data = source  # byte for byte
        else:
            data = encode_jpeg(apply_transform(item.transform, _decode(source), rng))
        rows.append(_pool_row(item, source_key, writer.write(web.pool_dir, item.key, data)))
    return sorted(rows, key=lambda row: row["key"])


def _pool_row(item: _PoolItem, source_key: str | None, written: dict[str, Any]) -> dict[str, Any]:
    return {
        **written,
        "class_id": item.class_id,
        "kind": item.kind,
        "source_key": source_key,
        "transform": item.transform,
    }


def _write_seed(web: SynthWeb, plan: _Plan, writer: _Writer) -> list[dict]:
    cfg = web.config
    rows = []
    for i in range(cfg.n_seed_classes * cfg.n_seed_per_class):
        class_id = plan.seed_classes[i // cfg.n_seed_per_class]
        data = render_jpeg(cfg.seed, STREAM_SEED, i, class_id)
        rows.append({**writer.write(web.seed_dir, f"seed-{i:04d}", data), "class_id": class_id})
    return rows


def _write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _write_web(root: Path, cfg: SynthConfig, progress: bool | None) -> None:
    web = SynthWeb.at(root, cfg)
    for directory in (web.pool_dir, web.seed_dir, web.eval_dir, web.bad_dir, web.pool_table.parent):
        directory.mkdir(parents=True, exist_ok=True)
    plan = _plan(cfg)
    total = cfg.n_served_pool + cfg.n_eval + cfg.n_seed_classes * cfg.n_seed_per_class
    # disable=None lets tqdm decide: a bar on a terminal, nothing in logs.
    disable = None if progress is None else not progress
    with tqdm(total=total, desc="synth web", unit="img", disable=disable) as bar:
        writer = _Writer(root, bar)
        eval_rows, eval_files = _write_eval(web, plan, writer)  # first: the pool copies from it
        pool_rows = _write_pool(web, plan, writer, eval_rows, eval_files)
        seed_rows = _write_seed(web, plan, writer)

    _write_table(web.pool_table, pool_rows, POOL_SCHEMA)
    _write_table(web.seed_table, seed_rows, SEED_SCHEMA)
    _write_table(web.eval_table, eval_rows, EVAL_SCHEMA)
    bad = write_bad_files(web.bad_dir, stream_rng(cfg.seed, STREAM_BAD), relative_to=root)
    pq.write_table(bad, web.bad_table)
    class_rows = []
    for recipe in map(class_recipe, range(cfg.n_classes)):
        row = {"class_id": recipe.class_id, "name": recipe.name, "shape": recipe.shape}
        row.update(texture=recipe.texture, in_seed=recipe.class_id in plan.seed_classes)
        class_rows.append(row)
    _write_table(web.classes_table, class_rows, CLASSES_SCHEMA)
    write_config(root, cfg)
    (root / SUCCESS_NAME).write_text("")


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
    if read_config(out_dir) == cfg and (out_dir / SUCCESS_NAME).exists():
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
        tmp.chmod(0o755)  # mkdtemp makes it private; the web is meant to be served and shared
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
