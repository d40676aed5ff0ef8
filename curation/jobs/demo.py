"""The demo job (``lvd demo``, the embedded default): synthesise a small web, serve it on
localhost, then run the whole flow on it with the configured engine: download, ingest (exact and
near-exact dedup), a copy descriptor trained on the pool, its embeddings, copy dedup and
decontamination against the web's evaluation set, k-means, retrieval against the seed set, LVD
shards and their manifest (:mod:`curation.jobs.demo_curate`), pretraining on the shards,
retrieval and k-NN with the pretrained teacher (:mod:`curation.jobs.demo_pretrain`); every step
scored against the web's ground truth."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from pathlib import Path

import pyarrow.parquet as pq

from curation.engines import build_engine
from curation.eval.copy_detection import evaluate_copy_detection, synthetic_copy_pairs
from curation.io import write_bytes_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.curate import run_curation
from curation.jobs.dedup import run_dedup
from curation.jobs.demo_curate import (
    curation_config,
    embed_eval_set,
    run_demo_curation,
    score_decontamination,
)
from curation.jobs.demo_pretrain import run_demo_pretraining
from curation.jobs.demo_summary import write_summary
from curation.jobs.embed import run_embed
from curation.jobs.ingest import unique_image_shards
from curation.readers.embeddings import read_embeddings
from curation.report import write_report
from curation.rundir import StageDir
from curation.runner import TABLE_OUTPUT
from curation.stages.copy_dedup import CopyDedupConfig
from curation.synth import SynthWeb, SynthWebServer, generate_synthetic_web, write_url_list
from curation.train_descriptor.data import shard_loaders
from curation.train_descriptor.evaluate import calibrate_on_synthetic_web
from curation.train_descriptor.train import train_descriptor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    stats: dict
    seconds: float


def _serve(web: SynthWeb, ports_file: Path) -> SynthWebServer:
    """A server for the web on the ports of the first run (so a rerun's URL list, whose refused
    URLs point at the first run's held port, still fits), or on fresh ports if those are taken."""
    saved = ports_file.read_text().split() if ports_file.is_file() else []
    port, refused = (int(p) for p in saved) if len(saved) == 2 else (0, 0)
    try:
        server = SynthWebServer(web.root, port=port, refused_port=refused).start()
    except OSError as exc:
        logger.warning("ports %s of the previous demo run are taken (%s); using others", saved, exc)
        server = SynthWebServer(web.root).start()
    write_bytes_atomic(ports_file, f"{server.port} {server.refused_port}".encode())
    return server


def run_demo(cfg: CurationConfig) -> DemoResult:
    """Download, ingest with exact and near-exact dedup, a copy-detection descriptor trained on
    the downloaded pool, and its embeddings, scored against the web's planted copies."""
    start = time.perf_counter()
    run = cfg.run_dir
    run.root.mkdir(parents=True, exist_ok=True)
    web = generate_synthetic_web(run.root / "synth", cfg.synth)
    stats: dict = {}
    with build_engine(cfg.engine) as engine:
        # A rerun reuses the URL list of the first run, so the download stage sees the same list
        # and resumes (or skips) instead of refusing a changed one.
        server = _serve(web, run.root / "synth_server_ports")
        try:
            url_list = run.root / "urls.parquet"
            if not url_list.is_file():
                # The slow URL only shows a timeout; the demo keeps it out to stay quick.
                write_url_list(web, server.base_url, url_list, slow=False)
            # The synthetic web lives on 127.0.0.1, which the network guard refuses by default.
            download = replace(cfg.download, url_list=str(url_list), allow_private_networks=True)
            # The descriptor is trained below, on what was downloaded, then used to embed.
            cfg = replace(cfg, download=download, embed=replace(cfg.embed, checkpoint=None))
            stats.update(run_curation(cfg, engine))
        finally:
            server.shutdown()
        if cfg.demo.train_descriptor:
            unique = unique_image_shards(cfg)
            checkpoint = run.root / "descriptor" / "descriptor.pt"
            if not checkpoint.is_file():
                loaders = [loader for _, loader in shard_loaders(unique)]
                train_descriptor(cfg.demo.descriptor, loaders, checkpoint)
            if cfg.demo.calibrate:
                stats["calibration"] = calibrate(cfg, checkpoint)
            embed = replace(cfg.embed, model="descriptor", checkpoint=checkpoint)
            stats["embed_sscd"] = run_embed(replace(cfg, embed=embed), engine, unique)
            stats["copy_detection"] = score_planted_copies(run.stage("embed_sscd"), unique, web)
            cfg = replace(cfg, embed=embed)
            cfg = replace(cfg, dedup=eval_threshold(cfg.dedup, stats.get("calibration")))
            if cfg.demo.dedup:
                evals = embed_eval_set(cfg, engine, web) if cfg.demo.decontaminate else None
                stats["dedup"] = run_dedup(cfg, engine, records=unique, eval_sets=evals)
                stats["dedup_quality"] = score_dedup(cfg, unique, web)
                if evals:
                    stats["decontamination"] = score_decontamination(cfg, web)
                if cfg.demo.curate:
                    cfg = curation_config(cfg, web)
                    stats.update(run_demo_curation(cfg, engine, web))
                    if cfg.demo.pretrain:
                        stats.update(run_demo_pretraining(cfg, engine, web))
    seconds = time.perf_counter() - start
    write_summary(stats, run.root, seconds)
    stats["report"] = {"path": str(write_report(str(run.root)))}
    return DemoResult(run_dir=run.root, stats=stats, seconds=seconds)


def eval_threshold(dedup: CopyDedupConfig, calibration: dict | None) -> CopyDedupConfig:
    """The decontamination threshold for the demo's descriptor: SPEC's raw cosine 0.45 is
    SSCD's scale; the descriptor trained here puts unrelated images far above it (on the synthetic
    web every pool image had an evaluation image above 0.45). With a cosine calibration, images
    count as copies of an evaluation image above the calibrated copy threshold (chosen for
    precision 0.95 on the tuning web); a threshold set in the config is kept."""
    calibration = calibration or {}
    default = CopyDedupConfig().eval_threshold
    if (
        calibration.get("kind") == "cosine"
        and calibration.get("threshold") is not None
        and dedup.eval_threshold == default
    ):
        return replace(dedup, eval_threshold=float(calibration["threshold"]))
    return dedup


def calibrate(cfg: CurationConfig, checkpoint: Path) -> dict:
    """Choose the descriptor's copy score and threshold for ``demo.target_precision`` on a tuning
    web (the demo's synthetic web with another seed) and store them in the checkpoint, once."""
    from curation.models.descriptor import load_descriptor_checkpoint, write_calibration

    _, meta = load_descriptor_checkpoint(checkpoint)
    if meta["inference"].get("calibration"):
        return {"reused": True, **meta["inference"]["calibration"]}
    n_pool = min(cfg.demo.tuning_pool, cfg.synth.n_pool)
    synth = replace(cfg.synth, seed=cfg.synth.seed + 1, n_pool=n_pool)
    tuning = generate_synthetic_web(cfg.run_dir.root / "synth_tuning", synth)
    try:
        calibration, per_kind = calibrate_on_synthetic_web(
            checkpoint,
            tuning,
            cfg.demo.target_precision,
            near_dedup=cfg.ingest.near_dedup if cfg.ingest.exact_dedup else None,
            device=cfg.embed.device,
            # for the demo's own pool: false pairs grow with its square (400 originals -> 2,000
            # took a threshold for precision 0.95 to 0.70)
            pool_scale=cfg.synth.n_pool / n_pool,
        )
    except ValueError as exc:  # a descriptor too weak for the target: say so, dedup at 0.6
        logger.warning("no calibration stored: %s", exc)
        return {"stored": False, "reason": str(exc)}
    write_calibration(checkpoint, calibration.to_dict())
    logger.info(
        "calibrated on %s: %s > %.4f (precision %.2f)",
        tuning.root.name,
        calibration.kind,
        calibration.threshold,
        calibration.target_precision,
    )
    return {"stored": True, **calibration.to_dict(), "per_kind": per_kind}


def final_representatives(cfg: CurationConfig) -> dict[str, str]:
    """Each ingested key -> the image that stands for it after the whole dedup chain: exact
    (sha256), then near-exact (pHash), then copy detection."""
    run = cfg.run_dir
    rep: dict[str, str] = {}
    for stage in ("dedup_exact", "dedup_near"):
        folder = run.stage(stage).path
        if not (folder / TABLE_OUTPUT).is_file():
            continue
        table = pq.read_table(folder / TABLE_OUTPUT, columns=["key", "duplicate_of"])
        for key, of in zip(table["key"].to_pylist(), table["duplicate_of"].to_pylist()):
            rep[key] = of or key
    table = pq.read_table(
        run.stage("dedup_copy").path / TABLE_OUTPUT, columns=["key", "representative_key"]
    )
    copy = dict(zip(table["key"].to_pylist(), table["representative_key"].to_pylist()))

    def follow(key: str) -> str:
        seen = key
        while rep.get(seen, seen) != seen:
            seen = rep[seen]
        return copy.get(seen, seen)

    return {key: follow(key) for key in set(rep) | set(copy)}


def score_dedup(cfg: CurationConfig, records: list[Path], web: SynthWeb) -> dict:
    """Pair precision and recall of the whole dedup chain (exact, near-exact, copy) against the
    web's planted copies among the downloaded images, and how many planted groups kept exactly one
    image (the aim: one per group)."""
    final = final_representatives(cfg)
    urls = pq.read_table(records, columns=["key", "url"])
    synth_key = {k: Path(u).stem for k, u in zip(urls["key"].to_pylist(), urls["url"].to_pylist())}
    download = pq.read_table(cfg.run_dir.stage("download").outputs(), columns=["key", "url"])
    synth_key.update(
        {k: Path(u).stem for k, u in zip(download["key"].to_pylist(), download["url"].to_pylist())}
    )
    group = {synth_key[k]: r for k, r in final.items()}
    true = {p for p in synthetic_copy_pairs(web.read("pool")) if set(p) <= group.keys()}
    members: dict[str, list[str]] = {}
    for key, g in group.items():
        members.setdefault(g, []).append(key)
    predicted = {tuple(sorted(p)) for m in members.values() for p in combinations(m, 2)}
    hits = len(predicted & true)
    planted: dict[str, frozenset[str]] = {}  # each planted group's members (closure of pairs)
    for a, b in sorted(true):
        merged = planted.get(a, frozenset({a})) | planted.get(b, frozenset({b}))
        for key in merged:
            planted[key] = merged
    groups = set(planted.values())
    one_kept = sum(1 for g in groups if len({group[k] for k in g}) == 1)
    return {
        "true_pairs": len(true),
        "predicted_pairs": len(predicted),
        "pair_precision": hits / len(predicted) if predicted else 1.0,
        "pair_recall": hits / len(true) if true else 1.0,
        "planted_groups": len(groups),
        "planted_groups_with_one_kept": one_kept,
    }


def score_planted_copies(embeddings: StageDir, records: list[Path], web: SynthWeb) -> dict:
    """Micro-AP of the descriptor's nearest-neighbour pairs against the synthetic web's planted
    copies that survived exact and near-exact dedup (the copies left for copy detection)."""
    keys, matrix = read_embeddings(embeddings.outputs())
    urls = pq.read_table(records, columns=["key", "url"])
    # Downloaded keys are the URL plan's; the synthetic web's key is the served file's stem.
    synth_key = {k: Path(u).stem for k, u in zip(urls["key"].to_pylist(), urls["url"].to_pylist())}
    keys = [synth_key[k] for k in keys]
    present = set(keys)
    pairs = {p for p in synthetic_copy_pairs(web.read("pool")) if set(p) <= present}
    result: dict = {"rows_in": len(keys), "n_true_pairs": len(pairs)}
    if pairs:  # dedup may have caught every planted copy of a small web
        result.update(asdict(evaluate_copy_detection(keys, matrix, pairs)))
    embeddings.write_stats({**embeddings.read_stats(), "copy_detection": result})
    return result
