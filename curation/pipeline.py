"""Job configs and the plain ``run_x(cfg, engine)`` functions the CLI wraps and tests call."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pyarrow.parquet as pq

from curation.config import ConfigError
from curation.engines import Engine, get_engine
from curation.eval.copy_detection import evaluate_copy_detection, synthetic_copy_pairs
from curation.io import read_parquet, write_bytes_atomic
from curation.rundir import RunDir, StageDir
from curation.runner import run_stage
from curation.sources import list_image_files, write_encoded_shards
from curation.stages.base import StageSpec
from curation.stages.decode import DecodeConfig, DecodeStage
from curation.stages.download import DownloadConfig, run_download
from curation.stages.embed import EmbedConfig, run_embed
from curation.stages.ingest import IngestConfig, run_ingest, unique_image_shards
from curation.synth import (
    SynthConfig,
    SynthWeb,
    SynthWebServer,
    generate_synthetic_web,
    write_url_list,
)
from curation.train_descriptor import DescriptorTrainConfig, train_descriptor
from curation.train_descriptor.augment import AugmentConfig
from curation.train_descriptor.data import shard_loaders
from schemas import embedding_schema

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    name: str = "local"  # local | ray | spark
    ray_address: str | None = None  # None: start a local Ray; "auto" under `ray job submit`
    num_workers: int | None = None  # Ray actor-pool size; None: one per free CPU
    spark_master: str | None = None  # None: local[*], or whatever spark-submit sets


def _demo_descriptor() -> DescriptorTrainConfig:
    # Small enough to learn the synthetic web's copies in well under a minute on 2 CPU cores.
    return DescriptorTrainConfig(
        width=32, dim=128, augment=AugmentConfig(size=64), batch_size=64, time_budget_s=40.0
    )


@dataclass(frozen=True)
class DemoConfig:
    # No official SSCD weights here: the demo trains its copy detector on the pool it downloaded.
    train_descriptor: bool = True
    descriptor: DescriptorTrainConfig = field(default_factory=_demo_descriptor)


@dataclass(frozen=True)
class CurationConfig:
    name: str = "demo"
    runs_dir: Path = Path("runs")
    rows_per_shard: int = 256
    engine: EngineConfig = field(default_factory=EngineConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    @property
    def run_dir(self) -> RunDir:
        return RunDir(Path(self.runs_dir) / self.name)


def build_engine(cfg: EngineConfig) -> Engine:
    options: dict = {}
    if cfg.name == "ray":
        options = {"address": cfg.ray_address, "num_workers": cfg.num_workers}
    elif cfg.name == "spark":
        options = {"master": cfg.spark_master}
    return get_engine(cfg.name, **options)


def run_decode(cfg: CurationConfig, engine: Engine, inputs: list[Path]) -> dict:
    """Decode and validate ENCODED_IMAGE shards into ``<run>/decode/``."""
    run = cfg.run_dir
    run.save_config(cfg)
    return run_stage(StageSpec(DecodeStage, cfg.decode), inputs, run.stage("decode"), engine)


def pack_folder(cfg: CurationConfig, folder: Path) -> list[Path]:
    """Pack a folder of images into ENCODED_IMAGE shards under ``<run>/encoded/``."""
    files = list_image_files(folder)
    if not files:
        raise FileNotFoundError(f"no image files under {folder}")
    return write_encoded_shards(
        files, cfg.run_dir.root / "encoded", rows_per_shard=cfg.rows_per_shard
    )


def run_curation(cfg: CurationConfig, engine: Engine) -> dict:
    """The curation stages that exist so far, in order, on ``engine``: download the URL list,
    ingest with exact and near-exact dedup, and (given a descriptor checkpoint) embed the unique
    images for copy detection. Each stage resumes where a previous run stopped."""
    if cfg.download.url_list is None:
        raise ConfigError("download.url_list is required (a URL list file or folder)")
    stats = {"download": run_download(cfg, engine)}
    stats.update(run_ingest(cfg, engine))
    if cfg.embed.checkpoint is not None:
        stats["embed_sscd"] = run_embed(cfg, engine, unique_image_shards(cfg))
    return stats


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    stats: dict
    seconds: float


def run_demo(cfg: CurationConfig) -> DemoResult:
    """The embedded default: synthesise a small web, serve it on localhost, then run every stage
    that exists on it: download, ingest with exact and near-exact dedup, a copy-detection
    descriptor trained on the pool, and its embeddings (scored against the planted copies)."""
    start = time.perf_counter()
    run = cfg.run_dir
    run.root.mkdir(parents=True, exist_ok=True)
    web = generate_synthetic_web(run.root / "synth", cfg.synth)
    stats: dict = {}
    with build_engine(cfg.engine) as engine:
        # A rerun serves on the port of the first run and reuses its URL list, so the download
        # stage sees the same list and resumes (or skips) instead of refusing a changed one.
        port_file = run.root / "synth_server_port"
        port = int(port_file.read_text()) if port_file.is_file() else 0
        with SynthWebServer(web.root, port=port) as server:
            write_bytes_atomic(port_file, str(server.port).encode())
            url_list = run.root / "urls.parquet"
            if not url_list.is_file():
                # The slow URL only shows a timeout; the demo keeps it out to stay quick.
                write_url_list(web, server.base_url, url_list, slow=False)
            # The synthetic web lives on 127.0.0.1, which the network guard refuses by default.
            download = replace(cfg.download, url_list=str(url_list), allow_private_networks=True)
            # The descriptor is trained below, on what was downloaded, then used to embed.
            cfg = replace(cfg, download=download, embed=replace(cfg.embed, checkpoint=None))
            stats.update(run_curation(cfg, engine))
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
    table = read_parquet(embeddings.outputs(), embedding_schema(embeddings_dim(embeddings)))
    urls = pq.read_table(records, columns=["key", "url"])
    # Downloaded keys are the URL plan's; the synthetic web's key is the served file's stem.
    synth_key = {k: Path(u).stem for k, u in zip(urls["key"].to_pylist(), urls["url"].to_pylist())}
    keys = [synth_key[k] for k in table.column("key").to_pylist()]
    present = set(keys)
    pairs = {p for p in synthetic_copy_pairs(web.read("pool")) if set(p) <= present}
    result: dict = {"rows_in": len(keys), "n_true_pairs": len(pairs)}
    if pairs:  # dedup may have caught every planted copy of a small web
        matrix = table.column("embedding").combine_chunks().flatten().to_numpy()
        report = evaluate_copy_detection(keys, matrix.reshape(len(keys), -1), pairs)
        result.update(asdict(report))
    embeddings.write_stats({**embeddings.read_stats(), "copy_detection": result})
    return result


def embeddings_dim(stage: StageDir) -> int:
    return pq.read_schema(stage.outputs()[0]).field("embedding").type.list_size
