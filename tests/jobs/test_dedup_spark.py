"""``spark-submit jobs/dedup_spark.py``, run with pyspark's own ``bin/spark-submit`` as a user
would, keeps exactly the images the in-process index library keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.index.components import (
    components_table,
    guarded_components,
    labels_of,
    priority_rank,
)
from curation.index.knn import cross_pairs, knn_pairs
from schemas import DEDUP_COMPONENT_SCHEMA, embedding_schema

ROOT = Path(__file__).resolve().parents[2]
DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_embeddings(folder: Path, keys, vectors) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {"key": k, "embedding": v.tolist(), "model_id": "test", "status": "ok"}
        for k, v in zip(keys, vectors)
    ]
    rows.append({"key": "failed", "embedding": None, "model_id": "test", "status": "read_error"})
    pq.write_table(pa.Table.from_pylist(rows, schema=embedding_schema(DIM)), folder / "a.parquet")
    return folder


def spark_submit(require, *args: str) -> subprocess.CompletedProcess:
    pyspark = require("pyspark")
    launcher = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [str(launcher), "--master", "local[2]", str(ROOT / "jobs" / "dedup_spark.py"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_spark_submit_keeps_what_the_in_process_dedup_keeps(require, tmp_path):
    rng = np.random.default_rng(5)
    n = 400
    x = unit(rng.standard_normal((n, DIM)))
    for base in range(0, 120, 4):  # 30 groups of 4 near-copies
        x[base + 1 : base + 4] = unit(x[base] + 0.25 * rng.standard_normal((3, DIM)) / np.sqrt(DIM))
    keys = [f"img{r:04d}" for r in range(n)]
    evals = unit(rng.standard_normal((20, DIM)))
    evals[0] = unit(x[9] + 0.2 * rng.standard_normal(DIM) / np.sqrt(DIM))  # copies a group member
    embeddings = write_embeddings(tmp_path / "embed", keys, x)
    eval_dir = write_embeddings(tmp_path / "eval", [f"ev{r:02d}" for r in range(20)], evals)
    out = tmp_path / "dedup"

    done = spark_submit(
        require,
        "--embeddings", str(embeddings), "--eval", str(eval_dir), "--out", str(out),
        "threshold=0.7", "eval_threshold=0.6", "n_centroids=8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # spark-submit merges the driver's stderr (logs) into its stdout: the stats are one block.
    text = done.stdout
    stats = json.loads(text[text.index("\n{\n") : text.index("\n}\n") + 2])
    assert stats == json.loads((out / "_stats.json").read_text())
    assert (out / "_SUCCESS").is_file()
    components = pq.read_table(out / "components", schema=DEDUP_COMPONENT_SCHEMA)

    i, j, sim = knn_pairs(x, 64, 0.7, index="flat")
    rep = guarded_components(n, i, j, sim, priority_rank(None, keys), 0.7)
    qi, _, _ = cross_pairs(x, evals, 64, 0.6, index="flat")
    contaminated = np.zeros(n, dtype=bool)
    contaminated[qi] = True
    expected = components_table(keys, labels_of(rep), rep, contaminated)
    kept = set(components.filter(components["keep"])["key"].to_pylist())
    assert kept == set(expected.filter(expected["keep"])["key"].to_pylist())
    assert components.sort_by("key").equals(expected)
    assert 250 < len(kept) < n - 90  # the groups collapsed, the contaminated group is gone
    assert not {"img0008", "img0009", "img0010", "img0011"} & kept
    assert stats["eval_sets"]["eval"]["pool_images_matched"] >= 1


def test_spark_submit_with_a_missing_folder_fails_in_one_line(require, tmp_path):
    done = spark_submit(require, "--embeddings", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert done.returncode == 2
    output = done.stdout + done.stderr  # spark-submit sends the driver's stderr to stdout
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert errors == [f"dedup_spark: error: embedding folder {tmp_path / 'nowhere'} does not exist"]
    assert "Traceback" not in output
