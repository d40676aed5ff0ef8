"""Job configs and the plain ``run_x(cfg, engine)`` functions the CLI wraps and tests call."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from curation.engines import Engine, get_engine
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.sources import list_image_files, write_encoded_shards
from curation.stages.base import StageSpec
from curation.stages.decode import DecodeConfig, DecodeStage
from curation.stages.download import DownloadConfig, run_download
from curation.stages.embed import EmbedConfig
from curation.stages.ingest import IngestConfig, run_ingest
from curation.synth import SynthConfig, SynthWebServer, generate_synthetic_web, write_url_list

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    name: str = "local"  # local | ray | spark
    ray_address: str | None = None  # None: start a local Ray; "auto" under `ray job submit`
    num_workers: int | None = None  # Ray actor-pool size; None: one per free CPU
    spark_master: str | None = None  # None: local[*], or whatever spark-submit sets


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


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    stats: dict
    seconds: float


def run_demo(cfg: CurationConfig) -> DemoResult:
    """The embedded default: synthesise a small web, serve it on localhost, then run every stage
    that exists on it (download, ingest with exact and near-exact dedup)."""
    start = time.perf_counter()
    run = cfg.run_dir
    run.root.mkdir(parents=True, exist_ok=True)
    web = generate_synthetic_web(run.root / "synth", cfg.synth)
    stats: dict = {}
    with build_engine(cfg.engine) as engine, SynthWebServer(web.root) as server:
        url_list = run.root / "urls.parquet"
        # The slow URL only shows a timeout; the demo keeps it out to stay quick.
        write_url_list(web, server.base_url, url_list, slow=False)
        # The synthetic web lives on 127.0.0.1, which the network guard refuses by default.
        download = replace(cfg.download, url_list=str(url_list), allow_private_networks=True)
        cfg = replace(cfg, download=download)
        stats["download"] = run_download(cfg, engine)
        stats.update(run_ingest(cfg, engine))
    return DemoResult(run_dir=run.root, stats=stats, seconds=time.perf_counter() - start)
