"""Grouping face embeddings into candidate people: stateless functions, numpy in and out.

    nbr, sim = knn_graph(X, k)                   # exact k nearest neighbours (FAISS), no n x n matrix
    labels   = agglomerate(X, nbr, sim, link_threshold, must_link=..., cannot_link=...)
    central  = central_faces(X, labels)          # the face nearest the rest of its cluster

Average linkage on the kNN graph: every face starts alone (or with its must-link group, e.g. one video
track); of the cluster pairs the graph joins, the one with the highest mean similarity over all their face
pairs is merged while that mean is >= `link_threshold` and no cannot-link pair (two faces of one photo)
would end up together. The mean is exact (S_A . S_B / (|A| |B|), S a cluster's row sum): a mean over the
graph's edges alone is biased upwards between two people (the edges are their most alike faces; with 8
neighbours it merged people the exact mean keeps apart). `linkage="single"` chains people together and is
kept for comparison. Memory is linear in the faces. Deterministic: similarities are recomputed in float64
and ties broken by face index, whatever FAISS's or BLAS's thread count.
"""
from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

__all__ = ["DEFAULT_K", "LINKAGES", "agglomerate", "central_faces", "cluster_embeddings", "edges_from_knn",
           "knn_graph", "normalize", "pair_similarity"]

LINKAGES = ("average", "single")
DEFAULT_K = 16


def _check_embeddings(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array (faces x dims), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"embeddings must be floating point, got {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.all(np.isfinite(X)):
        raise ValueError("embeddings contain NaN or infinite values")
    return X


def normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity = dot product); zero rows stay zero."""
    X = _check_embeddings(X)
    norms = np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    return (X / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def pair_similarity(X: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Dot products of rows i[t] and j[t] in float64, in chunks so the float64 copies stay a few MiB."""
    out = np.empty(len(i), np.float64)
    for s in range(0, len(i), chunk):
        a = X[i[s : s + chunk]].astype(np.float64)
        b = X[j[s : s + chunk]].astype(np.float64)
        out[s : s + chunk] = np.einsum("ij,ij->i", a, b)
    return out


def knn_graph(X: np.ndarray, k: int = DEFAULT_K) -> tuple[np.ndarray, np.ndarray]:
    """Each face's k nearest other faces (exact cosine): (nbr int64, sim float64), both (n, min(k, n-1)),
    sorted by similarity then index; a face never lists itself."""
    import faiss  # loaded only when faces are clustered

    X = _check_embeddings(X)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n = len(X)
    kk = int(min(k, n - 1))
    if kk <= 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float64)
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    # A few extra so that the face itself (and exact duplicates ranked before it) can be
    # dropped and float32 near-ties at the k-th place are re-decided in float64.
    extra = min(n, kk + 1 + 4)
    _, found = index.search(X, extra)
    found = found.astype(np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), extra)
    cols = found.reshape(-1)
    valid = (cols >= 0) & (cols != rows)
    sims = np.full(rows.shape, -np.inf)
    sims[valid] = pair_similarity(X, rows[valid], cols[valid])
    cols = np.where(valid, cols, np.iinfo(np.int64).max)
    sims = sims.reshape(n, extra)
    cols = cols.reshape(n, extra)
    order = np.lexsort((cols, -sims), axis=1)[:, :kk]
    return np.take_along_axis(cols, order, 1), np.take_along_axis(sims, order, 1)


