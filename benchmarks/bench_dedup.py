"""Copy-detection pair search at scale: recall, false pairs, wall time and peak memory.

``N`` random 512-d unit vectors with ``--groups`` planted duplicate groups of 2-5 members, each
member ``normalise(base + s * noise)`` with ``s`` chosen per group so members meet at cosine
~U(0.8, 0.95) (issue 10's benchmark). The in-process path (:func:`curation.index.knn.knn_pairs`,
IVF above ``--exact-limit`` vectors) runs once; then:

* planted recall: planted pairs found / planted pairs;
* recall against exact search: for ``--queries`` sampled vectors (half planted members, half
  random), the pairs an exact flat search over all vectors finds for them, and the share of those
  the in-process path found;
* false pairs: pairs found that were not planted (random 512-d pairs sit near cosine 0, so any
  pair above 0.6 that was not planted is a search error);
* wall time of the search, peak resident memory of the process (VmHWM, vectors included).

Usage: ``python benchmarks/bench_dedup.py [--n 1000000] [--nlist 1024] [--nprobe 16] [--json]``.
:func:`make_planted_vectors` is importable for other engines' runs (Spark, Ray) on the same data.

``--spark``: the same vectors also go through the Spark job (with ``--method``: after the
in-process method, its recall against the planted pairs) (:func:`run_spark_dedup` on
``--spark-master``, default ``local[2]``; written as EMBEDDING shards first): its wall time, the
peak resident memory of the whole process tree (driver, JVM, Python workers; sampled), and its pair
recall against the in-process pairs, side by side with the in-process figures.

``--recall-sweep``: pair recall of the partitioned search (:func:`partitioned_pairs`, what each
Spark partition runs) against exact search for ``--sweep-replicas`` and ``--sweep-partitions`` on
the planted data and on spread data (clusters whose pairs spread across the threshold).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_planted_vectors(
    n: int,
    groups: int = 10_000,
    seed: int = 0,
    *,
    dim: int = 512,
    low: float = 0.8,
    high: float = 0.95,
    sizes: tuple[int, int] = (2, 5),
) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, planted_pairs)``: ``(n, dim)`` float32 unit rows, and the ``(m, 2)`` int64 row
    pairs ``i < j`` of every two members of a planted group (groups sit at random rows)."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):  # in blocks: no float64 copy of the whole matrix
        block = rng.standard_normal((min(65_536, n - start), dim), dtype=np.float32)
        vectors[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    group_sizes = rng.integers(sizes[0], sizes[1] + 1, groups)
    if group_sizes.sum() > n:
        raise ValueError(f"{group_sizes.sum()} planted members do not fit in {n} vectors")
    rows = rng.permutation(n)[: group_sizes.sum()]
    # Members normalise(base + s z) with z ~ N(0, I/dim) meet at cosine ~ 1 / (1 + s^2).
    scale = np.sqrt(1.0 / rng.uniform(low, high, groups) - 1.0)
    bases = rng.standard_normal((groups, dim))
    bases /= np.linalg.norm(bases, axis=1, keepdims=True)
    member_group = np.repeat(np.arange(groups), group_sizes)
    noise = rng.standard_normal((len(rows), dim)) / np.sqrt(dim)
    members = bases[member_group] + scale[member_group, None] * noise
    vectors[rows] = members / np.linalg.norm(members, axis=1, keepdims=True)
    pairs = []
    offsets = np.concatenate([[0], np.cumsum(group_sizes)])
    for g in range(groups):
        member_rows = np.sort(rows[offsets[g] : offsets[g + 1]])
        a, b = np.triu_indices(len(member_rows), k=1)
        pairs.append(np.stack([member_rows[a], member_rows[b]], axis=1))
    return vectors, np.concatenate(pairs).astype(np.int64)


def peak_memory_gib() -> float:
    """VmHWM (peak resident set) of this process, in GiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def exact_pairs_of_queries(
    vectors: np.ndarray, queries: np.ndarray, k: int, threshold: float
) -> set[tuple[int, int]]:
    """Pairs (min, max) of each query row with its exact k nearest neighbours above threshold."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    sims, labels = index.search(vectors[queries], k + 1)
    found = set()
    for q, row_sims, row_labels in zip(queries.tolist(), sims, labels):
        kept = [(s, j) for s, j in zip(row_sims, row_labels) if j != q and j >= 0][:k]
        found.update((min(q, j), max(q, j)) for s, j in kept if s > np.float32(threshold))
    return found


def tree_rss_gib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (from /proc), in GiB."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in tree) / 2**30


class PeakTreeMemory:
    """Samples :func:`tree_rss_gib` of this process every ``interval`` seconds while in use."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_gib(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakTreeMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_embedding_shards(vectors: np.ndarray, folder: Path, shards: int = 16) -> list[str]:
    """EMBEDDING shards of ``vectors`` (keys ``v<row>``, zero-padded so key order is row order)."""
    import pyarrow as pa

    from curation.io import write_parquet_atomic
    from schemas import embedding_schema

    schema = embedding_schema(vectors.shape[1])
    keys = [f"v{r:08d}" for r in range(len(vectors))]
    for s, rows in enumerate(np.array_split(np.arange(len(vectors)), shards)):
        flat = pa.array(vectors[rows].reshape(-1), pa.float32())
        table = pa.table(
            {
                "key": [keys[r] for r in rows],
                "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
                "model_id": ["bench"] * len(rows),
                "status": ["ok"] * len(rows),
                "error_message": pa.nulls(len(rows), pa.string()),
            },
            schema=schema,
        )
        write_parquet_atomic(folder / f"part-{s:05d}.parquet", table, schema)
    return keys


