"""The demo job (``lvd demo``, the embedded default): synthesise a small web, serve it on
localhost, then run every stage that exists on it with the configured engine."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq

from curation.engines import build_engine
from curation.eval.copy_detection import evaluate_copy_detection, synthetic_copy_pairs
from curation.io import write_bytes_atomic
from curation.jobs.config import CurationConfig
from curation.jobs.curate import run_curation
from curation.jobs.embed import run_embed
from curation.jobs.ingest import unique_image_shards
from curation.readers.embeddings import read_embeddings
from curation.rundir import StageDir
from curation.synth import SynthWeb, SynthWebServer, generate_synthetic_web, write_url_list
from curation.train_descriptor.data import shard_loaders
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
            embed = replace(cfg.embed, model="descriptor", checkpoint=checkpoint)
            stats["embed_sscd"] = run_embed(replace(cfg, embed=embed), engine, unique)
            stats["copy_detection"] = score_planted_copies(run.stage("embed_sscd"), unique, web)
    return DemoResult(run_dir=run.root, stats=stats, seconds=time.perf_counter() - start)


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
