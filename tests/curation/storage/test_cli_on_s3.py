"""The CLI on object storage (issue 13): ``lvd embed --input/--tars s3://...`` and ``lvd dedup
--embeddings/--records s3://...`` with ``runs_dir=s3://...`` on the command line give what the same
commands give on local disk; a store folder that is missing, or is an object, fails in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curation import storage
from curation.cli import main
from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.ingest import run_ingest
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.readers.embeddings import read_embeddings
from curation.readers.input_shards import index_webdataset_tars
from curation.runner import TABLE_OUTPUT
from tests.curation.storage.conftest import BUCKET
from tests.curation.storage.test_runs_on_s3 import write_tars


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_descriptor_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        build_descriptor("resnet18", dim=16, width=4),
        arch="resnet18",
        dim=16,
        arch_kwargs={"width": 4},
        inference={"size": 32, "resize": "square"},
    )


def _prepare(runs_dir: str, tars: Path, index: Path) -> None:
    """An ingested pool under ``runs_dir``, and its tars copied to ``<runs_dir>/tars``."""
    shards = index_webdataset_tars(sorted(tars.glob("*.tar")), index)
    with get_engine("local", progress=False) as engine:
        run_ingest(CurationConfig(name="pool", runs_dir=runs_dir), engine, shards)
    storage.copy_tree(tars, storage.join(runs_dir, "tars"))


def _embed_and_dedup(runs_dir: str, checkpoint: Path) -> dict:
    """``lvd embed`` (from a stage folder and from tars) and ``lvd dedup``, every folder named on
    the command line; returns what they wrote."""
    run = ["--run", "cli", f"runs_dir={runs_dir}"]
    embed = [
        "embed.model=descriptor",
        f"embed.checkpoint={checkpoint}",
        "embed.device=cpu",
        "embed.batch_size=8",
        "embed.num_workers=0",
    ]
    pool = storage.join(runs_dir, "pool")
    records = storage.join(pool, "unique_images")
    assert main(["embed", "--input", records, *run, *embed]) == 0
    tars = storage.join(runs_dir, "tars")
    assert main(["embed", "--tars", tars, "--stage", "embed_tars", *run, *embed]) == 0
    embeddings = storage.join(runs_dir, "cli", "embed_sscd")
    dedup = ["dedup", "--embeddings", embeddings, "--records", records]
    assert main([*dedup, *run, "dedup.threshold=0.999"]) == 0
    cli = CurationConfig(name="cli", runs_dir=runs_dir).run_dir
    found = {}
    for stage in ("embed_sscd", "embed_tars"):
        keys, vectors = read_embeddings(cli.stage(stage).outputs())
        order = np.argsort(keys)
        found[stage] = ([keys[i] for i in order], vectors[order])
    components = storage.read_table(cli.stage("dedup_copy").path / TABLE_OUTPUT)
    found["components"] = components.replace_schema_metadata(None).sort_by("key")
    kept = storage.read_table(cli.stage("deduplicated_images").outputs(), columns=["key"])
    found["kept"] = sorted(kept["key"].to_pylist())
    found["run"] = cli
    return found


def test_embed_and_dedup_take_store_folders(s3_server, checkpoint, tmp_path, capsys):
    write_tars(tmp_path / "tars")
    local_runs, store_runs = str(tmp_path / "runs"), f"s3://{BUCKET}/cli-runs"
    _prepare(local_runs, tmp_path / "tars", tmp_path / "index")
    _prepare(store_runs, tmp_path / "tars", tmp_path / "index")
    expected = _embed_and_dedup(local_runs, checkpoint)
    found = _embed_and_dedup(store_runs, checkpoint)
    capsys.readouterr()

    assert isinstance(found["run"].root, storage.ObjectPath)
    for stage in ("embed_sscd", "embed_tars", "dedup_copy", "deduplicated_images"):
        assert found["run"].stage(stage).is_complete(), stage
    # The tars were indexed on the store: the embed inputs point at them there.
    inputs = storage.read_table(storage.list_files(found["run"].root / "embed_tars_inputs"))
    assert {v.rsplit("/", 1)[0] for v in inputs["source_file"].to_pylist()} == {
        f"{store_runs}/tars"
    }
    for stage in ("embed_sscd", "embed_tars"):
        assert found[stage][0] == expected[stage][0], stage
        np.testing.assert_allclose(found[stage][1], expected[stage][1], rtol=0, atol=1e-6)
    assert len(found["embed_sscd"][0]) == 15 and len(found["embed_tars"][0]) == 18
    assert found["components"].equals(expected["components"])
    assert found["kept"] == expected["kept"]
    assert not Path("s3:").exists()


MISSING = f"s3://{BUCKET}/no-such-folder"


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["dedup", "--embeddings", MISSING], f"{MISSING} does not exist"),
        (["dedup", "--records", MISSING], f"{MISSING} does not exist"),
        (["embed", "--input", MISSING], f"{MISSING} does not exist"),
        (["embed", "--tars", MISSING], f"{MISSING} does not exist"),
        (["ingest", "--input", MISSING], f"{MISSING} does not exist"),
        (["dedup", "--embeddings", f"s3://{BUCKET}/cli-errors/part-0.parquet"], "is a file"),
    ],
    ids=["dedup_embeddings", "dedup_records", "embed_input", "embed_tars", "ingest_input", "file"],
)
def test_a_bad_store_folder_fails_in_one_line(s3_server, argv, expect, capsys):
    storage.write_bytes(f"s3://{BUCKET}/cli-errors/part-0.parquet", b"PAR1")
    code = main([*argv, "--run", "errors", f"runs_dir=s3://{BUCKET}/cli-errors-runs"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lvd {argv[0]}: error: "), err
    assert expect in lines[0], err