def edges_from_knn(nbr: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The undirected edges of a kNN graph, each once: (i, j, sim) with i < j, sorted by (i, j)."""
    n, k = nbr.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = nbr.reshape(-1).astype(np.int64)
    s = sim.reshape(-1).astype(np.float64)
    keep = (cols >= 0) & (cols < n) & (cols != rows)
    rows, cols, s = rows[keep], cols[keep], s[keep]
    a, b = np.minimum(rows, cols), np.maximum(rows, cols)
    key = a * n + b
    key, first = np.unique(key, return_index=True)
    return a[first], b[first], s[first]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return int(root)

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        return lo


def _groups_to_labels(groups: Sequence[Sequence[int]] | None, n: int, what: str) -> list[list[int]]:
    out = []
    for g in groups or ():
        idx = [int(v) for v in g]
        bad = [v for v in idx if not 0 <= v < n]
        if bad:
            raise ValueError(f"{what} group {list(g)[:10]} names faces {bad[:5]} outside 0..{n - 1}")
        out.append(sorted(set(idx)))
    return out


class _Clusters:
    """A union-find over the faces, and per cluster root the cannot-link groups its faces belong to."""

    def __init__(self, n: int, must_link, cannot_link) -> None:
        self.uf = _UnionFind(n)
        for g in _groups_to_labels(must_link, n, "must-link"):
            for v in g[1:]:
                self.uf.union(g[0], v)
        self.forbid: dict[int, set[int]] = {}
        for gid, g in enumerate(_groups_to_labels(cannot_link, n, "cannot-link")):
            for v in g:
                s = self.forbid.setdefault(self.uf.find(v), set())
                if gid in s:
                    raise ValueError(f"must-link puts two faces of cannot-link group {g[:10]} together")
                s.add(gid)

    def blocked(self, x: int, y: int) -> bool:
        fx, fy = self.forbid.get(x), self.forbid.get(y)
        return bool(fx and fy and not fx.isdisjoint(fy))

    def join(self, x: int, y: int) -> int:
        r = self.uf.union(x, y)
        merged = self.forbid.pop(x, set()) | self.forbid.pop(y, set())
        if merged:
            self.forbid[r] = merged
        return r


def _check_graph(X: np.ndarray, nbr, sim, link_threshold: float, linkage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    if not -1.0 <= float(link_threshold) <= 1.0:
        raise ValueError(f"link_threshold {link_threshold} is not a cosine similarity in [-1, 1]")
    X = _check_embeddings(X)
    nbr, sim = np.asarray(nbr), np.asarray(sim)
    if nbr.shape != sim.shape or nbr.ndim != 2 or nbr.shape[0] != len(X):
        raise ValueError(f"nbr and sim must be (faces, k) arrays for the {len(X)} faces, got {nbr.shape} and {sim.shape}")
    return X, nbr, sim


def agglomerate(X: np.ndarray, nbr: np.ndarray, sim: np.ndarray, link_threshold: float, *, linkage: str = "average",
                must_link: Sequence[Sequence[int]] | None = None,
                cannot_link: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Cluster labels (n,) of the unit rows X from their kNN graph (nbr, sim), 0..c-1 numbered by each
    cluster's smallest face index. must_link groups start as one cluster; no two faces of a cannot_link group
    end up in one (ValueError when a must-link group holds two)."""
    X, nbr, sim = _check_graph(X, nbr, sim, link_threshold, linkage)
    n = len(X)
    t = float(link_threshold)
    cl = _Clusters(n, must_link, cannot_link)
    a, b, s = edges_from_knn(nbr, sim)
    roots = np.array([cl.uf.find(i) for i in range(n)], np.int64)
    if linkage == "single":
        _single_linkage(cl, a, b, s, roots, t)
    else:
        _average_linkage(cl, X, roots[a], roots[b], roots, t)
    return _relabel(cl.uf, n)


def _single_linkage(cl: _Clusters, a, b, s, roots: np.ndarray, t: float) -> None:
    """Merge on the graph's edges, best first, down to the threshold."""
    ra, rb = roots[a], roots[b]
    for e in np.lexsort((b, a, -s)):
        if s[e] < t:
            break
        x, y = cl.uf.find(int(ra[e])), cl.uf.find(int(rb[e]))
        if x != y and not cl.blocked(x, y):
            cl.join(x, y)


def _average_linkage(cl: _Clusters, X: np.ndarray, ra: np.ndarray, rb: np.ndarray, roots: np.ndarray, t: float) -> None:
    """Exact average linkage (S_A . S_B / (|A||B|)); the graph only says which clusters are candidates."""
    n = len(X)
    S = np.zeros((n, X.shape[1]), np.float64)
    np.add.at(S, roots, X.astype(np.float64))
    size = np.bincount(roots, minlength=n).astype(np.float64)
    lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
    key = np.unique((lo * n + hi)[lo != hi])
    pairs = np.stack([key // n, key % n], 1)
    adj: dict[int, set[int]] = {}
    for x, y in pairs.tolist():
        adj.setdefault(x, set()).add(y)
        adj.setdefault(y, set()).add(x)
    version = np.zeros(n, np.int64)
    heap = []
    if len(pairs):
        m0 = pair_similarity(S, pairs[:, 0], pairs[:, 1]) / (size[pairs[:, 0]] * size[pairs[:, 1]])
        heap = [(-m, x, y, 0, 0) for m, (x, y) in zip(m0.tolist(), pairs.tolist()) if m >= t]
    heapq.heapify(heap)
    while heap:
        _, x, y, vx, vy = heapq.heappop(heap)
        if version[x] != vx or version[y] != vy or x not in adj or y not in adj:
            continue  # one side has changed (or gone) since this entry was pushed
        if cl.blocked(x, y):
            adj[x].discard(y)  # never allowed, now or later
            adj[y].discard(x)
            continue
        r = _merge(cl, x, y, S, size, version, adj)
        _push_neighbours(heap, r, adj[r], S, size, version, t)


def _merge(cl: _Clusters, x: int, y: int, S: np.ndarray, size: np.ndarray, version: np.ndarray,
           adj: dict[int, set[int]]) -> int:
    r = cl.join(x, y)
    gone = y if r == x else x
    S[r] += S[gone]
    size[r] += size[gone]
    version[r] += 1
    nb = (adj.pop(gone) | adj[r]) - {x, y}
    adj[r] = nb
    for z in nb:
        adj[z].discard(gone)
        adj[z].add(r)
    return r


def _push_neighbours(heap: list, r: int, nb: set[int], S: np.ndarray, size: np.ndarray, version: np.ndarray,
                     t: float) -> None:
    if not nb:
        return
    zs = np.array(sorted(nb), np.int64)
    m = (S[zs] @ S[r]) / (size[zs] * size[r])
    for z, mz in zip(zs.tolist(), m.tolist()):
        if mz >= t:
            lo, hi = (r, z) if r < z else (z, r)
            heapq.heappush(heap, (-mz, lo, hi, int(version[lo]), int(version[hi])))


def _relabel(uf: _UnionFind, n: int) -> np.ndarray:
    roots = np.array([uf.find(i) for i in range(n)], np.int64)
    # roots are each cluster's smallest index (union keeps the lower root), so their order is the
    # order of first appearance
    _, labels = np.unique(roots, return_inverse=True)
    return labels.astype(np.int64)


def cluster_embeddings(X: np.ndarray, link_threshold: float, *, k: int = DEFAULT_K, linkage: str = "average",
                       must_link: Sequence[Sequence[int]] | None = None,
                       cannot_link: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Labels (n,) for embeddings X (n, d): the kNN graph and `agglomerate` in one call."""
    X = normalize(X)
    if len(X) == 0:
        return np.zeros(0, np.int64)
    nbr, sim = knn_graph(X, k)
    return agglomerate(X, nbr, sim, link_threshold, linkage=linkage, must_link=must_link, cannot_link=cannot_link)


def central_faces(X: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the face with the highest summed similarity to it (ties: lowest index), and its mean
    pairwise similarity (1.0 for a singleton), both from the cluster's row sum (no pairwise matrix)."""
    X = normalize(X)
    labels = np.asarray(labels, np.int64)
    if labels.shape != (len(X),):
        raise ValueError(f"labels must have one entry per face ({len(X)}), got shape {labels.shape}")
    c = int(labels.max()) + 1 if len(labels) else 0
    X64 = X.astype(np.float64)
    sums = np.zeros((c, X.shape[1]), np.float64)
    np.add.at(sums, labels, X64)
    counts = np.bincount(labels, minlength=c).astype(np.float64)
    score = np.einsum("ij,ij->i", X64, sums[labels])
    order = np.lexsort((np.arange(len(X)), -score, labels))
    first = np.ones(len(order), bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    central = order[first]
    sq = np.einsum("ij,ij->i", sums, sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        cohesion = np.where(counts > 1, (sq - counts) / (counts * (counts - 1)), 1.0)
    return central.astype(np.int64), cohesion