def run_spark(
    args: argparse.Namespace, vectors: np.ndarray, in_process: set, reference: str = "in_process"
) -> dict:
    """The Spark job over ``vectors``: wall time, peak tree memory, recall vs ``in_process``
    (the pairs ``reference`` names: the in-process search's, or the planted ones)."""
    import pyarrow.parquet as pq

    from curation.engines.spark import get_spark_session
    from curation.engines.spark_dedup import SparkDedupConfig, run_spark_dedup

    with tempfile.TemporaryDirectory(prefix="bench_dedup_spark_") as tmp:
        root = Path(tmp)
        write_embedding_shards(vectors, root / "embed")
        config = SparkDedupConfig(
            k=args.k,
            threshold=args.threshold,
            score="cosine",
            replicas=args.replicas,
            n_centroids=args.partitions,
        )
        conf = {"spark.driver.memory": args.spark_driver_memory}
        with PeakTreeMemory() as memory:
            started = time.perf_counter()
            spark = get_spark_session(args.spark_master, app_name="bench-dedup", conf=conf)
            spark.sparkContext.setLogLevel("WARN")
            session_seconds = time.perf_counter() - started
            stats = run_spark_dedup(spark, [root / "embed"], root / "out", config)
            seconds = time.perf_counter() - started
        edges = pq.read_table(root / "out" / "edges", columns=["src_key", "dst_key"])
        spark.stop()
    rows = lambda column: np.array([int(k[1:]) for k in column.to_pylist()])  # noqa: E731
    found = set(zip(rows(edges["src_key"]).tolist(), rows(edges["dst_key"]).tolist()))
    return {
        "master": args.spark_master,
        "replicas": args.replicas,
        "centroids": stats["centroids"],
        "pairs_found": len(found),
        f"recall_vs_{reference}": round(len(found & in_process) / max(1, len(in_process)), 4),
        f"pairs_not_{reference}": len(found - in_process),
        "kept": stats["kept"],
        "session_start_seconds": round(session_seconds, 1),
        "wall_seconds": round(seconds, 1),
        "peak_memory_gib_process_tree": round(memory.peak, 2),
    }


