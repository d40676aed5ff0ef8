"""What ``lvd demo`` prints at the end, and ``<run>/demo_summary.json``: the counts at each step,
copy-detection, decontamination and retrieval quality against the synthetic web's ground truth,
the k-NN accuracy of the pretrained teacher, and where the shards, manifest and report are."""

from __future__ import annotations

import json
from pathlib import Path

from curation.io import write_bytes_atomic

SUMMARY = "demo_summary.json"


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _pct(value) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "-"


def _retrieval(scores: dict | None) -> str:
    if not scores or scores.get("precision") is None:
        return "nothing retrieved"
    return (
        f"{_n(scores['retrieved'])} images, precision {scores['precision']:.2f} "
        f"(seed classes are {scores['base_rate']:.2f} of the pool), recall {scores['recall']:.2f}"
    )


def summary_lines(stats: dict, run_dir: Path, seconds: float) -> list[str]:
    """The demo's summary, one line per step that ran."""
    lines = [f"lvd demo finished in {seconds:.0f} s; run folder {run_dir}"]
    download = stats.get("download", {})
    if download:
        failed = download.get("rows_in", 0) - download.get("status_success", 0)
        lines.append(
            f"  download         {_n(download.get('rows_in'))} URLs -> "
            f"{_n(download.get('status_success'))} images ({_n(failed)} not fetched)"
        )
    ingest = stats.get("ingest", {})
    if ingest:
        bad = {k[7:]: v for k, v in ingest.items() if k.startswith("status_") and k != "status_ok"}
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "none"
        lines.append(
            f"  ingest           {_n(ingest.get('status_ok'))} decodable images (rejected: {reasons})"
        )
    unique = stats.get("unique_images", {})
    if unique:
        lines.append(
            f"  hash dedup       {_n(unique.get('rows_out'))} unique after exact and near-exact dedup"
        )
    copy = stats.get("copy_detection", {})
    if "micro_ap" in copy:
        lines.append(
            f"  copy descriptor  micro-AP {copy['micro_ap']:.3f} on the {copy['n_true_pairs']} "
            "planted copies left after hash dedup"
        )
    dedup = (stats.get("dedup") or {}).get("dedup_copy", {})
    quality = stats.get("dedup_quality", {})
    if dedup:
        lines.append(
            f"  copy dedup       {_n(dedup.get('rows_in'))} -> {_n(dedup.get('reason_kept'))} kept "
            f"({_n(dedup.get('reason_duplicate', 0))} copies, "
            f"{_n(dedup.get('reason_eval_contaminated', 0))} touching the evaluation set); "
            f"whole chain vs planted copies: pair precision {quality.get('pair_precision', 0):.2f}, "
            f"recall {quality.get('pair_recall', 0):.2f}"
        )
    decon = stats.get("decontamination", {})
    if decon:
        lines.append(
            f"  decontamination  {decon['eval_copies_removed']} of {decon['eval_copies_in_pool']} "
            f"planted evaluation-set copies removed ({decon['other_images_removed']} other images)"
        )
    clusters = stats.get("cluster") or {}
    if clusters:
        sizes = clusters.get("sizes", {})
        k = (stats.get("cluster") or {}).get("cluster_centroids", {}).get("k")
        lines.append(
            f"  k-means          {_n(k)} clusters, sizes {sizes.get('min')} / "
            f"{sizes.get('median')} / {sizes.get('max')} (min / median / max)"
        )
    per_seed = ((stats.get("retrieve") or {}).get("retrieval") or {}).get("per_seed", {})
    if per_seed:
        counts = ", ".join(f"{k} {v}" for k, v in per_seed.items() if "/not_in" not in k)
        lines.append(f"  retrieval        {counts}")
    for mode, scores in (stats.get("retrieval_quality") or {}).items():
        lines.append(f"    {mode:<14} {_retrieval(scores)}")
    shards = stats.get("shards", {})
    manifest = stats.get("manifest", {})
    if shards:
        lines.append(
            f"  shards           {_n(shards.get('rows_out'))} samples in "
            f"{_n(shards.get('shards'))} shard(s): {run_dir / 'shards'}; "
            f"manifest {manifest.get('path', '-')}"
        )
    pretrain = stats.get("pretrain", {})
    if pretrain:
        lines.append(
            f"  pretraining      {pretrain['iterations']} iterations on the shards, loss "
            f"{pretrain['first_loss'] or '-'} -> {pretrain['last_loss'] or '-'}; "
            f"teacher {pretrain['teacher']}"
        )
    if stats.get("retrieval_teacher"):
        lines.append(
            f"    teacher        sample retrieval {_retrieval(stats['retrieval_teacher'])}"
        )
        lines.append(
            f"    untrained ViT  sample retrieval {_retrieval(stats.get('retrieval_untrained_vit'))}"
        )
    teacher, untrained = stats.get("knn_teacher"), stats.get("knn_untrained_vit")
    if teacher:
        lines.append(
            f"  k-NN (k=20)      top-1 {_pct(teacher['knn_top1'])} with the teacher, "
            f"{_pct((untrained or {}).get('knn_top1'))} untrained ({teacher['train_images']} "
            f"train / {teacher['val_images']} val images of the web's classes)"
        )
    report = (stats.get("report") or {}).get("path")
    lines.append(f"  report           {report or f'lvd report {run_dir}'}")
    return lines


def write_summary(stats: dict, run_dir: Path, seconds: float) -> Path:
    """``<run>/demo_summary.json``: the stats the summary lines come from, and the time taken."""
    path = Path(run_dir) / SUMMARY
    payload = {"seconds": round(seconds, 1), **stats}
    write_bytes_atomic(path, (json.dumps(payload, indent=2, default=str) + "\n").encode())
    return path
