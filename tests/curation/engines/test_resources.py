"""Resources are read from the stage instance by every engine, which honours them or refuses the
stage with a message naming what to change."""

import pyarrow as pa
import pytest

from curation.engines import EngineResourceError, get_engine
from curation.stages.base import Resources, StageSpec
from schemas import ENCODED_IMAGE_SCHEMA


class NeedsWhatTheConfigSays:
    """A stage whose resources exist only on the instance, from its config."""

    name = "needs"
    input_schema = ENCODED_IMAGE_SCHEMA
    output_schema = ENCODED_IMAGE_SCHEMA
    batch_size = 8

    def __init__(self, config: Resources):
        self.resources = config

    def setup(self) -> None:
        pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch


def spec(**resources) -> StageSpec:
    return StageSpec(NeedsWhatTheConfigSays, Resources(**resources))


def test_spec_reads_resources_from_an_unloaded_instance():
    assert spec(cpus=2, gpus=1).resources == Resources(cpus=2, gpus=1)
    assert spec().name == "needs"
    with pytest.raises(ValueError, match="resources"):
        Resources(cpus=0)


def test_ray_refuses_gpus_the_cluster_lacks(ray_runtime):
    engine = get_engine("ray", num_workers=1)
    with pytest.raises(RuntimeError, match=r"declares 1 GPU\(s\) per worker"):
        engine.run_shards(spec(gpus=1), [])


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gpus": 1}, "spark.task.resource.gpu.amount"),
        ({"cpus": 3}, "spark.task.cpus=3"),
        ({"memory_gb": 4}, "cannot reserve per task"),
    ],
)
def test_spark_refuses_what_it_cannot_give_each_task(spark_session, resources, message):
    engine = get_engine("spark")
    with pytest.raises(EngineResourceError, match=message):
        engine.run_shards(spec(**resources), [])


def test_spark_runs_a_stage_within_its_task_resources(spark_session):
    get_engine("spark").check_resources(spec(cpus=1))
