"""The CLI's error contract, checked on every subcommand with a table of bad inputs.

A problem the user caused (a path that does not exist, relative or absolute; an empty folder; a
missing, empty or corrupt file; a table without the needed columns; an unknown config key; a value
of the wrong type or outside its enumeration; an output folder that cannot be written) must end the
command with exit code 2 and one stderr line ``lvd <command>: error: ...`` that names the problem,
and never with a traceback. Inputs are checked before any work starts, so for most rows that line
is all of stderr; rows marked ``late`` fail once work has begun (the model is loaded after the
images are packed), where the log lines of that work may come first, and nothing else.

Each row runs ``python -m curation.cli`` in a subprocess, so whatever the process prints (a
traceback included) is seen as a user sees it. Rows run a few at a time in a thread pool started
with the module; each test waits for its own row.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli import build_parser, main
from curation.commands.common import location
from schemas import IMAGE_RECORD_SCHEMA

REPO = Path(__file__).resolve().parents[2]
CURATE_RAY = REPO / "jobs" / "curate_ray.py"
JOB_COMMANDS = {
    "decode",
    "download",
    "ingest",
    "embed",
    "demo",
    "retrieve",
    "run",
    "cluster",
    "shards",
}  # take key=value overrides
# A log record as cli.main formats it (logging.basicConfig): the only other lines a late row allows.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) \S+: ")
# Options that take a path but are not user inputs of the command's own: every subcommand's
# --config goes through the same load_config (rows on decode, ingest and train-descriptor).
SHARED_PATH_OPTIONS = {"--config"}


@dataclass(frozen=True)
class Row:
    id: str
    argv: tuple[str, ...]  # after `lvd`; "{root}" is the inputs folder (also the working dir)
    expect: str  # a distinctive part of the error line: the path, key or value at fault
    late: bool = False  # found after work began: log lines may precede the error line
    xfail: str | None = None  # a known gap, with where it must be fixed
    script: str = "lvd"  # or "curate_ray"

    @property
    def command(self) -> str:
        if self.script != "lvd":
            return self.script
        return next((a for a in self.argv if not a.startswith("-")), "")


def row(id: str, *argv: str, expect: str, **kwargs) -> Row:
    return Row(id, argv, expect, **kwargs)


CKPT = "embed.model=sscd_resnet18"
ROWS = [
    row("lvd_no_command", expect="required: COMMAND"),
    # demo
    row("demo_unknown_key", "demo", "engine.nme=ray", expect="'engine.nme'"),
    row(
        "demo_runs_dir_under_file", "demo", "runs_dir={root}/a_file/runs", expect="a_file is a file"
    ),
    # synth
    row("synth_out_under_file", "synth", "--out", "a_file/web", expect="a_file is a file"),
    row("synth_negative_count", "synth", "--out", "web", "--n-pool", "-3", expect="n_pool"),
    row("synth_not_a_number", "synth", "--out", "web", "--n-pool", "abc", expect="'abc'"),
    # decode
    row("decode_no_source", "decode", expect="--input --images is required"),
    row("decode_input_missing_relative", "decode", "--input", "nope", expect="nope does not exist"),
    row(
        "decode_input_missing_absolute",
        "decode",
        "--input",
        "{root}/nope",
        expect="{root}/nope does not exist",
    ),
    row("decode_input_empty", "decode", "--input", "empty", expect="no .parquet shards in empty"),
    row("decode_input_is_file", "decode", "--input", "a_file", expect="a_file is a file"),
    row("decode_input_corrupt", "decode", "--input", "corrupt", expect="corrupt/part-0.parquet"),
    row("decode_input_wrong_schema", "decode", "--input", "wrong", expect="found ['a', 'b']"),
    row("decode_images_empty", "decode", "--images", "empty", expect="no image files under empty"),
    row("decode_engine_enum", "decode", "--images", "imgs", "engine.name=dask", expect="'dask'"),
    row("decode_bad_type", "decode", "--images", "imgs", "rows_per_shard=abc", expect="'abc'"),
    row("decode_not_an_override", "decode", "--images", "imgs", "oops", expect="'oops'"),
    row(
        "decode_config_not_yaml",
        "decode",
        "--images",
        "imgs",
        "--config",
        "broken.yaml",
        expect="broken.yaml",
    ),
    row(
        "decode_override_not_yaml",
        *("decode", "--images", "imgs", "rows_per_shard=[1,"),
        expect="rows_per_shard",
    ),
    # download
    row("download_list_missing", "download", "--url-list", "nope.parquet", expect="nope.parquet"),
    row("download_list_empty_folder", "download", "--url-list", "empty", expect="in empty"),
    row("download_list_empty_file", "download", "--url-list", "empty.csv", expect="empty.csv"),
    row(
        "download_list_no_urls",
        "download",
        "--url-list",
        "header_only.csv",
        expect="header_only.csv",
        late=True,  # found once the list is read (and logged)
    ),
    row("download_list_wrong_columns", "download", "--url-list", "links.parquet", expect="'url'"),
    row("download_list_corrupt", "download", "--url-list", "corrupt.parquet", expect="corrupt"),
    row("download_list_format", "download", "--url-list", "urls.txt", expect="urls.txt"),
    row("download_retry_unknown_run", "download", "--retry-failed", "nosuch", expect="'nosuch'"),
    row(
        "download_format_enum",
        "download",
        "--url-list",
        "one_url.csv",
        "download.output_format=zip",
        expect="'zip'",
    ),
    # ingest
    row("ingest_nothing_downloaded", "ingest", expect="run `lvd download` first"),
    row("ingest_images_missing", "ingest", "--images", "nope", expect="nope does not exist"),
    row("ingest_input_image_records", "ingest", "--input", "records", expect="IMAGE_RECORD"),
    row("ingest_bad_bool", "ingest", "ingest.face_blur.enabled=maybe", expect="'maybe'"),
    row("ingest_config_missing", "ingest", "--config", "nope.yaml", expect="nope.yaml"),
    row("ingest_config_not_mapping", "ingest", "--config", "list.yaml", expect="list.yaml"),
    # dedup
    row("dedup_embeddings_missing", "dedup", "--embeddings", "nope", expect="nope does not exist"),
    row("dedup_embeddings_wrong_schema", "dedup", "--embeddings", "wrong", expect="not EMBEDDING"),
    row("dedup_embeddings_corrupt", "dedup", "--embeddings", "corrupt", expect="part-0.parquet"),
    row("dedup_records_missing", "dedup", "--records", "{root}/gone", expect="{root}/gone"),
    row("dedup_eval_missing", "dedup", "--eval", "bench=nope", expect="'bench' nope does not"),
    row("dedup_eval_bad_name", "dedup", "--eval", "..=wrong", expect="not a safe file name"),
    row("dedup_nothing_embedded", "dedup", "--run", "fresh", expect="run `lvd embed` first"),
    row("dedup_threshold_range", "dedup", "dedup.threshold=2", expect="in [-1, 1]"),
    # cluster
    row("cluster_nothing_embedded", "cluster", expect="`lvd embed`"),
    row("cluster_bad_k", "cluster", "cluster.k=0", expect="cluster.k"),
    # lineage
    row("lineage_run_missing", "lineage", "--run-dir", "nope", "k1", expect="nope does not exist"),
    row("lineage_no_keys", "lineage", "--run-dir", ".", expect="no keys"),
    row(
        "lineage_keys_file_missing",
        "lineage",
        "--run-dir",
        ".",
        "--keys-file",
        "gone.txt",
        expect="gone.txt",
    ),
    row("lineage_key_unknown", "lineage", "--run-dir", ".", "nokey", expect="not found"),
    # retrieve
    row("retrieve_no_seeds", "retrieve", expect="retrieve.seeds is empty"),
    row("retrieve_seed_missing", "retrieve", "--seed", "web=nope", expect="'web' nope does not"),
    row("retrieve_seed_no_folder", "retrieve", "--seed", "web", expect="NAME[:MODE]=DIR"),
    row("retrieve_seed_bad_mode", "retrieve", "--seed", "web:most=wrong", expect="mode must be"),
    row("retrieve_seed_bad_name", "retrieve", "--seed", "a/b=wrong", expect="'a/b'"),
    row("retrieve_nothing_embedded", "retrieve", "--seed", "web=wrong", expect="`lvd embed`"),
    row("retrieve_bad_index", "retrieve", "retrieve.index=hnsw", expect="'hnsw'"),
    # shards
    row("shards_nothing_retrieved", "shards", expect="`lvd retrieve`"),
    row("shards_sources_missing", "shards", "--sources", "nope", expect="nope does not exist"),
    row("shards_sources_wrong", "shards", "--sources", "wrong", expect="missing column 'key'"),
    row("shards_sources_corrupt", "shards", "--sources", "corrupt", expect="part-0.parquet"),
    row("shards_bad_format", "shards", "shards.format=zip", expect="'zip'"),
    row("shards_unknown_key", "shards", "shards.fromat=tar", expect="'shards.fromat'"),
    # manifest
    row("manifest_run_missing", "manifest", "nope", expect="nope does not exist"),
    row("manifest_run_is_file", "manifest", "a_file", expect="a_file is a file"),
    row("manifest_no_shards", "manifest", "empty", expect="run `lvd shards` first"),
    row("manifest_verify_unwritten", "manifest", "empty", "--verify", expect="lvd manifest RUN"),
    # embed
    row("embed_images_missing", "embed", "--images", "{root}/nope", expect="{root}/nope"),
    row("embed_tars_missing", "embed", "--tars", "nope", expect="nope does not exist"),
    row("embed_tars_corrupt", "embed", "--tars", "tars", expect="tars/x.tar"),
    row("embed_parquet_corrupt", "embed", "--parquet", "corrupt", expect="corrupt/part-0.parquet"),
    row("embed_parquet_wrong_schema", "embed", "--parquet", "wrong", expect="missing column 'key'"),
    row("embed_input_wrong_schema", "embed", "--input", "wrong", expect="wrong/part-0.parquet"),
    row("embed_resize_enum", "embed", "--images", "imgs", "embed.resize=stretch", expect="stretch"),
    row(
        "embed_checkpoint_corrupt",
        *("embed", "--images", "imgs", CKPT, "embed.checkpoint=corrupt.pt"),
        expect="corrupt.pt",
        late=True,
    ),
    row(
        "embed_checkpoint_empty",
        *("embed", "--images", "imgs", CKPT, "embed.checkpoint=empty.pt"),
        expect="empty.pt",
        late=True,
    ),
    row(
        "embed_model_unknown",
        *("embed", "--images", "imgs", "embed.model=nonsense"),
        expect="'nonsense'",
        late=True,
    ),
    row(
        "embed_device_unavailable",
        *("embed", "--images", "imgs", CKPT, "embed.device=cuda:99"),
        expect="cuda:99",
        late=True,
    ),
    row(
        "embed_batch_size_zero",
        *("embed", "--images", "imgs", CKPT, "embed.batch_size=0"),
        expect="batch_size",
    ),
    # train-descriptor
    row(
        "train_images_missing",
        *("train-descriptor", "--images", "nope", "--out", "d.pt"),
        expect="nope does not exist",
    ),
    row(
        "train_images_empty",
        *("train-descriptor", "--images", "empty", "--out", "d.pt"),
        expect="no image files under empty",
    ),
    row(
        "train_shards_corrupt",
        *("train-descriptor", "--shards", "corrupt", "--out", "d.pt"),
        expect="corrupt/part-0.parquet",
    ),
    row(
        "train_tars_corrupt",
        *("train-descriptor", "--tars", "tars", "--out", "d.pt"),
        expect="tars/x.tar",
    ),
    row(
        "train_unknown_key",
        *("train-descriptor", "--images", "imgs", "--out", "d.pt", "lr_max=1"),
        expect="'lr_max'",
    ),
    row(
        "train_bad_type",
        *("train-descriptor", "--images", "imgs", "--out", "d.pt", "batch_size=many"),
        expect="'many'",
    ),
    row(
        "train_arch_unknown",
        *("train-descriptor", "--images", "imgs", "--out", "d.pt", "arch=vgg"),
        expect="'vgg'",
    ),
    row(
        "train_out_under_file",
        *("train-descriptor", "--images", "imgs", "--out", "a_file/d.pt"),
        expect="a_file is a file",
    ),
    row(
        "train_out_is_folder",
        *("train-descriptor", "--images", "imgs", "--out", "empty"),
        expect="empty is a folder",
    ),
    row(
        "train_eval_synth_missing",
        *("train-descriptor", "--images", "imgs", "--out", "d.pt", "--eval-synth", "nope"),
        expect="nope holds no complete synthetic web",
    ),
    row(
        "train_eval_scales_not_sizes",
        *("train-descriptor", "--images", "imgs", "--out", "d.pt", "--eval-scales", "a,b"),
        expect="'a,b'",
    ),
    row(
        "train_config_not_yaml",
        *("train-descriptor", "--images", "imgs", "--out", "d.pt", "--config", "broken.yaml"),
        expect="broken.yaml",
    ),
    # bench copydetect: refused before the benchmark is built
    row("bench_no_benchmark", "bench", expect="required: BENCHMARK"),
    row(
        "bench_checkpoint_missing",
        *("bench", "copydetect", "--cache", "cache", "--checkpoint", "nope.pt"),
        expect="nope.pt does not exist",
    ),
    row(
        "bench_checkpoint_corrupt",
        *("bench", "copydetect", "--cache", "cache", "--checkpoint", "corrupt.pt"),
        expect="corrupt.pt",
    ),
    row(
        "bench_cache_under_file",
        *("bench", "copydetect", "--cache", "a_file/cache", "--phash"),
        expect="a_file is a file",
    ),
    row(
        "bench_json_under_file",
        *("bench", "copydetect", "--cache", "cache", "--json", "a_file/r.json"),
        expect="a_file is a file",
    ),
    row("bench_split_enum", "bench", "copydetect", "--split", "test", expect="'test'"),
    row(
        "bench_pool_size_without_storing",
        *("bench", "copydetect", "--cache", "cache", "--pool-size", "1000000"),
        expect="--pool-size needs --store-calibration",
    ),
    row("bench_untrained_unknown", "bench", "copydetect", "--untrained", "vgg", expect="'vgg'"),
    # pretrain: sources, output and impossible settings refused before the model is built
    row("pretrain_no_source", "pretrain", "--out", "run", expect="--shards --images is required"),
    row("pretrain_shards_missing", "pretrain", "--shards", "nope", "--out", "run", expect="nope"),
    row("pretrain_shards_wrong", "pretrain", "--shards", "wrong", "--out", "run", expect="wrong"),
    row(
        "pretrain_shards_corrupt",
        *("pretrain", "--shards", "corrupt", "--out", "run"),
        expect="cannot be read as Parquet",
    ),
    row("pretrain_images_empty", "pretrain", "--images", "empty", "--out", "run", expect="empty"),
    row(
        "pretrain_out_under_file",
        *("pretrain", "--images", "imgs", "--out", "a_file/run"),
        expect="a_file is a file",
    ),
    row(
        "pretrain_crop_not_patch_multiple",
        *("pretrain", "--images", "imgs", "--out", "run", "crops.global_crops_size=230"),
        expect="not a multiple of the patch size",
    ),
    row(
        "pretrain_koleo_one_image",
        *("pretrain", "--images", "imgs", "--out", "run", "batch_size_per_rank=1"),
        expect="KoLeo needs at least 2 images per rank",
    ),
    row(
        "pretrain_distill_teacher_missing",
        *("pretrain", "--images", "imgs", "--out", "run", "--distill-from", "nope.pt"),
        expect="nope.pt does not exist",
    ),
    row(
        "pretrain_distill_teacher_corrupt",
        *("pretrain", "--images", "imgs", "--out", "run", "--distill-from", "corrupt.pt"),
        expect="corrupt.pt is not a torch checkpoint",
    ),
    row(
        "pretrain_unknown_key",
        "pretrain",
        "--images",
        "imgs",
        "--out",
        "run",
        "optim.lrr=1",
        expect="'optim.lrr'",
    ),
    # eval knn: settings and both splits checked before the model loads
    row("eval_no_evaluation", "eval", expect="required: EVALUATION"),
    row(
        "eval_train_missing",
        *("eval", "knn", "--train", "nope", "--val", "imgs", "--model", "vit_small"),
        expect="--train nope does not exist",
    ),
    row(
        "eval_val_missing",
        *("eval", "knn", "--train", "imgs", "--val", "{root}/nope", "--model", "vit_small"),
        expect="--val {root}/nope does not exist",
    ),
    row(
        "eval_train_loose_images",
        *("eval", "knn", "--train", "imgs", "--val", "imgs", "--model", "vit_small"),
        expect="imgs holds images outside class folders",
    ),
    row(
        "eval_train_parquet_without_labels",
        *("eval", "knn", "--train", "wrong", "--val", "empty", "--model", "vit_small"),
        expect="needs a 'label' column",
    ),
    row(
        "eval_checkpoint_missing",
        *("eval", "knn", "--train", "imgs", "--val", "imgs", "--checkpoint", "nope.pt"),
        expect="--checkpoint nope.pt does not exist",
    ),
    row(
        "eval_json_under_file",
        *("eval", "knn", "--train", "imgs", "--val", "imgs", "--model", "vit_small"),
        *("--json", "a_file/r.json"),
        expect="a_file is a file",
    ),
    row(
        "eval_k_zero",
        *("eval", "knn", "--train", "imgs", "--val", "imgs", "--model", "vit_small", "--k", "0"),
        expect="--k must be >= 1",
    ),
    # the Ray job, checked before Ray starts
    row("ray_job_unknown_key", "engine.nme=ray", expect="'engine.nme'", script="curate_ray"),
    row(
        "ray_job_list_missing",
        "download.url_list=nope.csv",
        expect="nope.csv",
        script="curate_ray",
    ),
    # report: --out checked first, then the run folder, before anything is read
    row("report_no_run_dir", "report", expect="required: RUN_DIR"),
    row("report_run_missing", "report", "nope", expect="nope does not exist"),
    row("report_run_is_file", "report", "a_file", expect="a_file is a file"),
    row("report_not_a_run", "report", "empty", expect="empty holds no run"),
    row("report_out_under_file", "report", "empty", "--out", "a_file/r.html", expect="a_file is a"),
    row("report_out_is_folder", "report", "empty", "--out", "empty", expect="empty is a folder"),
    # checkpoint consolidate: OUT checked first, then the checkpoint, before anything is read
    row("checkpoint_no_action", "checkpoint", expect="required: ACTION"),
    row("checkpoint_no_paths", "checkpoint", "consolidate", expect="required: CKPT_DIR, OUT.pth"),
    row(
        "checkpoint_missing",
        *("checkpoint", "consolidate", "nope", "out.pth"),
        expect="nope does not exist",
    ),
    row(
        "checkpoint_not_a_checkpoint",
        *("checkpoint", "consolidate", "empty", "out.pth"),
        expect="empty holds no training checkpoint",
    ),
    row(
        "checkpoint_is_a_file",
        *("checkpoint", "consolidate", "a_file", "out.pth"),
        expect="a_file is a file",
    ),
    row(
        "checkpoint_out_under_file",
        *("checkpoint", "consolidate", "empty", "a_file/out.pth", "--teacher-backbone"),
        expect="a_file is a file",
    ),
    row(
        "checkpoint_out_is_folder",
        *("checkpoint", "consolidate", "empty", "{root}/empty"),
        expect="{root}/empty is a folder",
    ),
    # run: the pipeline file, then what it must name
    row("run_no_pipeline", "run", expect="give the pipeline file first"),
    row("run_pipeline_missing", "run", "nope.yaml", expect="nope.yaml does not exist"),
    row("run_pipeline_not_mapping", "run", "list.yaml", expect="list.yaml"),
    row("run_no_url_list", "run", "empty_pipeline.yaml", expect="download.url_list is required"),
    row("run_bad_eval_set", "run", "bad_eval.yaml", expect="exactly one of images, embeddings"),
    # serve: the runs root, then the tokens, then the port, all before listening
    row("serve_no_runs", "serve", expect="required: --runs"),
    row("serve_runs_missing", "serve", "--runs", "nope", expect="nope does not exist"),
    row("serve_runs_is_file", "serve", "--runs", "a_file", expect="a_file is a file"),
    row("serve_bad_port", "serve", "--runs", "empty", "--port", "70000", expect="70000"),
    row(
        "serve_token_file_missing",
        *("serve", "--runs", "empty", "--token-file", "nope.token"),
        expect="nope.token does not exist",
    ),
    row(
        "serve_token_file_empty",
        *("serve", "--runs", "empty", "--token-file", "empty.csv"),
        expect="empty.csv is empty",
    ),
    row(
        "serve_ray_token_file_missing",
        *("serve", "--runs", "empty", "--ray-token-file", "nope.token"),
        expect="nope.token does not exist",
    ),
]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _write_inputs(root: Path) -> None:
    """The bad (and a few good) inputs the rows name, relative to ``root``."""
    (root / "empty").mkdir()
    (root / "imgs").mkdir()
    for i in range(2):
        Image.new("RGB", (48, 40), (60 * i, 90, 30)).save(root / "imgs" / f"img{i}.png")
    (root / "a_file").write_text("not a folder\n")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "part-0.parquet").write_bytes(b"PAR1 this is not parquet")
    (root / "wrong").mkdir()
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), root / "wrong" / "part-0.parquet")
    (root / "records").mkdir()
    pq.write_table(IMAGE_RECORD_SCHEMA.empty_table(), root / "records" / "part-0.parquet")
    (root / "tars").mkdir()
    (root / "tars" / "x.tar").write_bytes(b"not a tar archive " * 64)
    (root / "empty.csv").write_bytes(b"")
    (root / "header_only.csv").write_text("url\n")
    (root / "one_url.csv").write_text("url\nhttp://127.0.0.1:9/a.jpg\n")
    (root / "urls.txt").write_text("http://example.com/a.jpg\n")
    (root / "corrupt.parquet").write_bytes(b"garbage")
    pq.write_table(pa.table({"link": ["http://example.com/a.jpg"]}), root / "links.parquet")
    (root / "broken.yaml").write_text("engine: [local\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "empty_pipeline.yaml").write_text("name: empty\n")
    (root / "bad_eval.yaml").write_text("pipeline:\n  eval_sets:\n    - {name: bench}\n")
    (root / "corrupt.pt").write_bytes(b"\x80\x02garbage" * 16)
    (root / "empty.pt").write_bytes(b"")


def _command_line(item: Row, root: Path) -> list[str]:
    argv = [a.replace("{root}", str(root)) for a in item.argv]
    if item.script == "curate_ray":
        return [sys.executable, str(CURATE_RAY), *argv]
    if item.command in JOB_COMMANDS:
        argv.append(f"name={item.id}")  # a run folder per row: rows run in parallel
    return [sys.executable, "-m", "curation.cli", *argv]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_inputs")
    _write_inputs(root)
    return root


@pytest.fixture(scope="module")
def results(request, inputs):
    """Every selected row started at once on a small pool; ``results[id].result()`` waits for
    one (``-k`` runs only the rows it selects)."""
    selected = {
        test.callspec.params["item"].id
        for test in request.session.items
        if test.module is request.module
        and hasattr(test, "callspec")
        and "item" in test.callspec.params
    }
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        futures: dict[str, Future] = {
            item.id: pool.submit(_run, _command_line(item, inputs), inputs)
            for item in ROWS
            if item.id in selected
        }
        yield futures
        for future in futures.values():
            future.cancel()


def test_rows_have_unique_ids():
    ids = [item.id for item in ROWS]
    assert len(ids) == len(set(ids))


def test_every_subcommand_and_path_option_has_a_row():
    commands = {item.command for item in ROWS}
    for name, parser in _subparsers().items():
        assert name in commands, f"`lvd {name}` has no row in the CLI contract table"
        flags = {a for item in ROWS if item.command == name for a in item.argv}
        for action in parser._actions:
            if action.type in (Path, location) and action.option_strings:
                flag = action.option_strings[-1]
                if flag not in SHARED_PATH_OPTIONS:
                    assert flag in flags, f"`lvd {name} {flag}` has no row in the table"


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(item, id=item.id, marks=[pytest.mark.xfail(reason=item.xfail, strict=True)])
        if item.xfail
        else pytest.param(item, id=item.id)
        for item in ROWS
    ],
)
def test_bad_input_gives_one_line_and_exit_2(item, results, inputs):
    done = results[item.id].result()
    stderr = done.stderr
    shown = f"$ {' '.join(_command_line(item, inputs))}\nstderr:\n{stderr}"
    assert "Traceback" not in stderr, shown
    assert done.returncode == 2, shown
    lines = stderr.splitlines()
    if item.late:
        lines = [line for line in lines if not LOG_LINE.match(line)]
    assert len(lines) == 1, shown
    program = "lvd " + item.command if item.script == "lvd" else item.script
    assert lines[0].startswith(f"{program.strip()}: error: "), shown
    assert item.expect.replace("{root}", str(inputs)) in lines[0], shown


def test_debug_shows_the_traceback(inputs):
    done = _run(
        [sys.executable, "-m", "curation.cli", "--debug", "decode", "--input", "nope"], inputs
    )
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert "FileNotFoundError: input folder nope does not exist" in done.stderr
    assert "lvd decode: error:" not in done.stderr  # the traceback replaces the one-line message


def test_debug_reaches_the_ray_job(inputs):
    done = _run([sys.executable, str(CURATE_RAY), "--debug", "engine.nme=ray"], inputs)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "ConfigError: unknown config key" in done.stderr


def _png_folder(folder: Path, n: int = 3) -> None:
    folder.mkdir()
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 36), (50 * i, 20, 200)).save(buffer, "PNG")
        (folder / f"img{i}.png").write_bytes(buffer.getvalue())


def test_decode_takes_a_relative_image_folder(tmp_path, monkeypatch, capsys):
    _png_folder(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)
    assert main(["decode", "--images", "imgs", "runs_dir=runs", "name=rel"]) == 0
    packed = pq.read_table(sorted((tmp_path / "runs" / "rel" / "encoded").glob("*.parquet")))
    # file URIs are absolute whatever the working directory was
    expected = sorted((tmp_path / "imgs" / f"img{i}.png").as_uri() for i in range(3))
    assert sorted(packed.column("url").to_pylist()) == expected


def test_embed_takes_a_relative_image_folder(tmp_path, monkeypatch, capsys):
    _png_folder(tmp_path / "imgs")
    monkeypatch.chdir(tmp_path)
    argv = ["embed", "--images", "imgs", "runs_dir=runs", "name=rel", "embed.model=sscd_resnet18"]
    argv += ["embed.size=64", "embed.num_workers=0", "embed.device=cpu"]
    assert main(argv) == 0
    embedded = pq.read_table(sorted((tmp_path / "runs" / "rel" / "embed_sscd").glob("*.parquet")))
    assert sorted(embedded.column("key").to_pylist()) == ["img0", "img1", "img2"]
    assert embedded.column("embedding").null_count == 0