def make_spread_vectors(n: int, seed: int = 0, dim: int = 128, group: int = 20) -> np.ndarray:
    """Clusters of ``group`` points whose similarities spread across the 0.6 threshold: member
    ``normalise(center + s z)`` with its own ``s`` so its cosine to the center is ~U(0.55, 0.95)
    (pairs inside a cluster from ~0.3 to ~0.9; random pairs near 0)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n // group + 1, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    owner = np.arange(n) // group
    cosine = rng.uniform(0.55, 0.95, n)
    scale = np.sqrt(1 / cosine**2 - 1)  # |z| ~ 1: cos(member, center) = 1 / sqrt(1 + s^2)
    z = rng.standard_normal((n, dim)) / np.sqrt(dim)
    x = centers[owner] + scale[:, None] * z
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_sweep(args: argparse.Namespace) -> list[dict]:
    """Pair recall of the partitioned search against exact search, per data set, partitions and
    replicas (coarse centroids trained on a 100k sample, as the Spark job does)."""
    from curation.index.knn import knn_pairs
    from curation.index.partition import partitioned_pairs, train_coarse_centroids

    datasets = {
        f"planted_{args.dim}d": make_planted_vectors(
            args.sweep_n, args.sweep_n // 100, args.seed, dim=args.dim
        )[0],
        "spread_128d": make_spread_vectors(args.sweep_n, args.seed),
    }
    rows = []
    for name, x in datasets.items():
        i, j, _ = knn_pairs(x, args.k, args.threshold, index="flat")
        exact = set(zip(i.tolist(), j.tolist()))
        keys = [f"{r:08d}" for r in range(len(x))]
        rng = np.random.default_rng(args.seed)
        sample = x[rng.choice(len(x), min(len(x), 100_000), replace=False)]
        for partitions in args.sweep_partitions:
            centroids = train_coarse_centroids(sample, partitions, seed=args.seed)
            for replicas in args.sweep_replicas:
                started = time.perf_counter()
                edges = partitioned_pairs(keys, x, centroids, replicas, args.k, args.threshold)
                found = set(
                    zip(
                        [int(k) for k in edges["src_key"].to_pylist()],
                        [int(k) for k in edges["dst_key"].to_pylist()],
                    )
                )
                rows.append(
                    {
                        "data": name,
                        "n": len(x),
                        "partitions": partitions,
                        "replicas": replicas,
                        "exact_pairs": len(exact),
                        "recall": round(len(found & exact) / max(1, len(exact)), 4),
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def run(args: argparse.Namespace) -> dict:
    from curation.index.knn import knn_pairs

    started = time.perf_counter()
    vectors, planted = make_planted_vectors(args.n, args.groups, args.seed, dim=args.dim)
    generated = time.perf_counter() - started

    started = time.perf_counter()
    i, j, _ = knn_pairs(
        vectors,
        args.k,
        args.threshold,
        index=args.index,
        exact_limit=args.exact_limit,
        nlist=args.nlist,
        nprobe=args.nprobe,
        pq_bytes=args.pq_bytes,
        train_size=args.train_size,
        seed=args.seed,
    )
    search_seconds = time.perf_counter() - started
    search_peak = peak_memory_gib()

    n = len(vectors)
    found_codes = i * n + j
    planted_codes = planted[:, 0] * n + planted[:, 1]
    planted_found = np.isin(planted_codes, found_codes)
    false_pairs = int((~np.isin(found_codes, planted_codes)).sum())

    rng = np.random.default_rng(args.seed + 1)
    half = args.queries // 2
    queries = np.unique(
        np.concatenate(
            [
                rng.choice(np.unique(planted), half, replace=False),
                rng.choice(n, half, replace=False),
            ]
        )
    )
    started = time.perf_counter()
    exact = exact_pairs_of_queries(vectors, queries, args.k, args.threshold)
    exact_seconds = time.perf_counter() - started
    found = set(zip(i.tolist(), j.tolist()))
    spark = run_spark(args, vectors, found) if args.spark else None
    figures = {
        "n": n,
        "dim": args.dim,
        "planted_groups": args.groups,
        "planted_pairs": len(planted),
        "settings": {
            k: getattr(args, k)
            for k in ("index", "exact_limit", "nlist", "nprobe", "pq_bytes", "train_size", "k")
        }
        | {"threshold": args.threshold},
        "pairs_found": len(i),
        "planted_recall": round(float(planted_found.mean()), 4),
        "queries_checked": len(queries),
        "exact_pairs_of_queries": len(exact),
        "recall_vs_exact": round(len(exact & found) / max(1, len(exact)), 4),
        "false_pairs": false_pairs,
        "generate_seconds": round(generated, 1),
        "search_seconds": round(search_seconds, 1),
        "exact_check_seconds": round(exact_seconds, 1),
        "peak_memory_gib_after_search": round(search_peak, 2),
        "peak_memory_gib": round(peak_memory_gib(), 2),
    }
    if spark is not None:
        figures["spark"] = spark
    return figures


def reset_peak_memory() -> bool:
    """Restart VmHWM from the current resident set (Linux ``clear_refs`` 5), so that the peak of
    each method is its own; False where the kernel does not allow it (peaks then accumulate)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def parse_method(text: str) -> tuple[str, dict]:
    """``knn``, ``join`` or ``both``, then optional ``:key=value,...`` settings of
    :func:`curation.index.ivf_join.ivf_join_pairs` (ints, floats or ``none``)."""
    name, _, settings = text.partition(":")
    if name not in ("knn", "join", "both"):
        raise argparse.ArgumentTypeError(f"method must be knn, join or both, got {name!r}")
    parsed = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        parsed[key] = None if value == "none" else float(value) if "." in value else int(value)
    return name, parsed


