"""A stand-in for img2dataset's downloader, importable by worker processes: it records, per shard,
how the worker that ran it was started (tests/curation/download/test_worker_pool.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def probe(row) -> tuple[bool, object]:
    """``row``: (shard id, output folder). Writes what the worker saw, returns success."""
    import cv2
    import numpy as np

    shard_id, folder = row
    image = np.zeros((40, 50, 3), dtype=np.uint8)  # 2,000 pixels
    try:
        decoded = cv2.imdecode(cv2.imencode(".png", image)[1], cv2.IMREAD_COLOR)
    except cv2.error:  # over OPENCV_IO_MAX_IMAGE_PIXELS
        decoded = None
    seen = {
        "parent": os.getppid(),
        # a spawned worker imports only what unpickling this function needs; a forked one has
        # what its server preloaded
        "preloaded": "img2dataset.downloader" in sys.modules,
        "decoded": decoded is not None,
    }
    (Path(folder) / f"{shard_id}.json").write_text(json.dumps(seen))
    return True, row
