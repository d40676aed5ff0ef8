"""URL lists in every format, host round-robin, the frozen URL plan and its keys."""

from __future__ import annotations

import gzip
import json
import math

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from curation.download.hosts import round_robin_order, url_host
from curation.download.network_guard import NetworkPolicy
from curation.download.plan import (
    DownloadResumeError,
    build_plan,
    check_signature,
    load_plan,
    row_index,
    sample_key,
)
from curation.download.url_lists import read_url_list
from curation.safe_names import UnsafeNameError, check_component, member_name
from schemas import DOWNLOADED_SAMPLE_SCHEMA, validate

ROWS = [
    {"url": "http://a.example/1.jpg", "caption": "one", "license": "cc0", "status": "x"},
    {"url": "http://a.example/2.jpg", "caption": "two", "license": "cc-by", "status": "y"},
    {"url": "http://b.example/3.jpg", "caption": None, "license": "cc0", "status": "z"},
]


def _write(path, rows, fmt):
    table = pa.Table.from_pylist(rows)
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt in ("csv", "tsv"):
        options = pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",")
        pacsv.write_csv(table, path, options)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl", "csv.gz", "jsonl.gz"])
def test_every_url_list_format_reads_the_same(tmp_path, fmt):
    base = fmt.removesuffix(".gz")
    path = tmp_path / f"urls.{base}"
    _write(path, ROWS, base)
    if fmt.endswith(".gz"):
        gz = tmp_path / f"urls.{fmt}"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        path = gz
    table = read_url_list(path)
    assert table.column("url").to_pylist() == [r["url"] for r in ROWS]
    assert table.column("caption").to_pylist()[:2] == ["one", "two"]
    assert table.column("license").to_pylist() == ["cc0", "cc-by", "cc0"]
    # img2dataset reserves "status": the user's column survives under another name.
    assert table.column("extra_status").to_pylist() == ["x", "y", "z"]


def test_url_list_without_the_url_column_is_a_schema_error(tmp_path):
    path = tmp_path / "urls.jsonl"
    path.write_text('{"link": "http://a.example/1.jpg"}\n')
    with pytest.raises(ValueError, match="no 'url' column"):
        read_url_list(path)
    assert read_url_list(path, url_col="link").column("url").to_pylist() == [
        "http://a.example/1.jpg"
    ]


def test_round_robin_interleaves_hosts_and_keeps_order_within_a_host():
    hosts = ["a", "a", "a", "b", "b", "c", "a"]
    order = round_robin_order(hosts).tolist()
    assert [hosts[i] for i in order] == ["a", "b", "c", "a", "b", "a", "a"]
    a_rows = [i for i in order if hosts[i] == "a"]
    assert a_rows == sorted(a_rows)
    assert sorted(order) == list(range(len(hosts)))
    assert url_host("HTTP://Example.ORG:80/x") == "example.org" and url_host("::nonsense") == ""


def test_sample_keys_match_img2dataset(monkeypatch):
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset.downloader import compute_key

    for per_shard in (1, 7, 10, 20, 10_000):
        digits = math.ceil(math.log10(per_shard))
        for shard, index in ((0, 0), (3, per_shard - 1), (12345, 0)):
            assert sample_key(shard, index, per_shard) == compute_key(index, shard, digits, 5)


def _table(urls):
    return pa.table({"url": urls, "caption": [None] * len(urls), "tag": list(range(len(urls)))})


def test_plan_shards_refuses_and_freezes(tmp_path):
    urls = [f"http://127.0.0.1:9/{i}.jpg" for i in range(5)] + ["file:///etc/passwd"]
    plan = build_plan(
        tmp_path / "_urls",
        _table(urls),
        samples_per_shard=2,
        round_robin=True,
        policy=NetworkPolicy(allow_private_networks=True),
        signature={"a": 1},
    )
    assert (plan.n_fetch_shards, plan.n_rows, plan.n_refused) == (3, 6, 1)
    assert plan.extra_columns == ("tag",)
    fetched = [pq.read_table(plan.fetch_file(i)).column("url").to_pylist() for i in range(3)]
    assert sum(fetched, []) == urls[:5]
    blocked = pq.read_table(plan.blocked_file)
    validate(blocked, DOWNLOADED_SAMPLE_SCHEMA)
    # Refused rows get keys after the fetched shards: they can never collide.
    assert blocked.column("key").to_pylist() == [sample_key(3, 0, 2)]
    assert load_plan(tmp_path / "_urls") == plan
    check_signature(tmp_path / "_urls", {"a": 1})
    with pytest.raises(DownloadResumeError, match="a: was 1, now 2"):
        check_signature(tmp_path / "_urls", {"a": 2})


def test_default_policy_plan_refuses_every_private_url(tmp_path):
    urls = ["http://127.0.0.1/a.jpg", "http://10.2.3.4/b.jpg", "http://169.254.169.254/c"]
    plan = build_plan(
        tmp_path / "_urls",
        _table(urls),
        samples_per_shard=10,
        round_robin=False,
        policy=NetworkPolicy(),
        signature={},
    )
    assert plan.n_fetch_shards == 0
    statuses = pq.read_table(plan.blocked_file).column("status").to_pylist()
    assert statuses == ["blocked_address"] * 3


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".hidden", "a\\b", "", "x\x00"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnsafeNameError):
        check_component(name, "key")
    with pytest.raises(UnsafeNameError):
        member_name(name, "jpg")
    assert member_name("000012", "jpg") == "000012.jpg"


def test_row_index_inverts_sample_key():
    for per_shard in (1, 9, 10, 250):
        for shard in (0, 4, 321):
            for index in {0, per_shard // 2, per_shard - 1}:
                assert row_index(sample_key(shard, index, per_shard), per_shard) == index


def test_img2dataset_arguments_map_our_settings():
    from curation.config import ConfigError
    from curation.download.config import DownloadConfig
    from curation.download.img2dataset_job import img2dataset_arguments

    arguments = img2dataset_arguments(DownloadConfig(processes_count=3), ["license"])
    assert arguments["disable_all_reencoding"] and arguments["resize_mode"] == "no"
    assert arguments["incremental_mode"] == "incremental" and arguments["compute_hash"] == "sha256"
    assert arguments["disallowed_header_directives"] == [
        "noai",
        "noimageai",
        "noindex",
        "noimageindex",
    ]
    assert arguments["save_additional_columns"] == ["license"] and arguments["processes_count"] == 3
    resized = img2dataset_arguments(DownloadConfig(resize_mode="keep_ratio", image_size=128), [])
    assert not resized["disable_all_reencoding"] and resized["image_size"] == 128
    # A list column named "sha256" is reserved, so it travels as "extra_sha256".
    verified = img2dataset_arguments(
        DownloadConfig(verify_sha256_col="sha256"), ["extra_sha256", "license"]
    )
    assert verified["verify_hash"] == ["extra_sha256", "sha256"]
    assert verified["save_additional_columns"] == ["license"]
    with pytest.raises(ConfigError, match="verify_sha256_col"):
        img2dataset_arguments(DownloadConfig(verify_sha256_col="digest"), [])
    # Enumerated settings are refused when the config is built, naming the accepted values.
    with pytest.raises(ValueError, match="output_format must be one of 'webdataset', 'parquet'"):
        DownloadConfig(output_format="tfrecord")
