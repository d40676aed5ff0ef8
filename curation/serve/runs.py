"""Reading run folders for the service: runs, their stages, and the files it may serve.

Every name in a URL is untrusted. A run or stage name must be one safe path component
(:mod:`curation.safe_names`) that does not start with ``_`` (metadata names such as ``_shards``
are not stages), and every path is resolved before use and must stay inside the runs root, so a
symlink pointing out of the root reads as missing. The runs root itself is trusted: it is written
by the jobs, not by clients.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from curation.rundir import CONFIG, LEGACY_CONFIG, LEGACY_STATS, STATS, SUCCESS
from curation.safe_names import is_safe_component
from curation.serve.errors import HttpError

REPORT = "report.html"
MANIFEST = "manifest.json"
# The stage status: complete once its marker exists; in progress once anything but its saved
# config is there (a stage that stopped halfway reads the same until it is rerun).
COMPLETE, IN_PROGRESS, NOT_STARTED = "complete", "in_progress", "not_started"
_NOT_WORK = {CONFIG, LEGACY_CONFIG}


def check_name(name: str, what: str) -> str:
    """``name`` if it can name a run or stage folder; else a 400 that names the problem."""
    if not is_safe_component(name) or name.startswith("_"):
        raise HttpError(
            400,
            f"{what} {name!r} is not a valid name: one path component of letters, digits, "
            "'_', '-' and '.', not starting with '_' or '.'",
        )
    return name


def _is_listed(entry: os.DirEntry) -> bool:
    return is_safe_component(entry.name) and not entry.name.startswith("_")


class RunsRoot:
    """The runs root: ``<root>/<run>/<stage>/`` folders, read without leaving ``root``."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve(strict=True)

    def inside(self, path: Path) -> Path | None:
        """``path`` resolved if it exists inside the root (symlinks followed), else None."""
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return None
        return resolved if resolved.is_relative_to(self.root) else None

    def _folder(self, path: Path) -> Path | None:
        resolved = self.inside(path)
        return resolved if resolved is not None and resolved.is_dir() else None

    def _file(self, path: Path) -> Path | None:
        resolved = self.inside(path)
        return resolved if resolved is not None and resolved.is_file() else None

    def run_folder(self, run: str) -> Path:
        """The run's folder; 400 for a name that cannot be a run, 404 if there is none."""
        folder = self._folder(self.root / check_name(run, "run"))
        if folder is None:
            raise HttpError(404, f"no run {run!r}")
        return folder

    def stage_folder(self, run: str, stage: str) -> Path:
        folder = self._folder(self.run_folder(run) / check_name(stage, "stage"))
        if folder is None:
            raise HttpError(404, f"run {run!r} has no stage {stage!r}")
        return folder

    def run_file(self, run: str, name: str) -> Path:
        """``REPORT`` or ``MANIFEST`` of a run: a regular file inside the root, else 404."""
        found = self._file(self.run_folder(run) / name)
        if found is None:
            raise HttpError(404, f"run {run!r} has no {name}")
        return found

    def stats_file(self, run: str, stage: str) -> Path:
        folder = self.stage_folder(run, stage)
        for name in (STATS, LEGACY_STATS):
            found = self._file(folder / name)
            if found is not None:
                return found
        raise HttpError(404, f"stage {stage!r} of run {run!r} has no {STATS}")

    def _entries(self, folder: Path) -> list[tuple[str, Path]]:
        """Listed sub-folders of ``folder`` that resolve inside the root, in name order."""
        try:
            with os.scandir(folder) as entries:
                names = sorted(entry.name for entry in entries if _is_listed(entry))
        except OSError:  # removed while we looked
            return []
        found = [(name, self._folder(folder / name)) for name in names]
        return [(name, path) for name, path in found if path is not None]

    def _stage(self, name: str, folder: Path, full_stats: bool) -> dict[str, Any]:
        stats, problem = None, None
        for stats_name in (STATS, LEGACY_STATS):
            path = self._file(folder / stats_name)
            if path is not None:
                try:
                    stats = json.loads(path.read_bytes())
                except (OSError, ValueError):
                    problem = f"{stats_name} cannot be read as JSON"
                break
        if self._file(folder / SUCCESS) is not None:
            status = COMPLETE
        else:
            try:
                with os.scandir(folder) as entries:
                    started = any(entry.name not in _NOT_WORK for entry in entries)
            except OSError:  # removed while we looked
                started = False
            status = IN_PROGRESS if started else NOT_STARTED
        stage: dict[str, Any] = {"name": name, "status": status}
        if full_stats:
            stage["stats"] = stats
        else:
            counts = stats if isinstance(stats, dict) else {}
            stage["rows_in"] = counts.get("rows_in")
            stage["rows_out"] = counts.get("rows_out")
        if problem:
            stage["error"] = problem
        return stage

    def _run(self, name: str, folder: Path, full_stats: bool) -> dict[str, Any]:
        stages = [self._stage(stage, path, full_stats) for stage, path in self._entries(folder)]
        return {
            "name": name,
            "stages": stages,
            "complete": bool(stages) and all(s["status"] == COMPLETE for s in stages),
            "report": self._file(folder / REPORT) is not None,
            "manifest": self._file(folder / MANIFEST) is not None,
        }

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run with its stages' status and ``rows_in``/``rows_out``."""
        return [self._run(name, folder, False) for name, folder in self._entries(self.root)]

    def run_detail(self, run: str) -> dict[str, Any]:
        """One run with each stage's whole ``_stats.json``."""
        return self._run(run, self.run_folder(run), True)
