"""Dedup ground truth of the synthetic web, shared by the ingest, demo and Ray job tests.

The expected result is computed from the synthetic web's ground truth (``pool.parquet``): a planted
byte copy, JPEG re-encode (q40, q70) or 0.8 resize is always caught by the perceptual hash; crops,
flips and pads never are; 0.6 resizes, colour jitter and text overlays are caught for some images,
which are named per web (measured once: the synthetic web is deterministic). Each group of an
original and its caught copies keeps its smallest key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.rundir import RunDir

# Copies a 64-bit DCT hash within 6 bits catches whatever the image.
ALWAYS_CAUGHT = ("exact", "jpeg_q40", "jpeg_q70", "resize_0.8")
# Copies of the session's small web (tests/conftest.py SMALL_WEB) caught although their transform
# is not in ALWAYS_CAUGHT: two colour jitters (distance 0), two 0.6 resizes, one text overlay.
SMALL_WEB_ALSO_CAUGHT = frozenset(
    {"pool-000018", "pool-000027", "pool-000086", "pool-000103", "pool-000141"}
)


@dataclass(frozen=True)
class DedupExpectation:
    exact_dropped: int  # rows of dedup_exact marked exact_duplicate
    near_dropped: int  # rows of dedup_near marked near_duplicate
    unique_keys: frozenset[str]  # the keys of unique_images


def expected_dedup(
    pool: pa.Table, synth_keys: dict[str, str], also_caught: frozenset[str]
) -> DedupExpectation:
    """What dedup must leave of the ``ok`` images ``synth_keys`` (run key -> synthetic key).

    Synthetic keys outside the pool (bad files that decode) are their own group.
    """
    truth = {row["key"]: row for row in pool.to_pylist()}
    unknown = also_caught - truth.keys()
    if unknown:
        raise ValueError(f"also_caught names keys outside the pool: {sorted(unknown)}")

    def group(synth: str) -> str:
        row = truth.get(synth)
        if row is None or row["kind"] not in ("near_duplicate", "exact_duplicate"):
            return synth
        caught = row["transform"] in ALWAYS_CAUGHT or synth in also_caught
        return row["source_key"] if caught else synth

    members: dict[str, list[str]] = {}
    for key, synth in synth_keys.items():
        members.setdefault(group(synth), []).append(key)
    unique = frozenset(min(keys) for keys in members.values())
    exact = sum(truth.get(s, {}).get("kind") == "exact_duplicate" for s in synth_keys.values())
    return DedupExpectation(exact, len(synth_keys) - len(unique) - exact, unique)


def ok_synth_keys(run: RunDir) -> dict[str, str]:
    """Run key -> synthetic key of the ``ok`` ingest records (a served file's stem is its key)."""
    table = pq.read_table(run.stage("ingest").outputs(), columns=["key", "url", "status"])
    return {
        row["key"]: Path(row["url"]).stem if row["url"] else row["key"]
        for row in table.to_pylist()
        if row["status"] == "ok"
    }


def check_dedup(run: RunDir, expected: DedupExpectation) -> None:
    """The run's dedup stats and kept keys are exactly the expected ones."""
    exact = run.stage("dedup_exact").read_stats()
    near = run.stage("dedup_near").read_stats()
    assert exact.get("reason_exact_duplicate", 0) == expected.exact_dropped
    assert near.get("reason_near_duplicate", 0) == expected.near_dropped
    unique = pq.read_table(run.stage("unique_images").outputs(), columns=["key"])
    keys = unique.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == run.stage("unique_images").read_stats()["rows_out"]
    missing, extra = expected.unique_keys - set(keys), set(keys) - expected.unique_keys
    assert not missing and not extra, f"kept keys differ: missing {missing}, extra {extra}"
