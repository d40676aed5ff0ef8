"""Unlabeled training images for the descriptor: folders, Parquet shards or webdataset tars, and a
dataset that returns two augmented views of each image.

Sources become lists of ``(key, loader)`` pairs (a loader returns the encoded bytes), so nothing is
decoded until a view is needed. Views are seeded by their position in an endless, per-epoch
shuffled stream (:class:`EpochSampler`), so a run is reproducible whatever the number of loader
processes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from curation.imaging import ImageRejected, decode_rgb
from curation.readers.image_bytes import image_bytes_loaders
from curation.readers.image_files import list_image_files
from curation.readers.input_shards import index_webdataset_tars
from curation.train_descriptor.augment import CopyAugment

logger = logging.getLogger(__name__)

Loader = Callable[[], bytes]
MAX_DECODE_TRIES = 16


def _whole_file(path: str) -> bytes:
    return Path(path).read_bytes()


def folder_loaders(root: Path) -> list[tuple[str, Loader]]:
    return [(p.stem, partial(_whole_file, str(p))) for p in list_image_files(root)]


def shard_loaders(paths: list[Path]) -> list[tuple[str, Loader]]:
    """Rows of ENCODED_IMAGE (inline or by offset) or IMAGE_RECORD (``ok`` rows, by offset)."""
    out: list[tuple[str, Loader]] = []
    for path in sorted(Path(p) for p in paths):
        table = pq.read_table(path)
        if "status" in table.column_names:
            table = table.filter(pc.equal(table.column("status"), "ok"))
        # Rows with neither inline bytes nor a source file have nothing to train on.
        present = pc.is_valid(table.column("source_file"))
        if "image" in table.column_names:
            present = pc.or_(present, pc.is_valid(table.column("image")))
        table = table.filter(present)
        out.extend(zip(table.column("key").to_pylist(), image_bytes_loaders(table)))
    return out


def tar_loaders(tars: list[Path], index_dir: Path) -> list[tuple[str, Loader]]:
    return shard_loaders(index_webdataset_tars(tars, index_dir))


def collect_loaders(
    images: Path | None = None,
    shards: Path | None = None,
    tars: Path | None = None,
    index_dir: Path | None = None,
) -> list[tuple[str, Loader]]:
    """Every image of the given sources (a folder of images, of Parquet shards, of tars)."""
    loaders: list[tuple[str, Loader]] = []
    if images is not None:
        loaders += folder_loaders(Path(images))
    if shards is not None:
        paths = sorted(Path(shards).glob("*.parquet"))
        if not paths:
            raise FileNotFoundError(f"no .parquet shards in {shards}")
        loaders += shard_loaders(paths)
    if tars is not None:
        paths = sorted(Path(tars).glob("*.tar"))
        if not paths:
            raise FileNotFoundError(f"no .tar shards in {tars}")
        loaders += tar_loaders(paths, Path(index_dir or Path(tars) / "_index"))
    if not loaders:
        raise FileNotFoundError("no training images: give a folder of images, shards or tars")
    return loaders


class EpochSampler(Sampler[int]):
    """An endless stream of sample ids ``epoch * n + i``, each epoch a fresh permutation of ``i``."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = n, seed

    def __iter__(self) -> Iterator[int]:
        for epoch in itertools.count():
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            yield from (epoch * self.n + int(i) for i in order)


class TwoViewDataset(Dataset):
    """Sample id -> two augmented views ``[2, size, size, 3]`` uint8 of one image, and its index.

    An image that fails to decode is skipped for the next one (logged once per image). With
    ``cache``, decoded images (downsized to what the crops need) stay in memory, per loader
    process: about 60 KB an image at 96 px, so for pools up to ~10^5 images.
    """

    def __init__(
        self,
        loaders: list[Loader],
        augment: CopyAugment,
        seed: int = 0,
        cache: bool = True,
        max_pixels: int = 10**8,
    ):
        if not loaders:
            raise ValueError("no images to train on")
        self.loaders, self.augment, self.seed, self.max_pixels = loaders, augment, seed, max_pixels
        # Decode no larger than needed: crops keep >= crop_scale[0] of the area at output size.
        self.max_side = int(augment.config.size / max(augment.config.crop_scale[0], 0.05) ** 0.5)
        self._bad: set[int] = set()
        self._cache: dict[int, Image.Image] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.loaders)

    def _image(self, index: int) -> Image.Image:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image = decode_rgb(self.loaders[index](), self.max_pixels)
        if max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side))
        if self._cache is not None:
            self._cache[index] = image
        return image

    def _other(self, index: int, rng: np.random.Generator) -> Image.Image | None:
        """Another image, the background of the underlay edit (None when it is off or fails)."""
        if self.augment.config.p_underlay <= 0 or len(self.loaders) < 2:
            return None
        other = int(rng.integers(len(self.loaders) - 1))
        other += other >= index
        try:
            return self._image(other)
        except (ImageRejected, OSError):
            return None

    def __getitem__(self, sample_id: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, sample_id])
        n = len(self.loaders)
        for attempt in range(MAX_DECODE_TRIES):
            index = (sample_id + attempt) % n
            try:
                image = self._image(index)
            except (ImageRejected, OSError) as exc:
                if index not in self._bad:
                    self._bad.add(index)
                    logger.warning("skipping training image %d: %s", index, exc)
                continue
            other = self._other(index, rng)
            views = np.stack([self.augment(image, rng, other), self.augment(image, rng, other)])
            return torch.from_numpy(views), index
        raise RuntimeError(f"{MAX_DECODE_TRIES} consecutive training images failed to decode")
