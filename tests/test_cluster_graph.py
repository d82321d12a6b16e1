"""The clustering core against brute force: kNN graph, both linkages, constraints, centrality, metrics."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from recognizer.clustering.graph import agglomerate, central_faces, cluster_embeddings, edges_from_knn, knn_graph, normalize
from recognizer.clustering.metrics import bcubed_scores, pairwise_scores


def blobs(seed: int, people: int = 12, per: int = 6, dim: int = 32, spread: float = 0.6):
    """Faces drawn around random centres; a few strangers (singletons) mixed in."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    sizes = rng.integers(1, per + 1, size=people)
    X = np.concatenate([c + spread * rng.normal(size=(s, dim)) * np.linalg.norm(c) / np.sqrt(dim) for c, s in zip(centres, sizes)])
    y = np.repeat(np.arange(people), sizes)
    perm = rng.permutation(len(X))
    return normalize(X[perm].astype(np.float32)), y[perm]


def brute_knn(X, k):
    S = X.astype(np.float64) @ X.astype(np.float64).T
    n = len(X)
    nbr = np.zeros((n, k), np.int64)
    sim = np.zeros((n, k))
    for i in range(n):
        cand = sorted((j for j in range(n) if j != i), key=lambda j: (-S[i, j], j))[:k]
        nbr[i], sim[i] = cand, S[i, cand]
    return nbr, sim


def brute_average(X, nbr, t, cannot=()):
    """Naive average linkage: rescan every pair of graph-joined clusters each step, means taken
    over the dense similarity matrix."""
    n = len(X)
    S = X.astype(np.float64) @ X.astype(np.float64).T
    edges = {(min(i, j), max(i, j)) for i in range(n) for j in nbr[i]}
    clusters = {i: {i} for i in range(n)}
    group_of = {}
    for g, members in enumerate(cannot):
        for v in members:
            group_of.setdefault(v, set()).add(g)
    while True:
        best = None
        for a, b in itertools.combinations(sorted(clusters), 2):
            A, B = clusters[a], clusters[b]
            if not any((i in A and j in B) or (i in B and j in A) for i, j in edges):
                continue
            ga = set().union(*(group_of.get(v, set()) for v in A))
            gb = set().union(*(group_of.get(v, set()) for v in B))
            if ga & gb:
                continue
            m = S[np.ix_(sorted(A), sorted(B))].mean()
            if m >= t and (best is None or m > best[0] + 1e-12):
                best = (m, a, b)
        if best is None:
            break
        _, a, b = best
        clusters[a] |= clusters.pop(b)
    labels = np.zeros(n, np.int64)
    for lab, root in enumerate(sorted(clusters)):
        labels[list(clusters[root])] = lab
    return labels


def brute_single(nbr, sim, t):
    n = len(nbr)
    labels = list(range(n))
    for i in range(n):
        for j, s in zip(nbr[i], sim[i]):
            if s >= t and labels[i] != labels[j]:
                old, new = max(labels[i], labels[j]), min(labels[i], labels[j])
                labels = [new if v == old else v for v in labels]
    _, inv = np.unique(labels, return_inverse=True)
    return inv


@pytest.mark.parametrize("seed", range(4))
def test_knn_graph_equals_brute_force(seed):
    X, _ = blobs(seed)
    for k in (1, 5, len(X) + 3):
        nbr, sim = knn_graph(X, k)
        bn, bs = brute_knn(X, min(k, len(X) - 1))
        assert np.array_equal(nbr, bn)
        np.testing.assert_allclose(sim, bs, rtol=0, atol=1e-12)


def test_knn_graph_with_duplicates_never_lists_itself():
    X, _ = blobs(0)
    X = np.concatenate([X, X[:5], X[:5]])  # the same face three times
    nbr, _ = knn_graph(X, 4)
    assert not np.any(nbr == np.arange(len(X))[:, None])
    assert all(len(set(row)) == len(row) for row in nbr)


@pytest.mark.parametrize("seed", range(6))
def test_average_linkage_equals_brute_force(seed):
    X, _ = blobs(seed, people=8, per=5)
    k = 3 + seed % 4
    nbr, sim = knn_graph(X, k)
    for t in (0.2, 0.5, 0.7):
        assert np.array_equal(agglomerate(X, nbr, sim, t), brute_average(X, nbr, t)), (seed, t)


@pytest.mark.parametrize("seed", range(4))
def test_single_linkage_equals_connected_components(seed):
    X, _ = blobs(seed)
    nbr, sim = knn_graph(X, 5)
    for t in (0.3, 0.6):
        assert np.array_equal(agglomerate(X, nbr, sim, t, linkage="single"), brute_single(nbr, sim, t))


