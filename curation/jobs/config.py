"""The whole-run config: one section per job and stage, the schema of a run's ``_config.yaml``.

Every job function takes this (``run_x(cfg: CurationConfig, engine)``). The job-level settings
live here rather than in each job's module, so that job modules can import the whole-run config
without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curation import storage
from curation.download.config import DownloadConfig
from curation.engines import EngineConfig
from curation.rundir import RunDir
from curation.safe_names import check_component
from curation.stages.cluster import ClusterConfig
from curation.stages.copy_dedup import CopyDedupConfig
from curation.stages.decode import DecodeConfig
from curation.stages.embed import EmbedConfig
from curation.stages.ingest import IngestChecks
from curation.stages.near_dedup import NearDedupConfig
from curation.stages.nsfw import NsfwConfig
from curation.stages.retrieve import RetrieveConfig
from curation.stages.shard import ShardConfig
from curation.synth import SynthConfig
from curation.train_descriptor.config import AugmentConfig, DescriptorTrainConfig


@dataclass(frozen=True)
class IngestConfig(IngestChecks):
    """The ingest job: the checks of each image, then exact and near-exact dedup."""

    nsfw: NsfwConfig = field(default_factory=NsfwConfig)  # the NSFW stage (after the checks)
    exact_dedup: bool = True
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)


def _demo_descriptor() -> DescriptorTrainConfig:
    # 600 steps of 128 images (~5 minutes on 2 idle CPU cores; a fixed amount of training, so a
    # loaded machine gives the same descriptor, only later): what it takes to find
    # the copies pHash misses (flips, pads, crops) at precision 0.95. Measured on the copies left
    # after near-exact dedup of a 400-original web: recall at precision 0.95 was 0.37 after 150
    # steps of 64, 0.59 after 300 of 128, 0.84 after 600 of 128 (width 16 at 48 px: 0.40).
    return DescriptorTrainConfig(
        width=32,
        dim=128,
        augment=AugmentConfig(size=64),
        batch_size=128,
        max_steps=600,
        time_budget_s=None,
        # Flipped and padded copies were most of the planted groups the demo split (cosine
        # 0.82-0.91 under a 0.92 threshold): read the descriptor flip-averaged, borders cropped.
        inference_flip=True,
        inference_trim_borders=True,
    )


@dataclass(frozen=True)
class DemoConfig:
    # No official SSCD weights here: the demo trains its copy detector on the pool it downloaded.
    train_descriptor: bool = True
    descriptor: DescriptorTrainConfig = field(default_factory=_demo_descriptor)
    # The copy threshold is chosen for a target precision on a second synthetic web (another seed,
    # never the one deduped) and stored in the checkpoint; then copy dedup runs on the pool.
    calibrate: bool = True
    target_precision: float = 0.95
    tuning_pool: int = 400  # originals of the tuning web (at most the pool's own n_pool)
    dedup: bool = True
    decontaminate: bool = True  # against the web's evaluation set
    # Curation after dedup: k-means of the descriptor embeddings, retrieval (the seed set as is,
    # `sample_n` nearest per seed image, `cluster_m` per cluster holding `cluster_min_seeds`
    # seed images), shards, manifest.
    curate: bool = True
    clusters: int = 40
    sample_n: int = 4
    cluster_m: int = 20
    cluster_min_seeds: int = 4
    # Pretraining on the shards (curation/jobs/demo_pretrain.py), then retrieval and k-NN with
    # its teacher against the same ViT untrained.
    pretrain: bool = True
    pretrain_width: int = 192  # ViT-Ti's width, 64-wide heads
    pretrain_depth: int = 4
    pretrain_iterations: int = 60
    pretrain_batch_size: int = 16
    pretrain_workers: int = 1
    pretrain_prototypes: int = 1024
    pretrain_lr: float = 0.004


@dataclass(frozen=True)
class EvalSet:
    """An evaluation set to decontaminate against: a folder of its images (embedded here with the
    copy descriptor) or of its EMBEDDING shards made with the same descriptor."""

    name: str
    images: Path | None = None
    embeddings: str | None = None

    def __post_init__(self) -> None:
        check_component(self.name, "evaluation set name")
        if (self.images is None) == (self.embeddings is None):
            raise ValueError(f"evaluation set {self.name}: give exactly one of images, embeddings")


@dataclass(frozen=True)
class PipelineConfig:
    """What ``lvd run`` / ``jobs/curate_ray.py`` add to the stages' own settings
    (curation/jobs/pipeline.py)."""

    eval_sets: tuple[EvalSet, ...] = ()
    # No embed.checkpoint: train a copy descriptor on the pool first (lvd train-descriptor's
    # recipe in demo.descriptor), as the demo does.
    train_descriptor: bool = False
    retrieval_model: str | None = None  # a ViT arch (e.g. dinov2_vitl14); None: the descriptor
    retrieval_checkpoint: Path | None = None
    retrieval_size: int | None = None


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
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)

    @property
    def run_dir(self) -> RunDir:
        return RunDir(storage.join(self.runs_dir, self.name))  # a URI stays a URI
