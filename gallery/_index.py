"""Which FAISS index a gallery uses, and how it is built, grown and shrunk.

Up to `approx_threshold` faces: IndexIDMap2(IndexFlatIP), exact, and removal compacts
the storage so removed vectors leave the file.

Above it: IndexIVFFlat (inner product). Chosen over HNSW from
benchmarks/gallery_search.py (random 512-d unit vectors, 2 cores, generic non-AVX faiss
build; full table in benchmarks/gallery_search_results.txt):
  * speed/recall: on par. At 1e5, near queries (cos 0.8 with their source): IVF632
    nprobe=64 recall@1 0.962 at 10x exact per query; HNSW32 ef=128 0.970 at 15x,
    ef=256 0.994 at 8x. At 1e6: IVF2000 nprobe=128 0.968 at 15x, nprobe=256 0.996 at 8x.
  * removal: IVF supports remove_ids and drops the vectors from its lists, which the
    privacy rule needs (removed vectors must leave index.faiss). faiss's HNSW cannot
    remove, so every removal would be a rebuild (63 s at 1e5, ~10+ min at 1e6).
  * growth: adding to a trained IVF costs one centroid search per vector; an HNSW
    insert is a graph search. Build: IVF 10 s at 1e5, 234 s at 1e6 (k-means), HNSW 63 s at 1e5.
  * neither reached the 20x-at-recall-0.98 goal on this random data, which has no
    cluster structure to exploit; real embeddings cluster by person, which helps IVF.
nlist = 2*sqrt(n) (k-means trained on 39 points per list, faiss's minimum for stable
centroids, keeping training to minutes at 1e6); the index is retrained when the size
quadruples so lists stay balanced. nprobe default: see `default_nprobe`.
"""
from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np

DEFAULT_APPROX_THRESHOLD = 100_000
TRAIN_POINTS_PER_LIST = 39

AllVectors = Callable[[], tuple[np.ndarray, np.ndarray]]


def nlist_for(n: int) -> int:
    return max(1, min(int(2 * np.sqrt(n)), n // TRAIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    # Recall first: on random 512-d data, near (cos 0.8) queries needed 1/8 of the lists
    # for recall@1 >= 0.98 (0.996 at 1e6, 7.8x faster than exact; nlist/16 gives 0.968 at
    # 15x). Callers who want more speed pass `nprobe` to open_gallery.
    return min(nlist, max(32, nlist // 8))


def kind(index: faiss.Index) -> str:
    return "ivf" if _ivf(index) is not None else "flat"


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def configure(index: faiss.Index, nprobe: int | None) -> None:
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = min(ivf.nlist, nprobe or default_nprobe(ivf.nlist))


def build(vectors: np.ndarray, ids: np.ndarray, approx_threshold: int) -> faiss.Index:
    """A fresh index over these vectors: exact up to the threshold, IVF above."""
    dim = vectors.shape[1]
    n = len(vectors)
    if n <= approx_threshold:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    else:
        nlist = nlist_for(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # A fixed seed: rebuilding from the same database gives the same index.
        rng = np.random.default_rng(0)
        sample = vectors[np.sort(rng.choice(n, min(n, TRAIN_POINTS_PER_LIST * nlist), replace=False))]
        index.cp.seed = 1234
        index.train(sample)
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, approx_threshold: int,
        all_vectors: AllVectors) -> faiss.Index:
    """Index with `vectors` added: in place, or rebuilt when it should change kind or
    outgrew its IVF lists. `all_vectors` returns what is stored so far (for rebuilds)."""
    n = index.ntotal + len(vectors)
    ivf = _ivf(index)
    outgrown = ivf is not None and nlist_for(n) >= 2 * ivf.nlist
    if (ivf is None and n > approx_threshold) or outgrown:
        old_ids, old_vecs = all_vectors()
        return build(np.concatenate([old_vecs, vectors]), np.concatenate([old_ids, ids]), approx_threshold)
    index.add_with_ids(vectors, ids)
    return index


def remove(index: faiss.Index, ids: np.ndarray, approx_threshold: int, all_vectors: AllVectors) -> faiss.Index:
    """Index without `ids`. Falls back to the exact index once the gallery has shrunk to
    half the threshold (the gap avoids rebuilding back and forth around it)."""
    ivf = _ivf(index)
    if ivf is not None and index.ntotal - len(ids) <= approx_threshold // 2:
        old_ids, old_vecs = all_vectors()
        keep = ~np.isin(old_ids, ids)
        return build(old_vecs[keep], old_ids[keep], approx_threshold)
    removed = index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64)))
    if removed != len(ids):
        raise RuntimeError(f"index removed {removed} of {len(ids)} vectors")
    return index
