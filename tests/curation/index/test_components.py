"""Connected components, the representative policy and the chaining guard."""

from __future__ import annotations

import numpy as np
import pytest

from curation.index.components import (
    choose_representatives,
    component_stats,
    components_table,
    connected_components,
    greedy_star,
    guarded_components,
    guarded_hamming_components,
    labels_of,
    largest_components,
    priority_rank,
    size_histogram,
)
from schemas import DEDUP_COMPONENT_SCHEMA, validate


def groups(labels) -> set[frozenset[int]]:
    labels = np.asarray(labels)
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)}


def test_connected_components_are_transitive_and_numbered_by_smallest_member():
    labels = connected_components(7, [5, 1, 3], [6, 3, 4])
    assert groups(labels) == {
        frozenset({0}),
        frozenset({1, 3, 4}),
        frozenset({2}),
        frozenset({5, 6}),
    }
    assert labels.tolist() == [0, 1, 2, 1, 1, 3, 3]
    with pytest.raises(ValueError, match="endpoints"):
        connected_components(3, [0], [3])


def test_representative_is_the_largest_image_then_the_smallest_key():
    keys = ["d", "b", "a", "c", "e"]
    pixels = [100, 400, 400, None, 50]
    rank = priority_rank(pixels, keys)
    # 400 px: "a" before "b"; then 100 ("d"), 50 ("e"); unknown size last.
    assert np.argsort(rank).tolist() == [2, 1, 0, 4, 3]
    labels = np.array([0, 0, 0, 1, 1])
    assert choose_representatives(labels, rank).tolist() == [2, 2, 2, 4, 4]
    # Equal sizes everywhere: the smallest key wins.
    assert choose_representatives(labels, priority_rank([7] * 5, keys)).tolist() == [2, 2, 2, 3, 3]


def test_guard_splits_a_chain_that_connected_components_merge():
    # A~B and B~C above the threshold, A~C below it (absent): a chain through B.
    a, b, c = 0, 1, 2
    i, j, sim = np.array([a, b, a]), np.array([b, c, c]), np.array([0.9, 0.9, 0.3])
    threshold = 0.6
    keep = sim > threshold
    assert groups(connected_components(3, i[keep], j[keep])) == {frozenset({a, b, c})}
    # A first (largest image): A takes only its direct neighbour B; C stays apart.
    rep = guarded_components(3, i, j, sim, rank=np.array([0, 1, 2]), threshold=threshold)
    assert rep.tolist() == [a, a, c]
    # B first: A and C are both within the threshold of B, so one group around B is right.
    rep = guarded_components(3, i, j, sim, rank=np.array([1, 0, 2]), threshold=threshold)
    assert rep.tolist() == [b, b, b]


def test_hub_does_not_merge_distinct_pictures_through_it():
    # Eight pictures (0-7) each with one copy (8-15), all touching one hub (16), as a meme
    # template would; the hub is small (ranked last) so every picture keeps its own group.
    pictures, copies, hub = np.arange(8), np.arange(8, 16), 16
    i = np.concatenate([pictures, pictures])
    j = np.concatenate([copies, np.full(8, hub)])
    distance = np.concatenate([np.full(8, 2), np.full(8, 5)])
    rank = np.arange(17)
    assert len(np.unique(connected_components(17, i, j))) == 1
    rep = guarded_hamming_components(17, i, j, distance, rank, max_distance=6)
    assert rep[:16].tolist() == list(range(8)) * 2 and rep[hub] == 0
    # Edges over the distance do not count.
    rep = guarded_hamming_components(17, i, j, distance, rank, max_distance=4)
    assert rep[hub] == hub


@pytest.mark.parametrize("seed", range(6))
def test_greedy_star_guarantees_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = 60
    m = int(rng.integers(0, 200))
    i, j = rng.integers(0, n, m), rng.integers(0, n, m)
    rank = rng.permutation(n)
    rep = greedy_star(n, i, j, rank)
    adjacent = np.zeros((n, n), dtype=bool)
    adjacent[i, j] = adjacent[j, i] = True
    np.fill_diagonal(adjacent, False)
    reps = np.flatnonzero(rep == np.arange(n))
    assert np.all(rep[reps] == reps)  # a representative represents itself
    for node in range(n):
        if rep[node] != node:
            assert adjacent[node, rep[node]]  # 1. a direct edge to its representative
            assert rank[rep[node]] < rank[node]  # 3. the representative ranks first
            # 4. the best-ranked representative among its neighbours
            neighbour_reps = [r for r in reps if adjacent[node, r]]
            assert rep[node] == min(neighbour_reps, key=lambda r: rank[r])
    assert not adjacent[np.ix_(reps, reps)].any()  # 2. representatives are never adjacent
    # Each guarded group lies inside one connected component, and guarding each component on
    # its own gives the same groups.
    labels = connected_components(n, i, j)
    assert np.all(labels[rep] == labels)
    for component in np.unique(labels):
        members = np.flatnonzero(labels == component)
        inside = np.isin(i, members) & np.isin(j, members)
        local = {node: k for k, node in enumerate(members)}
        sub = greedy_star(
            len(members),
            [local[v] for v in i[inside]],
            [local[v] for v in j[inside]],
            rank[members],
        )
        assert members[sub].tolist() == rep[members].tolist()


def test_labels_histogram_and_largest_components():
    rep = np.array([0, 0, 2, 0, 2, 5, 6, 6])
    labels = labels_of(rep)
    assert labels.tolist() == [0, 0, 1, 0, 1, 2, 3, 3]
    assert size_histogram(labels) == {1: 1, 2: 2, 3: 1}
    largest = largest_components(labels, top=2)
    assert [m.tolist() for m in largest] == [[0, 1, 3], [2, 4]]
    assert largest_components(np.arange(4), top=3) == []  # singletons are not groups
    stats = component_stats(labels, list("abcdefgh"), top=1)
    assert stats == {
        "images": 8,
        "components": 4,
        "images_in_groups": 7,
        "size_histogram": {"1": 1, "2": 2, "3": 1},
        "largest": [["a", "b", "d"]],
    }


def test_components_table_keeps_representatives_and_drops_contaminated_components():
    keys = ["k0", "k1", "k2", "k3", "k4"]
    rep = np.array([0, 0, 2, 2, 4])
    table = components_table(
        keys, labels_of(rep), rep, contaminated=[False, False, False, True, False]
    )
    validate(table, DEDUP_COMPONENT_SCHEMA)
    rows = {r["key"]: r for r in table.to_pylist()}
    assert [k for k, r in rows.items() if r["keep"]] == ["k0", "k4"]
    assert rows["k1"]["reason"] == "duplicate" and rows["k1"]["representative_key"] == "k0"
    # One evaluation image in a component removes all of it, the representative too.
    assert rows["k2"]["reason"] == rows["k3"]["reason"] == "eval_contaminated"
    assert rows["k0"]["reason"] == "kept"
