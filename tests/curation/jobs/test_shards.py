"""The shards job end to end: what readers get back from each format, the seeded shuffle, resume
after a kill between a shard and its marker, bad rows counted, bad inputs refused."""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.config import ConfigError, load_config
from curation.engines import get_engine
from curation.jobs.config import CurationConfig
from curation.jobs.manifest import ManifestError, build_manifest
from curation.jobs.shards import run_shards
from pretrain.data.shards import ParquetBytesCatalog, TarIndexCatalog, open_catalog
from schemas import LVD_SAMPLE_SCHEMA, SchemaError, validate
from tests.shard_sources import retrieved_images, split_sources, write_sources


def _config(root: Path, name: str, *overrides: str) -> CurationConfig:
    return load_config(
        CurationConfig,
        [],
        [f"runs_dir={root}", f"name={name}", "shards.samples_per_shard=4", *overrides],
    )


def _run(cfg: CurationConfig, sources=None) -> dict:
    with get_engine("local", progress=False) as engine:
        return run_shards(cfg, engine, sources)


def _shard_run(root: Path, name: str, *overrides: str):
    cfg = _config(root, name, *overrides)
    table, expected = write_sources(cfg.run_dir.root)
    retrieved_images(cfg.run_dir.root, table)
    return cfg, _run(cfg), expected


def _tar_order(shards: Path) -> list[str]:
    """Sample keys in shard order, from the indexes."""
    indexes = sorted(shards.glob("*.index.parquet"))
    return [k for p in indexes for k in pq.read_table(p).column("key").to_pylist()]


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith("_")
    }


@pytest.fixture(scope="module")
def tar_run(tmp_path_factory):
    return _shard_run(tmp_path_factory.mktemp("runs"), "tars")


@pytest.fixture(scope="module")
def parquet_run(tmp_path_factory):
    return _shard_run(
        tmp_path_factory.mktemp("runs"),
        "parquet",
        "shards.format=parquet",
        "shards.row_group_size=3",
    )


def test_webdataset_reads_back_every_key_once_with_its_bytes(tar_run, require):
    webdataset = require("webdataset")
    cfg, stats, expected = tar_run
    shards = cfg.run_dir.root / "shards"
    urls = sorted(glob.glob(str(shards / "*.tar")))
    assert [Path(u).name for u in urls] == [f"shard-{i:05d}.tar" for i in range(4)]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))
    keys = [s["__key__"] for s in samples]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))
    for sample in samples:
        lineage = json.loads(sample["json"])
        image = sample[lineage["extension"]]
        assert image == expected[sample["__key__"]]
        assert lineage["key"] == sample["__key__"]
        assert lineage["url"] == f"http://images.example/{sample['__key__']}"
        assert lineage["sha256"] == hashlib.sha256(image).hexdigest()
        assert lineage["seed_dataset"] in ("pets", "cars") and lineage["mode"]
    assert [len(pq.read_table(p)) for p in sorted(shards.glob("*.index.parquet"))] == [4, 4, 4, 2]
    assert stats["shards"]["rows_out"] == len(expected) and stats["shards"]["shards"] == 4
    assert (shards / "_SUCCESS").exists()


def test_pretrainer_reads_both_formats_through_open_catalog(tar_run, parquet_run):
    for (cfg, _, expected), kind in (
        (tar_run, TarIndexCatalog),
        (parquet_run, ParquetBytesCatalog),
    ):
        catalog = open_catalog(cfg.run_dir.root / "shards")
        assert isinstance(catalog, kind)
        read = {catalog.key(i): catalog.read(i) for i in range(len(catalog))}
        assert len(catalog) == len(expected) and read == expected


def test_parquet_shards_read_with_pyarrow_and_hugging_face_datasets(
    parquet_run, require, tmp_path, monkeypatch
):
    cfg, _, expected = parquet_run
    files = sorted(str(p) for p in (cfg.run_dir.root / "shards").glob("*.parquet"))
    assert [Path(f).name for f in files] == [f"shard-{i:05d}.parquet" for i in range(4)]
    for path in files:
        shard = pq.ParquetFile(path)
        groups = [shard.metadata.row_group(i).num_rows for i in range(shard.num_row_groups)]
        assert all(g <= 3 for g in groups) and sum(groups) == shard.metadata.num_rows
    table = pq.read_table(files)
    validate(table, LVD_SAMPLE_SCHEMA)
    assert dict(zip(table["key"].to_pylist(), table["image"].to_pylist())) == expected
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = require("datasets")
    loaded = datasets.load_dataset(
        "parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(loaded) == len(expected)
    assert {row["key"]: row["image"] for row in loaded} == expected
    assert sorted(set(loaded["mode"])) == ["as_is", "cluster", "sample"]


def test_shuffle_is_fixed_by_seed_whatever_the_input_files(tmp_path):
    orders = {}
    for name, seed, parts in (("a", 1, 1), ("b", 1, 3), ("c", 2, 1)):
        cfg = _config(tmp_path, name, f"shards.seed={seed}")
        table, _ = write_sources(cfg.run_dir.root)
        # Rows dealt into several files, listed in reverse: the input order must not matter.
        sources = split_sources(cfg.run_dir.root / "sources", table, parts)[::-1]
        _run(cfg, sources)
        orders[name] = _tar_order(cfg.run_dir.root / "shards")
    assert orders["a"] == orders["b"]
    assert orders["a"] != orders["c"]
    assert sorted(orders["a"]) == sorted(orders["c"])
    assert orders["a"] != sorted(orders["a"])


def test_a_kill_between_a_shard_and_its_marker_loses_and_repeats_nothing(
    tmp_path, tar_run, monkeypatch
):
    import curation.jobs.shards as job

    cfg = _config(tmp_path, "killed")
    table, expected = write_sources(cfg.run_dir.root)
    retrieved_images(cfg.run_dir.root, table)
    passages = []

    def dying(point):
        passages.append(point)
        if point == "lvd_shard_written" and len(passages) == 2:
            raise KeyboardInterrupt("killed between the second shard and its marker")

    monkeypatch.setattr(job, "kill_point", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg)
    shards = cfg.run_dir.root / "shards"
    assert (shards / "shard-00001.tar").exists()  # written whole...
    assert not (shards / "_shards" / "shard-00001.json").exists()  # ...but not committed
    assert not (shards / "_SUCCESS").exists()
    with pytest.raises(ManifestError, match="not complete"):
        build_manifest(cfg.run_dir.root)
    monkeypatch.setattr(job, "kill_point", lambda point: None)
    stats = _run(cfg)
    keys = _tar_order(shards)
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))
    assert stats["shards"]["rows_out"] == len(expected)
    # Byte for byte the shards of the run that was never killed.
    assert _digests(shards) == _digests(tar_run[0].run_dir.root / "shards")


