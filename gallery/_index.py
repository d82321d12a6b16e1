"""Which FAISS index a gallery uses, and how it is built, grown, shrunk and searched.

Up to `approx_threshold` faces: faiss.index_factory's "IDMap2,Flat" (inner product), exact, and
removal compacts the storage so removed vectors leave the file.

Above it: "IDMap2,PQ<m>x4fs,RFlat" (IndexRefineFlat over IndexPQFastScan), kind "pq":
  * a 4-bit product-quantisation code per face (64 sub-quantizers: 32 bytes at 512-d),
    scanned in full for every query with faiss's SIMD "fast-scan" kernels (no coarse
    quantiser, so no face is ever skipped the way IVF skips unprobed lists);
  * the best k * k_factor candidates (at least MIN_SHORTLIST) are re-ranked exactly with
    the float vectors kept beside the codes: returned similarities are exact, only the
    shortlist is approximate.
Chosen over IVF-Flat, HNSW and LSH codes because it finds every near face at 1e6 faces at a
fraction of exact search's cost and, unlike HNSW, removes a face's vector at once (measurements:
benchmarks/results/gallery-index-choice.md). Removal compacts codes and floats (no tombstones,
no rebuild); adding encodes with the existing codebooks (nothing is retrained); crossing the
threshold trains codebooks once on up to 65,536 faces. Strangers' best match is often not the
exact one, but their best similarity is far below any match threshold either way.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import faiss

__all__ = ["DEFAULT_APPROX_THRESHOLD", "DEFAULT_K_FACTOR", "MIN_APPROX", "MIN_SHORTLIST", "TRAIN_POINTS",
           "AllVectors", "add", "build", "configure", "kind", "pq_subquantizers", "read_index", "remove", "search",
           "write_index"]

DEFAULT_APPROX_THRESHOLD = 100_000
DEFAULT_K_FACTOR = 10
MIN_SHORTLIST = 50
TRAIN_POINTS = 65_536  # PQ codebook training sample
MIN_APPROX = 1_000  # below this many faces there is too little to train codebooks on: exact

AllVectors = Callable[[], tuple[np.ndarray, np.ndarray]]


def _faiss():
    """FAISS, loaded when an index is first built, read or searched: loading it takes about half a
    second, which `import gallery` (every command, `--help` included) should not pay."""
    import faiss  # heavy: loaded on first use (see above)

    return faiss


def read_index(path: str):
    return _faiss().read_index(path)


def write_index(index: faiss.Index, path: str) -> None:
    _faiss().write_index(index, path)


def _refine(index: faiss.Index) -> faiss.IndexRefine | None:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexRefine):
            return inner
    return None


def kind(index: faiss.Index) -> str:
    return "pq" if _refine(index) is not None else "flat"


def configure(index: faiss.Index, k_factor: float | None = None) -> None:
    """Search breadth of a "pq" index: `k_factor` re-ranked candidates per result wanted (a
    gallery-sized value makes search exact)."""
    refine = _refine(index)
    if refine is not None:
        refine.k_factor = float(k_factor or DEFAULT_K_FACTOR)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids), k per query; ids -1 where fewer than k are stored."""
    faiss = _faiss()
    refine = _refine(index)
    if refine is None:
        return index.search(queries, k)
    k_factor = max(refine.k_factor, math.ceil(MIN_SHORTLIST / k))
    # No more candidates than faces: faiss pads a short list with -1 anyway.
    k_factor = min(k_factor, max(1.0, index.ntotal / k))
    params = faiss.IndexRefineSearchParameters(k_factor=float(k_factor))
    return index.search(queries, k, params=params)


def pq_subquantizers(dim: int) -> int:
    """64 sub-quantizers of 4 bits (32-byte codes) where the dimension allows: the largest
    divisor of `dim` up to 64 (512-d: 8 dimensions per sub-quantizer)."""
    return max(m for m in range(1, 65) if dim % m == 0)