@pytest.mark.parametrize("seed", range(3))
def test_cannot_link_equals_brute_force_and_is_respected(seed):
    X, y = blobs(seed, people=6, per=5)
    nbr, sim = knn_graph(X, 5)
    rng = np.random.default_rng(seed)
    # "photos": random pairs and triples of faces that may not share a cluster
    cannot = [list(rng.choice(len(X), size=int(rng.integers(2, 4)), replace=False)) for _ in range(6)]
    labels = agglomerate(X, nbr, sim, 0.3, cannot_link=cannot)
    assert np.array_equal(labels, brute_average(X, nbr, 0.3, cannot))
    for g in cannot:
        assert len(set(labels[g])) == len(g)
    single = agglomerate(X, nbr, sim, 0.3, linkage="single", cannot_link=cannot)
    for g in cannot:
        assert len(set(single[g])) == len(g)


def test_must_link_groups_stay_together_and_conflicts_are_refused():
    X, y = blobs(1)
    nbr, sim = knn_graph(X, 5)
    far = [int(np.argmin(X @ X[0])), 0]  # the face least like face 0, said to be the same person
    labels = agglomerate(X, nbr, sim, 0.99, must_link=[far])
    assert labels[far[0]] == labels[far[1]]
    assert len(np.unique(labels)) == len(X) - 1  # nothing else merges at 0.99
    with pytest.raises(ValueError, match="must-link"):
        agglomerate(X, nbr, sim, 0.5, must_link=[[0, 1]], cannot_link=[[1, 0]])
    with pytest.raises(ValueError, match="outside"):
        agglomerate(X, nbr, sim, 0.5, must_link=[[0, len(X)]])


def test_bad_arguments_are_value_errors():
    X, _ = blobs(0)
    nbr, sim = knn_graph(X, 3)
    with pytest.raises(ValueError, match="linkage"):
        agglomerate(X, nbr, sim, 0.5, linkage="complete")
    with pytest.raises(ValueError, match="cosine"):
        agglomerate(X, nbr, sim, 1.5)
    with pytest.raises(ValueError, match="k must"):
        knn_graph(X, 0)
    with pytest.raises(ValueError, match="NaN"):
        knn_graph(np.full((3, 4), np.nan, np.float32), 2)
    with pytest.raises(ValueError, match="2-d"):
        cluster_embeddings(np.zeros(5, np.float32), 0.5)


def test_singletons_stay_singletons_and_edges_are_each_listed_once():
    assert list(cluster_embeddings(np.eye(4, dtype=np.float32), 0.5)) == [0, 1, 2, 3]
    assert list(cluster_embeddings(np.ones((1, 8), np.float32), 0.5)) == [0]
    assert cluster_embeddings(np.zeros((0, 8), np.float32), 0.5).shape == (0,)
    X, _ = blobs(2)
    a, b, _ = edges_from_knn(*knn_graph(X, 4))
    assert np.all(a < b) and len(set(zip(a, b))) == len(a)


def test_recovers_separated_people_and_is_deterministic_across_threads():
    import faiss

    X, y = blobs(3, people=30, per=8, dim=64, spread=0.35)
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = cluster_embeddings(X, 0.5)
        faiss.omp_set_num_threads(2)
        two = cluster_embeddings(X, 0.5)
    finally:
        faiss.omp_set_num_threads(before)
    assert np.array_equal(one, two)
    assert pairwise_scores(one, y)["precision"] == 1.0 and pairwise_scores(one, y)["recall"] == 1.0


def test_central_face_and_cohesion_equal_brute_force():
    X, y = blobs(4)
    central, cohesion = central_faces(X, y)
    S = X.astype(np.float64) @ X.astype(np.float64).T
    for c in range(y.max() + 1):
        idx = np.flatnonzero(y == c)
        sums = S[np.ix_(idx, idx)].sum(1)
        assert central[c] == idx[np.argmax(sums)]  # argmax takes the first (lowest index) on ties
        m = len(idx)
        want = (S[np.ix_(idx, idx)].sum() - m) / (m * (m - 1)) if m > 1 else 1.0
        assert cohesion[c] == pytest.approx(want, abs=1e-9)


def brute_pairwise(pred, true):
    n = len(pred)
    together = same = both = 0
    for i, j in itertools.combinations(range(n), 2):
        t, s = pred[i] == pred[j], true[i] == true[j]
        together += t
        same += s
        both += t and s
    return both / together if together else 1.0, both / same if same else 1.0


def brute_bcubed(pred, true):
    n = len(pred)
    p = np.mean([np.mean([true[j] == true[i] for j in range(n) if pred[j] == pred[i]]) for i in range(n)])
    r = np.mean([np.mean([pred[j] == pred[i] for j in range(n) if true[j] == true[i]]) for i in range(n)])
    return p, r


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 6, 40)
    pred = np.where(rng.random(40) < 0.7, true, rng.integers(0, 9, 40)) * 7 + 3  # any label values
    pw, bc = pairwise_scores(pred, true), bcubed_scores(pred, true)
    assert (pw["precision"], pw["recall"]) == pytest.approx(brute_pairwise(pred, true))
    assert (bc["precision"], bc["recall"]) == pytest.approx(brute_bcubed(pred, true))
