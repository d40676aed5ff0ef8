"""The embed stage: IMAGE_RECORD / ENCODED_IMAGE / webdataset inputs -> EMBEDDING shards."""

import io
import tarfile
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from curation.cli import main
from curation.engines import get_engine
from curation.imaging import decode_rgb
from curation.jobs.config import CurationConfig
from curation.jobs.embed import run_embed
from curation.models.descriptor import build_descriptor, save_descriptor_checkpoint
from curation.models.preprocess import Preprocessing, decode_floor, image_to_uint8, normalize_batch
from curation.readers.image_files import list_image_files, write_encoded_shards
from curation.readers.input_shards import conform_parquet_inputs, index_webdataset_tars
from curation.rundir import RunDir
from curation.runner import run_stage
from curation.stages.base import StageSpec
from curation.stages.decode import DecodeStage
from curation.stages.embed import EmbedConfig, EmbedStage, embed_stage_spec
from schemas import ENCODED_IMAGE_SCHEMA, SchemaError, embedding_schema

DIM, SIZE = 16, 32


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny models on a shared 2-core machine: one intra-op thread avoids barrier stalls.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_descriptor("resnet18", dim=DIM, width=8)
    return save_descriptor_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        model,
        arch="resnet18",
        dim=DIM,
        arch_kwargs={"width": 8},
        inference={"size": SIZE, "resize": "square"},
    )


@pytest.fixture(scope="module")
def records(small_web, tmp_path_factory):
    """IMAGE_RECORD shards of the pool and the bad files, through the decode stage."""
    files = list_image_files(small_web.pool_dir) + list_image_files(small_web.bad_dir)
    root = tmp_path_factory.mktemp("decode")
    shards = write_encoded_shards(files, root / "encoded", rows_per_shard=64)
    stage_dir = RunDir(root).stage("decode")
    with get_engine("local", progress=False) as engine:
        run_stage(StageSpec(DecodeStage), shards, stage_dir, engine)
    return stage_dir.outputs()


def embed_config(checkpoint, **kw) -> EmbedConfig:
    # On the CPU even where a GPU exists: the test compares with a float32 CPU forward.
    return EmbedConfig(
        model="descriptor", checkpoint=checkpoint, device="cpu", batch_size=16, num_workers=1, **kw
    )


def run_local(spec, inputs, root):
    stage_dir = RunDir(root).stage("embed_sscd")
    with get_engine("local", progress=False) as engine:
        stats = run_stage(spec, inputs, stage_dir, engine)
    return stats, pq.read_table(stage_dir.outputs()).sort_by("key")


def as_matrix(table: pa.Table) -> np.ndarray:
    """The embeddings of the ``ok`` rows (failed rows have none)."""
    table = table.filter(pa.compute.equal(table.column("status"), "ok"))
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(table.num_rows, -1)


@pytest.fixture(scope="module")
def record_output(checkpoint, records, tmp_path_factory):
    return run_local(
        embed_stage_spec(embed_config(checkpoint)), records, tmp_path_factory.mktemp("e")
    )


def test_embeds_every_ok_record_once_with_the_model_dim(record_output, records, checkpoint):
    stats, table = record_output
    inputs = pq.read_table(records)
    ok = inputs.filter(pa.compute.equal(inputs.column("status"), "ok"))
    assert 0 < ok.num_rows < inputs.num_rows
    # Every record is a row; the bad files keep their decode status and get no embedding.
    assert sorted(table.column("key").to_pylist()) == sorted(inputs.column("key").to_pylist())
    embedded = table.filter(pa.compute.is_valid(table.column("embedding")))
    assert sorted(embedded.column("key").to_pylist()) == sorted(ok.column("key").to_pylist())
    upstream = dict(zip(inputs.column("key").to_pylist(), inputs.column("status").to_pylist()))
    assert (
        dict(zip(table.column("key").to_pylist(), table.column("status").to_pylist())) == upstream
    )
    assert table.schema.equals(embedding_schema(DIM), check_metadata=False)
    assert stats["rows_out"] == inputs.num_rows and stats["status_ok"] == ok.num_rows
    assert set(table.column("model_id").to_pylist()) == {
        f"descriptor:{checkpoint.name}:square{SIZE}"
    }
    np.testing.assert_allclose(np.linalg.norm(as_matrix(table), axis=1), 1.0, atol=1e-5)


def test_embeddings_equal_a_plain_forward_of_the_decoded_image(
    record_output, small_web, checkpoint
):
    _, table = record_output
    model = build_descriptor("resnet18", dim=DIM, width=8)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    model.eval()
    table = table.filter(pa.compute.equal(table.column("status"), "ok"))
    rows = [i for i, key in enumerate(table.column("key").to_pylist()) if key.startswith("pool-")]
    matrix = as_matrix(table)
    prep = Preprocessing(SIZE, "square")
    for i in rows[:5]:
        key, vector = table.column("key")[i].as_py(), matrix[i]
        # The stage decodes JPEGs at a reduced DCT scale by default (embed.reduced_jpeg_decode).
        data = (small_web.pool_dir / f"{key}.jpg").read_bytes()
        image = decode_rgb(data, draft_size=decode_floor(prep))
        pixels = torch.from_numpy(image_to_uint8(image, prep).copy())[None]
        with torch.no_grad():
            expected = model(normalize_batch(pixels, prep))[0].numpy()
        np.testing.assert_allclose(vector, expected, atol=1e-4)