def _new_pq(vectors: np.ndarray) -> faiss.Index:
    faiss = _faiss()
    dim = vectors.shape[1]
    index = faiss.index_factory(dim, f"IDMap2,PQ{pq_subquantizers(dim)}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    refine = faiss.downcast_index(index.index)
    pq = faiss.downcast_index(refine.base_index)
    # Codebooks (16 centroids per sub-space) from a fixed sample: rebuilding from the same
    # database gives the same index. They are not retrained as the gallery grows: codes
    # only pick the shortlist, and the exact re-ranking absorbs their error.
    rng = np.random.default_rng(0)
    n = len(vectors)
    sample = vectors[np.sort(rng.choice(n, min(n, TRAIN_POINTS), replace=False))]
    pq.pq.cp.seed = 1234
    index.train(np.ascontiguousarray(sample, dtype=np.float32))  # through the id map: it records is_trained
    refine.k_factor = float(DEFAULT_K_FACTOR)
    return index


def _approximate(n: int, approx_threshold: int) -> bool:
    return n > max(approx_threshold, MIN_APPROX)


def build(vectors: np.ndarray, ids: np.ndarray, approx_threshold: int) -> faiss.Index:
    """A fresh index over these vectors: exact up to the threshold, "pq" above."""
    faiss = _faiss()
    if _approximate(len(vectors), approx_threshold):
        index = _new_pq(vectors)
    else:
        index = faiss.index_factory(vectors.shape[1], "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        _clear_padding(index)
    return index


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, approx_threshold: int,
        all_vectors: AllVectors) -> faiss.Index:
    """Index with `vectors` added: in place, or rebuilt when it should change kind.
    `all_vectors` returns what is stored so far (for rebuilds)."""
    n = index.ntotal + len(vectors)
    if kind(index) == "flat" and _approximate(n, approx_threshold):
        old_ids, old_vecs = all_vectors()
        return build(np.concatenate([old_vecs, vectors]), np.concatenate([old_ids, ids]), approx_threshold)
    index.add_with_ids(vectors, ids)
    _clear_padding(index)
    return index


def _clear_padding(index: faiss.Index) -> None:
    """Zero the unused slots of the fast-scan index's last block of 32 codes: remove_ids leaves
    there the codes that were there (possibly a removed face's), which would be written to
    index.faiss. Costs well under a millisecond (benchmarks/results/implementation-choices.md)."""
    faiss = _faiss()
    refine = _refine(index)
    if refine is None:
        return
    pq = faiss.downcast_index(refine.base_index)
    used = pq.ntotal % pq.bbs
    if pq.codes.size() == 0 or used == 0:
        return
    packer = pq.get_CodePacker()
    table = faiss.rev_swig_ptr(pq.codes.get(), pq.codes.size())  # a view, written in place
    last = table[len(table) - packer.block_size:]
    old = last.reshape(1, -1).copy()
    clean = np.zeros_like(old)
    for slot in range(used):
        packer.pack_1(packer.unpack_1(old, slot), slot, clean)
    last[:] = clean[0]


def _remove_refined(index: faiss.IndexIDMap2, ids: np.ndarray) -> int:
    """IndexRefine has no remove_ids; its two parts (codes, floats, in the same order) do: remove
    the same positions from each, then from the id map. Each compacts, so nothing removed is written."""
    faiss = _faiss()
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
    _clear_padding(index)
    return len(positions)


def remove(index: faiss.Index, ids: np.ndarray, approx_threshold: int, all_vectors: AllVectors) -> faiss.Index:
    """Index without `ids`. Falls back to the exact index once the gallery has shrunk to
    half the threshold (the gap avoids rebuilding back and forth around it)."""
    faiss = _faiss()
    current = kind(index)
    if current != "flat" and index.ntotal - len(ids) <= approx_threshold // 2:
        old_ids, old_vecs = all_vectors()
        keep = ~np.isin(old_ids, ids)
        return build(old_vecs[keep], old_ids[keep], approx_threshold)
    ids = ids.astype(np.int64)
    if current == "pq":
        removed = _remove_refined(index, ids)
    else:
        removed = index.remove_ids(faiss.IDSelectorBatch(ids))
    if removed != len(ids):
        raise RuntimeError(f"index removed {removed} of {len(ids)} vectors")
    return index
