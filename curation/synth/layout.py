"""The synthetic web's contract: its config, where its files live and what its tables hold.

Layout under a web's root::

    images/pool/<key>.jpg      pool originals, planted near/exact duplicates and eval copies (shuffled)
    images/seed/<key>.jpg      a seed dataset: a few classes, never drawn from the pool
    images/eval/<key>.jpg      an evaluation set; some of its images are copied into the pool
    images/bad/<name>          broken and unusual files
    ground_truth/{pool,seed,eval,bad,classes}.parquet
    synth_config.json          the config that made this web
    _SUCCESS                   completion marker
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.synth.images import MAX_CLASSES

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
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
        config = read_config(Path(root))
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


def read_config(root: Path) -> SynthConfig | None:
    """The config stored in ``root``, or None if there is none (or an unreadable one)."""
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


def write_config(root: Path, cfg: SynthConfig) -> None:
    payload = {"format_version": FORMAT_VERSION, "config": cfg.to_dict()}
    (root / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
