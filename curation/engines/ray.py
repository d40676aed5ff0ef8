"""Ray engine: Ray Data ``map_batches`` over shard tasks with an actor pool.

Each row of the dataset is one shard task; a pool of actors (callable class, ``setup()`` once per
actor, ``batch_format="pyarrow"``) processes them, each writing its own output shard and marker, so
Ray's task retries are safe and a rerun resumes. Works against a local ``ray.init()`` or a cluster
address (``ray://...`` or ``auto`` under ``ray job submit``).
"""

from __future__ import annotations

import logging
import os

import pyarrow as pa

from curation import storage
from curation.engines.base import Engine, EngineUnavailable
from curation.runner import ShardTask, process_shard
from curation.stages.base import StageSpec
from schemas import SHARD_RESULT_SCHEMA

logger = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable("the 'ray' engine needs Ray Data: pip install 'lvd[ray]'") from exc
    return ray


class _ShardWorker:
    """One actor of the pool: builds the stage once, then processes the shard tasks it is given."""

    def __init__(self, spec: StageSpec):
        self.stage = spec.build()

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = [process_shard(self.stage, ShardTask(**row)) for row in batch.to_pylist()]
        return pa.Table.from_pylist(results, schema=SHARD_RESULT_SCHEMA)


def _storage_runtime_env() -> dict:
    """The object-store endpoint for the actors (workers of an already running Ray did not see
    this process's ``engine.storage``); credentials stay with each worker's own environment."""
    env = storage.endpoint_environment()
    return {"runtime_env": {"env_vars": env}} if env else {}


class RayEngine(Engine):
    name = "ray"
    img2dataset_distributor = "ray"

    @classmethod
    def from_config(cls, config) -> RayEngine:
        storage.configure(config.storage)
        return cls(address=config.ray_address, num_workers=config.num_workers)

    def __init__(
        self,
        address: str | None = None,
        num_workers: int | None = None,
        num_cpus: int | None = None,
    ):
        self.ray = _import_ray()
        self._owns_ray = False
        if not self.ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            elif num_cpus:
                kwargs["num_cpus"] = num_cpus
            # Workers must import this package the same way the driver does.
            os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
            self.ray.init(**kwargs)
            self._owns_ray = True
        self.num_workers = num_workers

    def run_shards(self, spec: StageSpec, tasks: list[ShardTask]) -> list[dict]:
        ray = self.ray
        resources = spec.resources
        cpus, gpus = resources.cpus, resources.gpus
        available = ray.cluster_resources()
        if gpus and available.get("GPU", 0) < gpus:
            raise RuntimeError(
                f"stage {spec.name!r} declares {gpus} GPU(s) per worker but the Ray cluster has "
                f"{available.get('GPU', 0)}"
            )
        workers = self.num_workers or max(1, int(available.get("CPU", 1) // max(cpus, 1)))
        workers = min(workers, len(tasks))
        rows = [
            {"input_path": t.input_path, "output_path": t.output_path, "marker_path": t.marker_path}
            for t in tasks
        ]
        # One block per shard, built on the driver: shards spread over the pool instead of queueing
        # behind one actor, and no extra task competes with the actors for CPUs.
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = dataset.map_batches(
            _ShardWorker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus,
            num_gpus=gpus,
            **({"memory": int(resources.memory_gb * 2**30)} if resources.memory_gb else {}),
            **_storage_runtime_env(),
        ).take_all()
        logger.info("ray engine: %d shard(s) on %d actor(s)", len(results), workers)
        return results

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