def test_rerun_redoes_only_unfinished_shards(checkpoint, records, tmp_path):
    spec = embed_stage_spec(embed_config(checkpoint))
    _, first = run_local(spec, records, tmp_path)
    stage_dir = RunDir(tmp_path).stage("embed_sscd")
    (stage_dir.path / "_SUCCESS").unlink()
    lost = stage_dir.outputs()[0]
    lost.unlink()
    stage_dir.shard_marker(lost.stem).unlink()
    with get_engine("local", progress=False) as engine:
        stats = run_stage(spec, records, stage_dir, engine)
    assert stats["shards"] == len(records)
    again = pq.read_table(stage_dir.outputs()).sort_by("key")
    assert again.equals(first)


def test_encoded_inputs_and_webdataset_tars_give_the_same_embeddings(
    checkpoint, record_output, small_web, tmp_path
):
    _, by_record = record_output
    files = list_image_files(small_web.pool_dir)[:20]
    cfg = CurationConfig(name="seeds", runs_dir=tmp_path, embed=embed_config(checkpoint))
    encoded = write_encoded_shards(files, tmp_path / "encoded", rows_per_shard=8)
    with get_engine("local", progress=False) as engine:
        run_embed(cfg, engine, encoded, stage="embed_encoded")
    tar_path = tmp_path / "shard-000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for f in files:
            tar.add(f, arcname=f"{f.stem}.jpg")
            info = tarfile.TarInfo(f"{f.stem}.json")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    shards = index_webdataset_tars([tar_path], tmp_path / "tar_index")
    assert pq.read_table(shards).column("image").null_count == len(files)
    with get_engine("local", progress=False) as engine:
        run_embed(cfg, engine, shards, stage="embed_tar")
    reference = by_record.filter(
        pa.compute.is_in(by_record.column("key"), pa.array([f.stem for f in files]))
    )
    for stage in ("embed_encoded", "embed_tar"):
        out = pq.read_table(cfg.run_dir.stage(stage).outputs()).sort_by("key")
        assert out.column("key").equals(reference.column("key"))
        np.testing.assert_allclose(as_matrix(out), as_matrix(reference), atol=1e-5)


def test_user_parquet_is_conformed_and_mixed_inputs_are_refused(
    checkpoint, records, small_web, tmp_path
):
    files = list_image_files(small_web.seed_dir)[:3]
    user = pa.table(
        {
            "key": [f.stem for f in files],
            "image": pa.array([f.read_bytes() for f in files], pa.large_binary()),
            "label": [1, 2, 3],
        }
    )
    pq.write_table(user, tmp_path / "seeds.parquet")
    [conformed] = conform_parquet_inputs([tmp_path / "seeds.parquet"], tmp_path / "conformed")
    assert pq.read_schema(conformed).field("image").type == ENCODED_IMAGE_SCHEMA.field("image").type
    cfg = CurationConfig(name="mixed", runs_dir=tmp_path, embed=embed_config(checkpoint))
    with get_engine("local", progress=False) as engine, pytest.raises(SchemaError, match="mix"):
        run_embed(cfg, engine, [conformed, records[0]])


def test_stage_needs_a_resolved_dim(checkpoint):
    with pytest.raises(ValueError, match="embed_stage_spec"):
        EmbedStage(embed_config(checkpoint))
    spec = embed_stage_spec(embed_config(checkpoint))
    assert spec.config.dim == DIM
    stage = spec.stage_cls(spec.config)
    assert stage.output_schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert spec.resources.gpus == 0
    # Resources are per instance: the same class declares a GPU when its config asks for one.
    gpu = embed_stage_spec(replace(embed_config(checkpoint), gpus=1))
    assert gpu.stage_cls is EmbedStage
    assert (gpu.resources.gpus, gpu.resources.cpus) == (1, 4)


def test_cli_embeds_a_seed_folder(checkpoint, small_web, tmp_path, capsys):
    code = main(
        [
            "embed",
            "--images",
            str(small_web.seed_dir),
            "--run",
            "cli",
            f"runs_dir={tmp_path}",
            "embed.model=descriptor",
            f"embed.checkpoint={checkpoint}",
            "embed.threads=1",
            "embed.device=cpu",
            "embed.num_workers=1",
        ]
    )
    assert code == 0
    out = pq.read_table(RunDir(tmp_path / "cli").stage("embed_sscd").outputs())
    assert out.num_rows == len(list_image_files(small_web.seed_dir))
