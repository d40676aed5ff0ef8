"""A stage killed midway and rerun gives the same outputs as an uninterrupted run, no duplicates."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from curation.engines import get_engine
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.decode import DecodeStage


@pytest.fixture(scope="module")
def shards(small_web, tmp_path_factory):
    files = list_image_files(small_web.pool_dir)
    return write_encoded_shards(files, tmp_path_factory.mktemp("encoded"), rows_per_shard=20)


def _run_local(shards, root):
    with get_engine("local", progress=False) as engine:
        return run_stage(StageSpec(DecodeStage), shards, RunDir(root).stage("decode"), engine)


def _files(stage_dir) -> dict[str, tuple[int, int]]:
    """Output shards and markers of a stage, by name: (inode, mtime). A rewrite (temp file renamed
    in) changes both. Temp files are left out."""
    paths = [*stage_dir.path.glob("*.parquet"), *(stage_dir.path / "_shards").glob("*.json")]
    return {
        f"{p.parent.name}/{p.name}": (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in paths
        if not p.name.startswith(".")
    }


@pytest.fixture
def rows_through_stage(monkeypatch) -> list[int]:
    """The sizes of the batches the decode stage is given in this process."""
    seen: list[int] = []
    real_call = DecodeStage.__call__

    def counting_call(self, batch):
        seen.append(batch.num_rows)
        return real_call(self, batch)

    monkeypatch.setattr(DecodeStage, "__call__", counting_call)
    return seen


# Runs the decode stage in a child process that SIGKILLs itself while writing the 4th shard:
# after three shards are complete and with a temp file of the fourth half written.
_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import curation.io
    from curation.engines import get_engine
    from curation.rundir import RunDir
    from curation.runner import run_stage
    from curation.stages.base import StageSpec
    from curation.stages.decode import DecodeStage

    shards = [Path(p) for p in sys.argv[2:]]
    real_write = curation.io.AtomicParquetWriter.write
    seen = []

    def dying_write(self, table):
        real_write(self, table)
        seen.append(self.path)
        if len(set(seen)) == 4:
            self._writer.close()  # make sure the half shard's temp file is on disk
            os.kill(os.getpid(), signal.SIGKILL)

    curation.io.AtomicParquetWriter.write = dying_write
    with get_engine("local", progress=False) as engine:
        run_stage(StageSpec(DecodeStage), shards, RunDir(sys.argv[1]).stage("decode"), engine)
    """
)


def test_killed_stage_resumes_to_the_same_output(shards, tmp_path, rows_through_stage):
    reference = _run_local(shards, tmp_path / "reference")
    killed_root = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(killed_root), *map(str, shards)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stage_dir = RunDir(killed_root).stage("decode")
    assert not stage_dir.is_complete()
    assert len(list((stage_dir.path / "_shards").glob("*.json"))) == 3
    assert list(stage_dir.path.glob(".tmp-*")), "the kill should leave a half-written temp file"
    finished = _files(stage_dir)
    finished_rows = sum(
        json.loads(m.read_text())["rows_in"] for m in stage_dir.path.glob("_shards/*")
    )

    rows_through_stage.clear()  # the reference run went through it too
    resumed = _run_local(shards, killed_root)
    # Only the unfinished shards went through the stage; the finished ones were left as they were.
    total_rows = sum(pq.read_metadata(s).num_rows for s in shards)
    assert sum(rows_through_stage) == total_rows - finished_rows
    after = _files(stage_dir)
    assert {name: after[name] for name in finished} == finished
    assert len(after) == 2 * len(shards)
    assert stage_dir.is_complete()
    assert not list(stage_dir.path.glob(".tmp-*"))
    ref_table = pq.read_table(RunDir(tmp_path / "reference").stage("decode").outputs())
    got_table = pq.read_table(stage_dir.outputs())
    assert got_table.num_rows == ref_table.num_rows
    keys = got_table.column("key").to_pylist()
    assert len(keys) == len(set(keys))
    assert got_table.sort_by("key").equals(ref_table.sort_by("key"))
    for counter in ("rows_in", "rows_out", "status_ok", "shards"):
        assert resumed[counter] == reference[counter]


def test_finished_stage_is_skipped(shards, tmp_path):
    first = _run_local(shards, tmp_path)
    stage_dir = RunDir(tmp_path).stage("decode")
    mtimes = {p: os.stat(p).st_mtime_ns for p in stage_dir.outputs()}
    second = _run_local(shards, tmp_path)
    assert second == first
    assert {p: os.stat(p).st_mtime_ns for p in stage_dir.outputs()} == mtimes
    stats = stage_dir.read_stats()
    assert stats["rows_in"] == sum(pq.read_metadata(s).num_rows for s in shards)
    assert stats["seconds"] >= 0


def test_only_unfinished_shards_are_redone(shards, tmp_path, rows_through_stage):
    first = _run_local(shards, tmp_path)
    stage_dir = RunDir(tmp_path).stage("decode")
    (stage_dir.path / "_SUCCESS").unlink()
    victim = stage_dir.outputs()[1]
    (stage_dir.path / "_shards" / f"{victim.stem}.json").unlink()
    before = _files(stage_dir)
    rows_through_stage.clear()

    stats = _run_local(shards, tmp_path)
    after = _files(stage_dir)
    changed = {name for name in after if before.get(name) != after[name]}
    # Exactly the victim's output was rewritten and its marker created; nothing else was touched.
    assert changed == {f"decode/{victim.name}", f"_shards/{victim.stem}.json"}
    victim_input = next(s for s in shards if s.stem == victim.stem)
    assert sum(rows_through_stage) == pq.read_metadata(victim_input).num_rows
    assert stats["shards"] == len(shards)
    assert stats["rows_in"] == first["rows_in"]


def test_input_shards_with_the_same_name_are_refused(shards, tmp_path):
    copy_dir = tmp_path / "other"
    copy_dir.mkdir()
    twin = copy_dir / shards[0].name
    twin.write_bytes(shards[0].read_bytes())
    with pytest.raises(ValueError, match="distinct file names"):
        _run_local([shards[0], twin], tmp_path / "run")
