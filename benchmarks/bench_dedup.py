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
"""

from __future__ import annotations

import argparse
import json
import time

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
    return {
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
    args = parser.parse_args()
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:>30}: {value}")


if __name__ == "__main__":
    main()
