"""Which FAISS index a gallery uses, and how it is built, grown, shrunk and searched.

Up to `approx_threshold` faces: IndexIDMap2(IndexFlatIP), exact, and removal compacts
the storage so removed vectors leave the file.

Above it: IndexIDMap2(IndexRefine(IndexLSH, IndexFlatIP)), "lsh":
  * IndexLSH keeps a 512-bit sign code per face (64 bytes) after a fixed random rotation,
    i.e. SimHash: the fraction of differing bits estimates the angle between two vectors
    (P[bit differs] = angle/pi) whatever the distribution of the embeddings, with no
    training on the data; a search scans all codes by Hamming distance (popcount).
  * the best k * k_factor candidates (at least MIN_SHORTLIST) are re-ranked exactly with
    the float vectors kept beside the codes, so similarities are exact and only the
    shortlist is approximate.
Chosen from benchmarks/gallery_search.py (see gallery_search_results.txt; random 512-d
unit vectors, 2 shared cores). SEE_RESULTS
  * removal: both parts are flat code arrays and compact on removal (`_remove_refined`),
    so removed vectors and their codes leave index.faiss at once; no tombstones, no rebuild.
  * growth: adding costs one 512x512 rotation per vector; nothing is retrained, so the
    index never needs rebuilding as the gallery grows.
  * memory/disk: the float vectors (as in the exact index) + 64 bytes per face.
Galleries saved with the earlier IVF-Flat index still load and search; their next
enrolment rebuilds them as "lsh".
"""
from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

DEFAULT_APPROX_THRESHOLD = 100_000
LSH_BITS = 512
DEFAULT_K_FACTOR = 10
MIN_SHORTLIST = 50
TRAIN_POINTS_PER_LIST = 39  # legacy IVF galleries

AllVectors = Callable[[], tuple[np.ndarray, np.ndarray]]


def default_nprobe(nlist: int) -> int:
    """Legacy IVF galleries: 1/8 of the lists (recall@1 0.996 on near queries at 1e6)."""
    return min(nlist, max(32, nlist // 8))


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _refine(index: faiss.Index) -> faiss.IndexRefine | None:
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexRefine):
            return inner
    return None


def kind(index: faiss.Index) -> str:
    if _refine(index) is not None:
        return "lsh"
    return "ivf" if _ivf(index) is not None else "flat"


def configure(index: faiss.Index, nprobe: int | None = None, k_factor: float | None = None) -> None:
    """Search breadth: `k_factor` for "lsh" (re-ranked candidates per result wanted; a
    gallery-sized value makes search exact), `nprobe` for legacy IVF galleries."""
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = min(ivf.nlist, nprobe or default_nprobe(ivf.nlist))
    refine = _refine(index)
    if refine is not None:
        refine.k_factor = float(k_factor or DEFAULT_K_FACTOR)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids), k per query; ids -1 where fewer than k are stored."""
    refine = _refine(index)
    if refine is None:
        return index.search(queries, k)
    k_factor = max(refine.k_factor, math.ceil(MIN_SHORTLIST / k))
    # No more candidates than faces: faiss pads a short list with -1 anyway.
    k_factor = min(k_factor, max(1.0, index.ntotal / k))
    params = faiss.IndexRefineSearchParameters(k_factor=float(k_factor))
    return index.search(queries, k, params=params)


def _new_lsh(dim: int) -> faiss.Index:
    lsh = faiss.IndexLSH(dim, LSH_BITS, True, False)  # rotate_data, no learnt thresholds
    # IndexRefine takes the metric of its parts: the codes only pick candidates (their
    # Hamming ranks), the exact re-ranking is by inner product.
    lsh.metric_type = faiss.METRIC_INNER_PRODUCT
    flat = faiss.IndexFlatIP(dim)
    refine = faiss.IndexRefine(lsh, flat)
    refine.own_fields = refine.own_refine_index = True
    lsh.this.disown()
    flat.this.disown()
    # The rotation comes from a fixed seed; "training" only draws it (no data is learnt).
    refine.train(np.zeros((1, dim), np.float32))
    refine.k_factor = float(DEFAULT_K_FACTOR)
    index = faiss.IndexIDMap2(refine)
    index.own_fields = True
    refine.this.disown()
    return index


def build(vectors: np.ndarray, ids: np.ndarray, approx_threshold: int) -> faiss.Index:
    """A fresh index over these vectors: exact up to the threshold, "lsh" above."""
    dim = vectors.shape[1]
    n = len(vectors)
    if n <= approx_threshold:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    else:
        index = _new_lsh(dim)
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, approx_threshold: int,
        all_vectors: AllVectors) -> faiss.Index:
    """Index with `vectors` added: in place, or rebuilt when it should change kind (and
    for a legacy IVF index). `all_vectors` returns what is stored so far (for rebuilds)."""
    n = index.ntotal + len(vectors)
    current = kind(index)
    if (current == "flat" and n > approx_threshold) or current == "ivf":
        old_ids, old_vecs = all_vectors()
        return build(np.concatenate([old_vecs, vectors]), np.concatenate([old_ids, ids]), approx_threshold)
    index.add_with_ids(vectors, ids)
    return index


def _remove_refined(index: faiss.IndexIDMap2, ids: np.ndarray) -> int:
    """faiss's IndexRefine has no remove_ids; its two parts (codes, floats) do, and both
    are in the same (insertion) order, so remove the same positions from each, then from
    the id map. Every part compacts its array, so nothing of the removed faces is written."""
    refine = _refine(index)
    assert refine is not None
    id_map = faiss.vector_to_array(index.id_map)
    gone = np.isin(id_map, ids)
    positions = np.flatnonzero(gone).astype(np.int64)
    if len(positions) == 0:
        return 0
    sel = faiss.IDSelectorBatch(positions)
    base, exact = faiss.downcast_index(refine.base_index), faiss.downcast_index(refine.refine_index)
    if base.remove_ids(sel) != len(positions) or exact.remove_ids(sel) != len(positions):
        raise RuntimeError("index parts disagree on the vectors to remove")
    refine.ntotal = base.ntotal
    faiss.copy_array_to_vector(id_map[~gone], index.id_map)
    index.ntotal = base.ntotal
    index.construct_rev_map()
    return len(positions)


def remove(index: faiss.Index, ids: np.ndarray, approx_threshold: int, all_vectors: AllVectors) -> faiss.Index:
    """Index without `ids`. Falls back to the exact index once the gallery has shrunk to
    half the threshold (the gap avoids rebuilding back and forth around it)."""
    current = kind(index)
    if current != "flat" and index.ntotal - len(ids) <= approx_threshold // 2:
        old_ids, old_vecs = all_vectors()
        keep = ~np.isin(old_ids, ids)
        return build(old_vecs[keep], old_ids[keep], approx_threshold)
    ids = ids.astype(np.int64)
    if current == "lsh":
        removed = _remove_refined(index, ids)
    else:
        removed = index.remove_ids(faiss.IDSelectorBatch(ids))
    if removed != len(ids):
        raise RuntimeError(f"index removed {removed} of {len(ids)} vectors")
    return index
