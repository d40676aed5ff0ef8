"""The unique images: IMAGE_RECORD -> IMAGE_RECORD, the ``ok`` records that no dedup stage marked
as a duplicate. Its output folder is what the embedding stages read."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.stages.base import Resources
from schemas import IMAGE_RECORD_SCHEMA, STATUS_OK


@dataclass(frozen=True)
class UniqueImagesConfig:
    dedup_outputs: tuple[str, ...] = ()  # HASH_DEDUP files whose non-kept keys are dropped


class UniqueImagesStage:
    name = "unique_images"
    input_schema = IMAGE_RECORD_SCHEMA
    output_schema = IMAGE_RECORD_SCHEMA
    resources = Resources(cpus=1)
    batch_size = 4096

    def __init__(self, config: UniqueImagesConfig | None = None):
        self.config = config or UniqueImagesConfig()
        self.dropped = pa.array([], pa.string())

    def setup(self) -> None:
        dropped = []
        for path in self.config.dedup_outputs:
            table = pq.read_table(path, columns=["key", "keep"])
            dropped.append(table.filter(pc.invert(table.column("keep"))).column("key"))
        if dropped:
            self.dropped = pa.chunked_array(dropped, pa.string()).combine_chunks()

    def __call__(self, batch: pa.Table) -> pa.Table:
        ok = pc.equal(batch.column("status"), STATUS_OK)
        unique = pc.invert(pc.is_in(batch.column("key"), value_set=self.dropped))
        return batch.filter(pc.and_(ok, unique))