def method_figures(search, vectors, planted, exact: set) -> dict:
    """Run one pair search and measure it: pairs, recall vs planted and vs exact, time, peak."""
    own_peak = reset_peak_memory()
    started = time.perf_counter()
    i, j, _ = search(vectors)
    seconds = time.perf_counter() - started
    n = len(vectors)
    found_codes = i * n + j
    planted_codes = planted[:, 0] * n + planted[:, 1]
    found = set(zip(i.tolist(), j.tolist()))
    return {
        "pairs_found": len(i),
        "planted_recall": round(float(np.isin(planted_codes, found_codes).mean()), 4),
        "recall_vs_exact": round(len(exact & found) / max(1, len(exact)), 4),
        "false_pairs": int((~np.isin(found_codes, planted_codes)).sum()),
        "search_seconds": round(seconds, 1),
        "peak_memory_gib" + ("" if own_peak else "_cumulative"): round(peak_memory_gib(), 2),
    }


def compare_methods(args: argparse.Namespace) -> dict:
    """The IVF matrix-multiply join (:func:`curation.index.ivf_join.ivf_join_pairs`) and/or the
    faiss path (:func:`curation.index.knn.knn_pairs`) on the same vectors, against one exact
    check; peaks include the vectors themselves."""
    from curation.index.ivf_join import ivf_join_pairs
    from curation.index.knn import knn_pairs

    method, settings = args.method
    started = time.perf_counter()
    vectors, planted = make_planted_vectors(args.n, args.groups, args.seed, dim=args.dim)
    figures = {"n": len(vectors), "dim": args.dim, "planted_pairs": len(planted)}
    figures["generate_seconds"] = round(time.perf_counter() - started, 1)
    rng = np.random.default_rng(args.seed + 1)
    half = args.queries // 2
    queries = np.unique(
        np.concatenate(
            [rng.choice(np.unique(planted), half, replace=False), rng.choice(len(vectors), half)]
        )
    )
    started = time.perf_counter()
    exact = exact_pairs_of_queries(vectors, queries, args.k, args.threshold)
    figures["exact_check"] = {
        "queries": len(queries),
        "pairs": len(exact),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if method in ("join", "both"):
        join_settings = {"nprobe": args.nprobe, "seed": args.seed} | settings
        figures["join"] = {"settings": join_settings} | method_figures(
            lambda x: ivf_join_pairs(x, args.k, args.threshold, **join_settings),
            vectors,
            planted,
            exact,
        )
    if method in ("knn", "both"):
        knn_settings = {
            key: getattr(args, key)
            for key in ("index", "exact_limit", "nlist", "nprobe", "pq_bytes", "train_size", "seed")
        }
        figures["knn"] = {"settings": knn_settings} | method_figures(
            lambda x: knn_pairs(x, args.k, args.threshold, **knn_settings), vectors, planted, exact
        )
    if args.spark:  # the same vectors through the Spark job, its recall against the planted pairs
        if args.replicas is None:
            from curation.engines.spark_dedup import SparkDedupConfig

            args.replicas = SparkDedupConfig().replicas
        truth = set(zip(planted[:, 0].tolist(), planted[:, 1].tolist()))
        figures["spark"] = run_spark(args, vectors, truth, reference="planted")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "ivfpq"])
    parser.add_argument("--exact-limit", type=int, default=200_000)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--pq-bytes", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--spark", action="store_true", help="also run the Spark job")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--spark-driver-memory", default="4g")
    parser.add_argument("--replicas", type=int, default=None, help="Spark: default the job's")
    parser.add_argument("--partitions", type=int, default=None, help="Spark: default sqrt(n)")
    parser.add_argument(
        "--method",
        type=parse_method,
        default=None,
        help="knn | join | both[:key=value,...]: compare the IVF join with knn_pairs instead",
    )
    parser.add_argument("--recall-sweep", action="store_true", help="partitioned recall only")
    parser.add_argument("--sweep-n", type=int, default=100_000)
    parser.add_argument("--sweep-partitions", type=int, nargs="+", default=[64, 316])
    parser.add_argument("--sweep-replicas", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    if args.recall_sweep:
        recall_sweep(args)
        return
    if args.method is not None:
        figures = compare_methods(args)
        print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))
        return
    if args.replicas is None:
        from curation.engines.spark_dedup import SparkDedupConfig

        args.replicas = SparkDedupConfig().replicas
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
        return
    spark = figures.pop("spark", None)
    for name, value in figures.items():
        print(f"{name:>30}: {value}")
    if spark is not None:
        print(f"{'spark (same vectors)':>30}:")
        for name, value in spark.items():
            print(f"{name:>30}: {value}")


if __name__ == "__main__":
    main()
