"""Runs on object storage (issue 13): a stage chain with ``runs_dir=s3://...`` on a real
S3-compatible server (moto) equals a local-disk run; a writer killed between its output and its
marker leaves nothing a reader or a rerun takes as complete; a run folder moved on disk or copied
to the store still reads its image bytes by lineage."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation import storage
from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.ingest import run_ingest
from curation.readers.image_bytes import image_bytes_loaders, resolve_lineage
from curation.readers.input_shards import index_webdataset_tars
from curation.rundir import RunDir, StageDir
from curation.runner import TABLE_OUTPUT, plan_tasks
from tests.curation.storage.conftest import BUCKET

STAGES = ("ingest", "phash", "unique_images")
TABLE_STAGES = ("dedup_exact", "dedup_near")
REPO = Path(__file__).resolve().parents[3]


def _picture(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((96, 96), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_tars(folder: Path, n_tars: int = 3, per_tar: int = 6) -> dict[str, bytes]:
    """Webdataset tars of small pictures; the last picture of each tar repeats the first's bytes
    (an exact duplicate). Returns every key's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {}
    for t in range(n_tars):
        with tarfile.open(folder / f"{t:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(per_tar):
                key = f"t{t}i{i}"
                data = _picture(100 * t) if i == per_tar - 1 else _picture(100 * t + i)
                info = tarfile.TarInfo(f"{key}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                pictures[key] = data
    return pictures


@pytest.fixture(scope="module")
def pictures_and_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    pictures = write_tars(root / "tars")
    shards = index_webdataset_tars(sorted((root / "tars").glob("*.tar")), root / "index")
    return pictures, shards


def _ingest(engine_name: str, runs_dir: str, shards: list[Path]) -> RunDir:
    cfg = CurationConfig(name="pool", runs_dir=runs_dir)
    with (
        get_engine(engine_name, progress=False)
        if engine_name == "local"
        else get_engine(engine_name) as engine
    ):
        run_ingest(cfg, engine, shards)
    return cfg.run_dir


def _tables(run: RunDir) -> dict[str, pa.Table]:
    tables = {name: storage.read_table(run.stage(name).outputs()).sort_by("key") for name in STAGES}
    for name in TABLE_STAGES:
        tables[name] = storage.read_table(run.stage(name).path / TABLE_OUTPUT).sort_by("key")
    return {name: t.replace_schema_metadata(None) for name, t in tables.items()}


@pytest.fixture(scope="module")
def local_run(pictures_and_shards, tmp_path_factory):
    return _ingest("local", str(tmp_path_factory.mktemp("local")), pictures_and_shards[1])


@pytest.mark.parametrize("engine_name", ["local", "ray"])
def test_ingest_chain_on_s3_equals_local(
    s3_server, pictures_and_shards, local_run, engine_name, require
):
    if engine_name == "ray":
        ray = require("ray")
        # A Ray started by an earlier test has workers without this session's S3 environment
        # (credentials, endpoint): start a fresh one, as a job submitted with that environment.
        if ray.is_initialized():
            ray.shutdown()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # as ray_runtime
    run = _ingest(engine_name, f"s3://{BUCKET}/chain-{engine_name}", pictures_and_shards[1])
    assert isinstance(run.root, storage.ObjectPath)
    assert run.stage("unique_images").is_complete()
    expected, found = _tables(local_run), _tables(run)
    assert found["dedup_exact"].num_rows == 18
    assert found["unique_images"].num_rows == 15  # the 3 byte copies dropped
    for name in (*STAGES, *TABLE_STAGES):
        assert found[name].equals(expected[name]), name
    # Nothing of the run touched local disk under a mangled name ("s3:/...").
    assert not Path("s3:").exists()


KILL_SCRIPT = """
import sys
from curation.engines import get_engine
from curation.rundir import StageDir
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.ingest import IngestStage, IngestStageConfig
with get_engine("local", progress=False) as engine:
    run_stage(StageSpec(IngestStage, IngestStageConfig()), sys.argv[2:], StageDir(sys.argv[1]), engine)
"""


def _run_ingest_stage(stage_uri: str, shards: list[Path], kill_at: str | None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LVD_KILL_AT", None)
    if kill_at:
        env["LVD_KILL_AT"] = kill_at
    command = [sys.executable, "-c", KILL_SCRIPT, stage_uri, *map(str, shards)]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=120)


def test_writer_killed_between_output_and_marker(s3_server, pictures_and_shards, local_run):
    shards = pictures_and_shards[1]
    stage_uri = f"s3://{BUCKET}/killed/pool/ingest"
    stage = StageDir(stage_uri)
    killed = _run_ingest_stage(stage_uri, shards, "shard_output_written#2")
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    # The second shard's object is on the store, but its marker is not: it is not complete.
    assert storage.exists(stage.shard_output("part-00001"))
    assert not stage.shard_done("part-00001")
    assert [p.name for p in stage.outputs()] == ["part-00000.parquet"]
    assert not stage.is_complete()
    pending, done = plan_tasks(shards, stage)
    assert [t.shard for t in pending] == ["part-00001", "part-00002"]
    assert [t.shard for t in done] == ["part-00000"]

    rerun = _run_ingest_stage(stage_uri, shards, None)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert stage.is_complete()
    table = storage.read_table(stage.outputs())
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 18
    expected = storage.read_table(local_run.stage("ingest").outputs()).sort_by("key")
    assert (
        table.sort_by("key")
        .replace_schema_metadata(None)
        .equals(expected.replace_schema_metadata(None))
    )


def test_marker_names_the_output_size(s3_server, tmp_path):
    stage = StageDir(f"s3://{BUCKET}/sizes/run/stage")
    storage.write_bytes(stage.shard_output("part-00000"), b"twelve bytes")
    storage.write_bytes(stage.shard_marker("part-00000"), b'{"output_size": 11}')
    assert not stage.shard_done("part-00000")
    assert stage.outputs() == []
    storage.write_bytes(stage.shard_marker("part-00000"), b'{"output_size": 12}')
    assert stage.shard_done("part-00000")
    assert stage.outputs() == [stage.shard_output("part-00000")]


def _read_unique_bytes(run_root) -> dict[str, bytes]:
    """Every unique image's bytes, read by lineage from the run folder where it lies now."""
    stage = StageDir(storage.join(run_root, "unique_images"))
    table = resolve_lineage(storage.read_table(stage.outputs()), run_root)
    return {key: load() for key, load in zip(table["key"].to_pylist(), image_bytes_loaders(table))}


def test_run_folder_moved_and_synced_still_reads(s3_server, tmp_path):
    run_root = tmp_path / "before" / "pool"
    pictures = write_tars(run_root / "inputs")  # the bytes live inside the run folder
    shards = index_webdataset_tars(sorted((run_root / "inputs").glob("*.tar")), run_root / "index")
    with get_engine("local", progress=False) as engine:
        run_ingest(CurationConfig(name="pool", runs_dir=tmp_path / "before"), engine, shards)
    stored = storage.read_table(RunDir(run_root).stage("unique_images").outputs())
    assert set(stored["source_file"].to_pylist()) == {f"inputs/{t:05d}.tar" for t in range(3)}

    moved = tmp_path / "after" / "pool"
    shutil.move(run_root, moved)
    found = _read_unique_bytes(moved)
    assert len(found) == 15
    assert all(found[key] == pictures[key] for key in found)

    synced = f"s3://{BUCKET}/synced/pool"
    assert storage.copy_tree(moved, synced) > 0
    assert _read_unique_bytes(synced) == found
