"""Benchmark: the gallery on Milvus (Lite, and a real server with --server) against the FAISS +
SQLite gallery, through the gallery API itself (create_gallery / add / knn_vote / people), in the
same run.

For each size N: N random 512-d unit vectors (1,000 people), added in batches of --batch;
then --queries "near" queries (a stored vector plus noise, cosine ~0.8 with it: a new photo
of an enrolled person), one query per call. Reported per backend: insert rate (faces/s, the
whole add including the store's own bookkeeping), search latency p50/p95 (ms), the identify
path's p50/p95 (what identify asks the gallery per photo: the kNN vote, and the people and
their counts twice: the vote's columns and the unknown threshold), recall@1 against exact numpy
search, and ratios against FAISS measured in the same run.
Milvus is measured with its exact FLAT index (the default: the same answers as FAISS) and, with
--hnsw, with its HNSW index.

    python benchmarks/gallery_milvus.py --sizes 10000 100000 --queries 200 --hnsw | tee benchmarks/results/gallery-milvus.txt
    # a real server (the embedded Milvus 2.3.5 server, in a loopback-only network namespace):
    MILVUS_SERVER_PATH=/tmp/milvus-srv .ci/milvus-netns.sh sh -c \
        'python benchmarks/gallery_milvus.py --server "$FACETOOL_TEST_MILVUS" --no-lite --hnsw --sizes 10000'
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid

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
    pos = {r.id: int(r.source.rsplit("/", 1)[1][:-4]) for r in g.records()}  # a server's ids are not 0..N-1
    lat, ident, got = [], [], []
    for row in q:
        t = time.perf_counter()
        hits = g.search(row[None], 5, model_id=MODEL)[0]
        lat.append(time.perf_counter() - t)
        got.append(pos[hits[0].id])
        t = time.perf_counter()
        g.knn_vote(row[None], 5, model_id=MODEL)  # what identify asks per photo (recognizer.decision, threshold)
        g.people()
        g.people()
        ident.append(time.perf_counter() - t)
    g.close()
    lat_ms, ident_ms = np.array(lat) * 1e3, np.array(ident) * 1e3
    return {"insert_per_s": len(x) / insert_s, "p50": float(np.percentile(lat_ms, 50)),
            "p95": float(np.percentile(lat_ms, 95)), "id50": float(np.percentile(ident_ms, 50)),
            "id95": float(np.percentile(ident_ms, 95)), "recall": float(np.mean(np.array(got) == exact))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=5000, help="faces per add() call")
    ap.add_argument("--near-sim", type=float, default=0.8)
    ap.add_argument("--hnsw", action="store_true", help="also Milvus with its HNSW index")
    ap.add_argument("--server", metavar="milvus://HOST:PORT", help="also a Milvus server (a new collection per run)")
    ap.add_argument("--no-lite", action="store_true", help="leave out Milvus Lite")
    args = ap.parse_args()
    print(f"# load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'N':>8} {'backend':<19} {'insert/s':>9} {'search p50':>10} {'p95':>6} {'identify p50':>12} {'p95':>6} "
          f"{'recall@1':>8}  vs FAISS (search p50, identify p50, insert)")
    for n in args.sizes:
        rng = np.random.default_rng(n)
        x = unit_rows(rng, n, args.dim)
        q, _ = near_queries(rng, x, args.queries, args.near_sim)
        exact = np.argmax(q @ x.T, axis=1)
        tmp = tempfile.mkdtemp(prefix="gallery-milvus-")
        try:
            runs = {"faiss": measure(os.path.join(tmp, "faiss"), x, q, exact, args.batch)}
            for index in ("FLAT", "HNSW") if args.hnsw else ("FLAT",):
                if not args.no_lite:
                    runs[f"milvus-lite {index}"] = measure(f"milvus-lite:{tmp}/{index}.db", x, q, exact, args.batch,
                                                           index=index, hold_s=60)
                if args.server:
                    spec = f"{args.server.rstrip('/')}/bench_{uuid.uuid4().hex[:8]}_{index}"
                    runs[f"milvus server {index}"] = measure(spec, x, q, exact, args.batch, index=index)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        ref = runs["faiss"]
        for name, r in runs.items():
            print(f"{n:>8} {name:<19} {r['insert_per_s']:>9.0f} {r['p50']:>10.2f} {r['p95']:>6.2f} {r['id50']:>12.2f} "
                  f"{r['id95']:>6.2f} {r['recall']:>8.3f}  {r['p50'] / ref['p50']:.1f}x, {r['id50'] / ref['id50']:.1f}x, "
                  f"{r['insert_per_s'] / ref['insert_per_s']:.2f}x", flush=True)
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