def test_rows_that_fail_are_counted_not_silently_lost(tmp_path):
    cfg = _config(tmp_path, "bad")
    table, expected = write_sources(cfg.run_dir.root)
    rows = table.to_pylist()
    rows[0]["sha256"] = "0" * 64
    rows[1]["source_offset"] += 1_000_000
    rows[2].update(status="decode_error", error_message="truncated")
    table = table.from_pylist(rows, schema=table.schema)
    retrieved_images(cfg.run_dir.root, table)
    stats = _run(cfg)["shards"]
    assert stats["source_rows"] == len(expected)
    assert stats["skipped_status_decode_error"] == 1
    assert stats["dropped_sha256_mismatch"] == 1 and stats["dropped_read_error"] == 1
    assert stats["rows_out"] == len(expected) - 3
    kept = set(_tar_order(cfg.run_dir.root / "shards"))
    assert kept == set(expected) - {rows[0]["key"], rows[1]["key"], rows[2]["key"]}


def test_bad_inputs_are_refused_before_any_work(tmp_path):
    cfg = _config(tmp_path, "inputs")
    table, _ = write_sources(cfg.run_dir.root)
    with pytest.raises(FileNotFoundError, match="lvd retrieve"):
        _run(cfg)
    wrong = cfg.run_dir.root / "wrong" / "part-00000.parquet"
    wrong.parent.mkdir()
    pq.write_table(table.drop_columns(["seed_dataset"]), wrong)
    with pytest.raises(SchemaError, match=r"part-00000.parquet.*missing column 'seed_dataset'"):
        _run(cfg, [wrong])
    twice = split_sources(cfg.run_dir.root / "twice", table, 1) + split_sources(
        cfg.run_dir.root / "again", table, 1
    )
    with pytest.raises(SchemaError, match="each key once"):
        _run(cfg, twice)
    assert not (cfg.run_dir.root / "shards" / "_SUCCESS").exists()


def test_other_settings_on_a_begun_run_are_refused(tmp_path):
    cfg, _, _ = _shard_run(tmp_path, "settings")
    with pytest.raises(ConfigError, match="changed: seed"):
        _run(_config(tmp_path, "settings", "shards.seed=5"))
    assert _run(cfg)["shards"]["rows_out"] > 0  # the same settings: a finished run is skipped


def test_lvd_shards_command(tmp_path, capsys):
    cfg = _config(tmp_path, "cli")
    table, expected = write_sources(cfg.run_dir.root)
    split_sources(cfg.run_dir.root / "chosen", table, 2)
    chosen = str(cfg.run_dir.root / "chosen")
    settings = [f"runs_dir={tmp_path}", "shards.format=parquet", "shards.samples_per_shard=4"]
    code = main(["shards", "--sources", chosen, "--run", "cli", *settings])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["shards"]["format"] == "parquet" and stats["shards"]["rows_out"] == len(expected)
    assert len(list((cfg.run_dir.root / "shards").glob("shard-*.parquet"))) == 4


def test_ray_workers_write_the_same_shards(ray_runtime, tar_run, tmp_path):
    cfg = _config(tmp_path, "tars")  # the local run's name: the same sources, the same bytes
    table, _ = write_sources(cfg.run_dir.root)
    retrieved_images(cfg.run_dir.root, table)
    with get_engine("ray", num_workers=2) as engine:
        stats = run_shards(cfg, engine)
    assert stats["shard_samples"]["engine"] == "ray"
    assert _digests(cfg.run_dir.root / "shards") == _digests(tar_run[0].run_dir.root / "shards")


def test_a_relative_runs_dir_reads_every_source(tmp_path, monkeypatch):
    """`lvd demo` runs with runs_dir=runs, relative to the working folder: the sources' lineage,
    resolved against that relative run root, must still name files that exist (it once came
    out as runs/<name>/runs/<name>/... and every pool image was dropped as unreadable)."""
    monkeypatch.chdir(tmp_path)
    cfg, stats, expected = _shard_run(Path("runs"), "relative")
    stats = stats["shards"]
    assert stats.get("dropped_read_error", 0) == 0
    assert stats["rows_out"] == len(expected)
    shards = tmp_path / "runs" / "relative" / "shards"
    assert sorted(_tar_order(shards)) == sorted(expected)
