"""Arguments shared by job subcommands: ``--config`` overlays, ``key=value`` overrides, engine.

Input and output folders may be local paths or URIs (``s3://bucket/run/embed_sscd``): they are
parsed with :func:`location` (never ``Path``, which collapses ``s3://b/k`` to ``s3:/b/k``) and
listed through :mod:`curation.storage`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from curation import storage
from curation.config import ConfigError, load_config
from curation.engines import ENGINES
from curation.run_log import attach_run_log

Location = Path | storage.ObjectPath  # a local path, or a folder or file on an object store


def location(text: str) -> Location:
    """An argparse ``type``: a local path as ``Path``, a URI as an ``ObjectPath``."""
    return storage.as_path(text)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=sorted(ENGINES), help="engine (default: local)")
    parser.add_argument("--run", help="run name under runs_dir")
    parser.add_argument(
        "--config", type=Path, action="append", default=[], help="YAML config overlay (repeatable)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. engine.name=ray"
    )


def load_job_config(ns: argparse.Namespace):
    """The resolved CurationConfig: defaults, then ``--config`` files, then overrides and flags."""
    from curation.jobs.config import CurationConfig

    overrides = list(ns.overrides)
    if getattr(ns, "engine", None):
        overrides.append(f"engine.name={ns.engine}")
    if getattr(ns, "run", None):
        overrides.append(f"name={ns.run}")
    cfg = load_config(CurationConfig, ns.config, overrides)
    check_output_folder(cfg.run_dir.root, "run folder (runs_dir/name)")
    attach_run_log(cfg.run_dir.root)  # the run's log file (curation.run_log); created when used
    return cfg


def check_output_folder(path: Location | str, what: str) -> None:
    """A :class:`ConfigError` unless ``path`` is a writable folder or could be created as one.

    Creates nothing, so a command that fails later leaves no empty folders behind; it exists so
    that an output path under a file or in a read-only place fails before any work, in one line.
    A folder on an object store is not checked: it exists once its first object is written, and
    the store answers for permissions then.
    """
    if storage.is_uri(path):
        return
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{what} {path} {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: no write permission on {existing}")


def input_folder(folder: Location | str, what: str) -> Location:
    """``folder`` if it is an existing folder (on a store: a prefix with objects below it); else an
    error naming it."""
    folder = storage.as_path(folder)
    try:
        is_file = folder.is_file()
        is_dir = not is_file and folder.is_dir()  # on a store: one request each
    except OSError as exc:  # a store that cannot be reached: one line, not a traceback
        raise FileNotFoundError(f"{what} {folder} cannot be read: {exc}") from exc
    if is_file:
        raise ConfigError(f"{what} {folder} is a file; give the folder that holds it")
    if not is_dir:
        raise FileNotFoundError(f"{what} {folder} does not exist")
    return folder


def parquet_files(folder: Location | str) -> list[Location]:
    """The ``*.parquet`` shards of ``folder`` in name order; an error if there are none."""
    paths = sorted(input_folder(folder, "input folder").glob("*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no .parquet shards in {folder}")
    return paths


def tar_files(folder: Location | str) -> list[Location]:
    """The ``*.tar`` shards of ``folder`` in name order; an error if there are none."""
    paths = sorted(input_folder(folder, "tar folder").glob("*.tar"))
    if not paths:
        raise FileNotFoundError(f"no .tar files in {folder}")
    return paths


def shard_inputs(cfg, images: Path | None, shards: Location | None) -> list[Location] | None:
    """Input shards named on the command line: a folder of images (packed into the run first) or
    a folder of ENCODED_IMAGE parquet shards (each checked before any work starts); None when
    neither was given (the stage reads its run's own)."""
    from curation.jobs.decode import pack_folder
    from curation.readers.input_shards import check_input_shards

    if images:
        return pack_folder(cfg, images)
    if shards:
        return check_input_shards(parquet_files(shards), ("encoded_image",))
    return None


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"128,160,224"`` -> ``(128, 160, 224)``; argparse reports a bad value as a usage error."""
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 128,160,224, got {text!r}") from None
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes
