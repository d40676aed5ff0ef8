"""Build ``report.html`` for a run folder: gather each section, fetch its pictures, render, write.

Each section is gathered on its own: a stage that did not run gives a section that says so, and a
stage folder that cannot be read (a corrupt or foreign file) gives a section that says that, with
the reason, while the rest of the page is still written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curation import storage
from curation.config import ConfigError
from curation.io import read_json
from curation.report import examples, funnel, html, training
from curation.report.funnel import READ_ERRORS
from curation.report.thumbnails import Thumbnails
from curation.rundir import CONFIG, STATS, SUCCESS

logger = logging.getLogger(__name__)

REPORT = "report.html"
# What marks a folder as a run: one of these files, or the stats or marker of one of these stages.
RUN_FILES = (CONFIG, "manifest.json")
RUN_STAGES = ("download", "ingest", "unique_images", "dedup_copy", "retrieval", "shards")


@dataclass
class Unreadable:
    """A section whose files could not be read: the reason, shown in its place."""

    reason: str


@dataclass
class ReportData:
    run_root: str
    funnel: Any = None
    copy_dedup: Any = None
    decontamination: Any = None
    retrieval: Any = None
    clusters: Any = None
    loss_curves: Any = None
    knn: Any = None
    created_at: str | None = None


@dataclass
class Pictures:
    """Thumbnails by key: pool images, eval images by (eval set, key), seeds by (dataset, key)."""

    pool: dict[str, str] = field(default_factory=dict)
    evals: dict[tuple[str, str], str] = field(default_factory=dict)
    seeds: dict[tuple[str, str], str] = field(default_factory=dict)


class NotARunError(FileNotFoundError):
    """The folder holds nothing a run writes (a user error: give ``runs/<name>``)."""


def check_run_folder(run_root: str) -> str:
    """``run_root`` if it is a folder holding a run; else an error saying what it is."""
    if not storage.is_uri(run_root):
        root = storage.as_path(run_root)
        if not root.exists():
            raise FileNotFoundError(f"run folder {run_root} does not exist")
        if not root.is_dir():
            raise ConfigError(f"run folder {run_root} is a file, not a folder")
    files = [storage.join(run_root, name) for name in RUN_FILES]
    files += [storage.join(run_root, s, m) for s in RUN_STAGES for m in (STATS, SUCCESS)]
    if not any(storage.exists(path) for path in files):
        raise NotARunError(
            f"{run_root} holds no run (no {', '.join(RUN_FILES)}, no finished stage); "
            "give runs/<name>"
        )
    return str(run_root)


def _guarded(what: str, gather: Callable[[str], Any], run_root: str) -> Any:
    try:
        return gather(run_root)
    except READ_ERRORS as exc:
        logger.warning("report: %s could not be read: %s", what, exc)
        return Unreadable(f"{type(exc).__name__}: {exc}")


def gather(run_root: str) -> ReportData:
    """Every section's data; sections whose stage did not run are None."""
    data = ReportData(run_root=str(run_root))
    data.funnel = _guarded("the funnel", funnel.funnel, run_root)
    data.copy_dedup = _guarded("dedup_copy/", examples.copy_dedup, run_root)
    data.decontamination = _guarded("dedup_copy/_stats.json", examples.decontamination, run_root)
    data.retrieval = _guarded("retrieval/", examples.retrieval_examples, run_root)
    data.clusters = _guarded("clusters/", training.cluster_sizes, run_root)
    data.loss_curves = _guarded("pretrain/metrics.jsonl", training.loss_curves, run_root)
    data.knn = _guarded("k-NN results", training.knn_results, run_root)
    manifest = storage.join(run_root, "manifest.json")
    if storage.exists(manifest):
        try:
            data.created_at = read_json(manifest).get("created_at")
        except READ_ERRORS:
            pass
    return data


def _ok(value: Any) -> bool:
    return value is not None and not isinstance(value, Unreadable)


def pictures(data: ReportData, thumbnails: Thumbnails) -> Pictures:
    """The thumbnails every section needs, read in one pass per source folder."""
    found = Pictures()
    pool: set[str] = set()
    if _ok(data.copy_dedup):
        shown = data.copy_dedup.components[: examples.MAX_COMPONENTS_SHOWN]
        pool |= {m.key for c in shown for m in c.members[: examples.MAX_MEMBERS_SHOWN]}
    if _ok(data.decontamination):
        for hit in data.decontamination:
            pool |= {str(e.get("pool")) for e in hit.examples}
            keys = {str(e.get("eval")) for e in hit.examples}
            for key, uri in _safely(thumbnails.encoded, hit.eval_folder, keys).items():
                found.evals[(hit.name, key)] = uri
    if _ok(data.retrieval):
        for dataset, seeds in data.retrieval.items():
            pool |= {key for seed in seeds for key, _, _ in seed.neighbours}
            keys = {seed.seed_key for seed in seeds}
            for key, uri in _safely(thumbnails.encoded, f"seed_{dataset}", keys).items():
                found.seeds[(dataset, key)] = uri
    found.pool = _safely(thumbnails.pool, pool)
    return found


def _safely(read: Callable[..., dict], *args) -> dict:
    """Thumbnails are decoration: a folder that cannot be read leaves grey boxes, not a crash."""
    try:
        return read(*args)
    except READ_ERRORS as exc:
        logger.warning("report: thumbnails not read: %s", exc)
        return {}


def _section(value: Any, render: Callable[[Any], str]) -> str:
    if isinstance(value, Unreadable):
        return html.unreadable(value.reason)
    return render(value)


def render(data: ReportData, found: Pictures) -> str:
    """The whole page."""
    name = storage.as_path(data.run_root).name or data.run_root
    subtitle = f"run folder {data.run_root}"
    if data.created_at:
        subtitle += f" · shards completed {data.created_at}"
    body = [
        (html.FUNNEL, _section(data.funnel, html.funnel_section)),
        (
            html.COPY_DEDUP,
            _section(data.copy_dedup, lambda v: html.copy_dedup_section(v, found.pool)),
        ),
        (html.LARGEST, _section(data.copy_dedup, html.largest_section)),
        (
            html.DECONTAMINATION,
            _section(
                data.decontamination,
                lambda v: html.decontamination_section(v, found.pool, found.evals),
            ),
        ),
        (
            html.RETRIEVAL,
            _section(data.retrieval, lambda v: html.retrieval_section(v, found.pool, found.seeds)),
        ),
        (html.CLUSTERS, _section(data.clusters, html.clusters_section)),
        (html.PRETRAINING, _section(data.loss_curves, html.pretraining_section)),
        (html.KNN, _section(data.knn, html.knn_section)),
    ]
    return html.page(f"lvd curation report: {name}", subtitle, body)


def build_report(run_root: str, thumbnails: bool = True) -> str:
    """The report page of a run, as a string (``thumbnails=False``: grey boxes, no image reads)."""
    data = gather(run_root)
    found = pictures(data, Thumbnails(run_root)) if thumbnails else Pictures()
    return render(data, found)


def write_report(run_root: str, out: str | None = None) -> str:
    """Write the report (default ``<run_root>/report.html``) and return where it went."""
    check_run_folder(run_root)
    target = str(out) if out is not None else storage.join(run_root, REPORT)
    storage.write_bytes(target, build_report(run_root).encode("utf-8"))
    return target
