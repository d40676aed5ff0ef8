"""Compare the stage outputs of two `lvd demo` runs row for row (issue "The house in order").

    lvd demo runs_dir=/tmp/before demo.descriptor.time_budget_s=null demo.descriptor.max_steps=30 \
        demo.descriptor.autocast=fp32            # on the old commit
    lvd demo runs_dir=/tmp/after ...             # the same on the new one
    python benchmarks/compare_demo_runs.py /tmp/before/demo /tmp/after/demo

Maps the download layout rename (samples/ -> top level, encoded/ -> _encoded/, raw/ -> _raw/),
ignores what differs between any two runs (server ports, run folder, tar offsets: img2dataset's
threads write members in any order), compares embeddings to 1e-5 and lists new columns.
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

a, b = Path(sys.argv[1]), Path(sys.argv[2])
PAIRS = [
    ("download/samples/part-00000.parquet", "download/part-00000.parquet"),
    ("download/samples/blocked.parquet", "download/blocked.parquet"),
    ("download/encoded/part-00000.parquet", "download/_encoded/part-00000.parquet"),
] + [
    (f"{s}/part-00000.parquet",) * 2
    for s in ("ingest", "dedup_exact", "phash", "dedup_near", "unique_images", "embed_sscd")
]


def norm(t):
    for c in ("url", "source_file"):
        if c in t.column_names:
            col = pc.replace_substring_regex(t[c], r"127\.0\.0\.1:\d+", "HOST")
            col = pc.replace_substring_regex(col, r"^.*/demo/", "RUN/")
            col = pc.replace_substring(col, "/download/_raw/", "/download/raw/")
            t = t.set_column(t.column_names.index(c), c, col)
    return t


ok = True
for x, y in PAIRS:
    ta, tb = pq.read_table(a / x), pq.read_table(b / y)
    cols = [c for c in ta.column_names if c in tb.column_names and c not in ("source_offset",)]
    extra = sorted(set(tb.column_names) - set(ta.column_names))
    ta, tb = norm(ta.select(cols)).sort_by("key"), norm(tb.select(cols)).sort_by("key")
    if "embedding" in cols:
        ea = ta["embedding"].combine_chunks().flatten().to_numpy()
        eb = tb["embedding"].combine_chunks().flatten().to_numpy()
        same = ta.drop(["embedding"]).equals(tb.drop(["embedding"])) and np.allclose(
            ea, eb, atol=1e-5
        )
    else:
        same = ta.equals(tb)
    ok &= same
    print(
        f"{x} vs {y}: rows {ta.num_rows}/{tb.num_rows} {'same' if same else 'DIFFERENT'}"
        + (f" (new columns: {extra})" if extra else "")
    )
print("IDENTICAL" if ok else "DIFFERENCES")
