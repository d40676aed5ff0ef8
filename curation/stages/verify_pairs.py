"""Check candidate copy pairs with pixels: PAIR_CHECK rows in, the same rows with ``window_score``.

The copy dedup's ``dedup.verify`` sends the pairs whose descriptor score falls just under the
threshold here (:mod:`curation.jobs.dedup`, :mod:`curation.engines.spark_dedup`): each row names
both images' bytes (``src_file`` / ``src_offset`` / ``src_size``, the same for ``dst``), and gets
:func:`curation.models.window_match.window_score`, how well one image is a rescaled window of the other.
An image that cannot be read or decoded leaves ``window_score`` null and says why in ``status``
(``read_error``, ``decode_error``, ...) and ``error_message``: such a pair is not a copy.

Rows are taken in key order and each image is prepared once per batch, so an image in many pairs
(a popular picture and its copies) is decoded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.imaging import DEFAULT_MAX_PIXELS, ImageRejected
from curation.models.window_match import prepare_bytes, window_score
from curation.readers.image_bytes import ImageBytesError, ImageBytesReader
from curation.stages.base import Resources
from schemas import PAIR_CHECK_SCHEMA, STATUS_OK

STATUS_READ_ERROR = "read_error"
UNCHECKED = "unchecked"  # PAIR_CHECK status of a pair not checked yet
CHECK_SHARD_ROWS = 2048  # pairs per check task (the jobs cut their inputs by it)


@dataclass(frozen=True)
class VerifyPairsConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS  # decode limit, as the other stages'
    mirror: bool = True  # also match each image's mirror image
    batch_size: int = 512  # pairs per batch


class VerifyPairsStage:
    name = "verify_pairs"
    input_schema = PAIR_CHECK_SCHEMA
    output_schema = PAIR_CHECK_SCHEMA
    resources = Resources(cpus=1)

    def __init__(self, config: VerifyPairsConfig | None = None):
        self.config = config or VerifyPairsConfig()
        self.batch_size = self.config.batch_size

    def setup(self) -> None:
        pass

    def _prepared(self, reader: ImageBytesReader, row: dict, side: str, cache: dict):
        key = row[f"{side}_key"]
        if key not in cache:
            try:
                data = reader.read(
                    row[f"{side}_file"], row[f"{side}_offset"], row[f"{side}_size"], key
                )
                cache[key] = prepare_bytes(data, self.config.max_pixels)
            except ImageBytesError as exc:
                cache[key] = (STATUS_READ_ERROR, f"{key}: {exc}")
            except ImageRejected as exc:
                cache[key] = (exc.status, f"{key}: {exc}")
        return cache[key]

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.sort_by([("src_key", "ascending"), ("dst_key", "ascending")]).to_pylist()
        cache: dict[str, np.ndarray | tuple[str, str]] = {}
        with ImageBytesReader() as reader:
            for row in rows:
                a = self._prepared(reader, row, "src", cache)
                b = self._prepared(reader, row, "dst", cache)
                failed = next((x for x in (a, b) if isinstance(x, tuple)), None)
                if failed is None:
                    row.update(
                        window_score=window_score(a, b, mirror=self.config.mirror),
                        status=STATUS_OK,
                        error_message=None,
                    )
                else:
                    row.update(window_score=None, status=failed[0], error_message=failed[1])
        return pa.Table.from_pylist(rows, schema=PAIR_CHECK_SCHEMA)
