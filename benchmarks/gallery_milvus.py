"""Benchmark: the gallery on Milvus Lite against the FAISS + SQLite gallery, through the
gallery API itself (create_gallery / add / search), in the same run.

For each size N: N random 512-d unit vectors (1,000 people), added in batches of --batch;
then --queries "near" queries (a stored vector plus noise, cosine ~0.8 with it: a new photo
of an enrolled person), one query per call. Reported per backend: insert rate (faces/s, the
whole add including the store's own bookkeeping), search latency p50/p95 (ms), recall@1
against exact numpy search, and ratios against FAISS measured in the same run.
Milvus Lite is measured with its exact FLAT index (the default: the same answers as FAISS)
and, with --hnsw, with its HNSW index.

    python benchmarks/gallery_milvus.py --sizes 10000 100000 --queries 200 --hnsw | tee benchmarks/results/gallery-milvus.txt
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from gallery import FaceRecord, create_gallery

MODEL = "bench"


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_queries(rng: np.random.Generator, base: np.ndarray, nq: int, sim: float) -> tuple[np.ndarray, np.ndarray]:
    src = rng.integers(0, len(base), nq)
    dim = base.shape[1]
    noise = rng.standard_normal((nq, dim), dtype=np.float32) * np.sqrt((1 / sim**2 - 1) / dim)
    q = base[src] + noise
    return q / np.linalg.norm(q, axis=1, keepdims=True), src


def measure(spec: str, x: np.ndarray, q: np.ndarray, exact: np.ndarray, batch: int, **opts) -> dict[str, float]:
    g = create_gallery(spec, MODEL, x.shape[1], **opts)
    t0 = time.perf_counter()
    for s in range(0, len(x), batch):
        g.add(x[s:s + batch], [FaceRecord(f"p{i % 1000}", f"/photos/{i}.jpg", f"{i:064x}", (0.0, 0.0, 1.0, 1.0))
                               for i in range(s, min(s + batch, len(x)))], model_id=MODEL)
    insert_s = time.perf_counter() - t0
    g.search(q[:1], 1, model_id=MODEL)  # warm-up: first call loads what the store loads lazily
    lat, got = [], []
    for row in q:
        t = time.perf_counter()
        hits = g.search(row[None], 5, model_id=MODEL)[0]
        lat.append(time.perf_counter() - t)
        got.append(hits[0].id)
    g.close()
    lat_ms = np.array(lat) * 1e3
    return {"insert_per_s": len(x) / insert_s, "p50": float(np.percentile(lat_ms, 50)),
            "p95": float(np.percentile(lat_ms, 95)), "recall": float(np.mean(np.array(got) == exact))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=5000, help="faces per add() call")
    ap.add_argument("--near-sim", type=float, default=0.8)
    ap.add_argument("--hnsw", action="store_true", help="also Milvus Lite with its HNSW index")
    args = ap.parse_args()
    print(f"# load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'N':>8} {'backend':<18} {'insert/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'recall@1':>8}  vs FAISS (p50, insert)")
    for n in args.sizes:
        rng = np.random.default_rng(n)
        x = unit_rows(rng, n, args.dim)
        q, _ = near_queries(rng, x, args.queries, args.near_sim)
        exact = np.argmax(q @ x.T, axis=1)
        tmp = tempfile.mkdtemp(prefix="gallery-milvus-")
        try:
            runs = {"faiss": measure(os.path.join(tmp, "faiss"), x, q, exact, args.batch),
                    "milvus-lite FLAT": measure(f"milvus-lite:{tmp}/flat.db", x, q, exact, args.batch, hold_s=60)}
            if args.hnsw:
                runs["milvus-lite HNSW"] = measure(f"milvus-lite:{tmp}/hnsw.db", x, q, exact, args.batch,
                                                   index="HNSW", hold_s=60)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        ref = runs["faiss"]
        for name, r in runs.items():
            print(f"{n:>8} {name:<18} {r['insert_per_s']:>10.0f} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['recall']:>8.3f}"
                  f"  {r['p50'] / ref['p50']:.1f}x, {r['insert_per_s'] / ref['insert_per_s']:.2f}x", flush=True)
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
