"""Labelled image splits for evaluation: one folder per class, or a Parquet table with labels.

- A folder ``DIR/<class>/**/*.jpg`` (ImageFolder layout): the class is the name of the first-level
  folder; images directly under ``DIR`` are refused (their class is unknown).
- A Parquet file (or a folder of ``*.parquet`` files) with a ``label`` column, a ``key`` column
  (optional: the row number otherwise) and either ``image`` (encoded bytes) or ``path`` (an image
  file; relative paths are taken from the Parquet file's folder).

Images are not read here: each row gets a loader (a picklable callable returning the bytes), the
form :class:`curation.models.inference.BatchEmbedder` decodes in its workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import ConfigError
from curation.readers.image_bytes import inline_bytes
from curation.readers.image_files import IMAGE_SUFFIXES


class LabelledSplitError(ConfigError):
    """A split that cannot be read as labelled images; the message names the file or folder."""


@dataclass
class LabelledSplit:
    keys: list[str]
    labels: list[str]  # class names, one per image
    loaders: list[Callable[[], bytes | None]]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def read_class_folders(root: Path) -> LabelledSplit:
    """``root/<class>/...`` image files; an error for loose images or no class folder."""
    loose = sorted(
        p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if loose:
        raise LabelledSplitError(
            f"{root} holds images outside class folders (e.g. {loose[0]}); put each image in "
            f"{root}/<class>/"
        )
    keys: list[str] = []
    labels: list[str] = []
    loaders: list[Callable[[], bytes | None]] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in _images_under(class_dir):
            keys.append(path.relative_to(root).as_posix())
            labels.append(class_dir.name)
            loaders.append(partial(Path.read_bytes, path))
    if not keys:
        raise LabelledSplitError(
            f"{root} holds no labelled images: expected {root}/<class>/<image> files"
        )
    return LabelledSplit(keys, labels, loaders)


def read_labelled_parquet(files: list[Path]) -> LabelledSplit:
    """Rows of Parquet ``files`` with ``label`` and ``image`` (bytes) or ``path`` columns."""
    keys: list[str] = []
    labels: list[str] = []
    loaders: list[Callable[[], bytes | None]] = []
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as exc:
            raise LabelledSplitError(f"{file} cannot be read as Parquet ({exc})") from exc
        columns = set(table.column_names)
        if "label" not in columns or not columns & {"image", "path"}:
            raise LabelledSplitError(
                f"{file} needs a 'label' column and an 'image' (bytes) or 'path' column; found "
                f"{sorted(columns)}"
            )
        label_column = table.column("label")
        if label_column.null_count:
            raise LabelledSplitError(f"{file}: {label_column.null_count} rows have no label")
        labels += [str(v) for v in label_column.to_pylist()]
        if "key" in columns:
            keys += [str(v) for v in table.column("key").to_pylist()]
        else:
            keys += [f"{file.name}:{i}" for i in range(table.num_rows)]
        if "image" in columns:
            loaders += [partial(inline_bytes, data) for data in table.column("image").to_pylist()]
        else:
            for value in table.column("path").to_pylist():
                path = Path(value) if value is not None else None
                if path is not None and not path.is_absolute():
                    path = file.parent / path
                loaders.append(
                    partial(Path.read_bytes, path) if path else partial(inline_bytes, None)
                )
    if not keys:
        raise LabelledSplitError(f"{', '.join(map(str, files))}: no rows")
    return LabelledSplit(keys, labels, loaders)


def read_labelled_split(source: str | Path, what: str = "split") -> LabelledSplit:
    """A split from a class-folder tree, a labelled Parquet file or a folder of them."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{what} {source} does not exist")
    if source.is_file():
        if source.suffix != ".parquet":
            raise LabelledSplitError(
                f"{what} {source} is a file but not .parquet; give a folder of class folders "
                "or a labelled Parquet file"
            )
        return read_labelled_parquet([source])
    parquet = sorted(source.glob("*.parquet"))
    if parquet:
        return read_labelled_parquet(parquet)
    return read_class_folders(source)
