"""The whole-run config: one section per job and stage, the schema of a run's ``_config.yaml``.

Every job function takes this (``run_x(cfg: CurationConfig, engine)``). The job-level settings
live here rather than in each job's module, so that job modules can import the whole-run config
without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curation.download.config import DownloadConfig
from curation.engines import EngineConfig
from curation.rundir import RunDir
from curation.stages.copy_dedup import CopyDedupConfig
from curation.stages.decode import DecodeConfig
from curation.stages.embed import EmbedConfig
from curation.stages.ingest import IngestChecks
from curation.stages.near_dedup import NearDedupConfig
from curation.synth import SynthConfig
from curation.train_descriptor.config import AugmentConfig, DescriptorTrainConfig


@dataclass(frozen=True)
class IngestConfig(IngestChecks):
    """The ingest job: the checks of each image, then exact and near-exact dedup."""

    exact_dedup: bool = True
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)


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
    dedup: CopyDedupConfig = field(default_factory=CopyDedupConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    @property
    def run_dir(self) -> RunDir:
        return RunDir(Path(self.runs_dir) / self.name)
