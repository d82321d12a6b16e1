"""Benchmark: exact vs approximate FAISS search for the gallery's index choice.

For each size N it builds N random 512-d unit vectors, then compares exact search
(IndexFlatIP) with the approximate indexes chosen by --methods:
  ivf     IVF-Flat (k-means coarse quantizer), --nprobe
  ivfpq   IVF + 4-bit PQ fast-scan codes, re-ranked exactly from the float vectors, --nprobe
  hnsw    HNSW-Flat, --ef-search (--hnsw-save / --hnsw-load: build once, re-measure later)
  lsh     512-bit sign codes after a random rotation (SimHash), scanned by Hamming distance,
          the best k*k_factor re-ranked exactly from the float vectors, --k-factor
  pqfs    4-bit PQ fast-scan codes over all vectors, re-ranked exactly, --k-factor
          (the gallery's approximate index, gallery/_index.py; it uses k_factor 10)
on
  * "near" queries: a stored vector plus gaussian noise, re-normalised, so the query
    has cosine ~--near-sim with its source (a new photo of an enrolled person), and
  * "random" queries: random unit vectors (a stranger; worst case for any ANN index,
    as in 512-d all random similarities are nearly equal).
Reported: build time, index bytes, process RSS, per-query latency (one query per
call) and per-query time in one batched call, and recall@1 against exact search.

    python benchmarks/gallery_search.py --sizes 10000 100000 1000000 --queries 1000
    python benchmarks/gallery_search.py --sizes 1000000 --methods lsh hnsw --hnsw-load /tmp/hnsw-{n}.faiss
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import faiss
import numpy as np


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def index_bytes(index: faiss.Index) -> int:
    # Written to disk rather than serialize_index: at 1e6 that would copy 2 GB in RAM.
    with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR"), delete=True) as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


def unit_rows(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s:s + len(block)] = block
    return out


def near_queries(rng: np.random.Generator, base: np.ndarray, nq: int, sim: float) -> np.ndarray:
    dim = base.shape[1]
    # |noise|^2 ~= dim*sigma^2, so cos(query, source) ~= 1/sqrt(1 + dim*sigma^2).
    sigma = np.sqrt((1.0 / sim**2 - 1.0) / dim)
    src = rng.integers(0, len(base), nq)
    q = base[src] + rng.normal(0, sigma, (nq, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


def time_search(index: faiss.Index, q: np.ndarray, k: int, n_single: int) -> tuple[float, float, np.ndarray]:
    """(median ms of one query per call, ms per query in one batch, batch ids).

    The median, not the mean: on a shared machine a few calls are descheduled."""
    index.search(q[:1], k)  # warm-up: the first call pays for thread-pool start-up
    times = []
    for i in range(n_single):
        t0 = time.perf_counter()
        index.search(q[i:i + 1], k)
        times.append(time.perf_counter() - t0)
    single = float(np.median(times)) * 1000
    t0 = time.perf_counter()
    _, ids = index.search(q, k)
    batch = (time.perf_counter() - t0) * 1000 / len(q)
    return single, batch, ids


def build_ivf(xb: np.ndarray, nlist: int) -> faiss.Index:
    dim = xb.shape[1]
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    # 39 points per centroid is faiss's minimum for stable k-means; more costs minutes at 1e6.
    rng = np.random.default_rng(1)
    sample = xb[rng.choice(len(xb), min(len(xb), 39 * nlist), replace=False)]
    index.train(sample)
    index.add_with_ids(xb, np.arange(len(xb), dtype=np.int64))
    return index


def build_hnsw(xb: np.ndarray, m: int, ef_construction: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(xb.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(xb)
    return index


def build_refined(base: faiss.Index, xb: np.ndarray, n_train: int = 65_536) -> faiss.IndexRefine:
    """`base` finds k*k_factor candidates, which are re-ranked with the exact float vectors."""
    flat = faiss.IndexFlatIP(xb.shape[1]) if base.metric_type == faiss.METRIC_INNER_PRODUCT \
        else faiss.IndexFlatL2(xb.shape[1])
    index = faiss.IndexRefine(base, flat)
    index.own_fields = index.own_refine_index = True
    base.this.disown()
    flat.this.disown()
    rng = np.random.default_rng(1)
    index.train(xb[np.sort(rng.choice(len(xb), min(len(xb), n_train), replace=False))])
    index.add(xb)
    return index


def build_lsh(xb: np.ndarray, nbits: int) -> faiss.IndexRefine:
    # rotate_data: a random orthogonal rotation first, so each bit is a random hyperplane
    # (SimHash) whatever the embedding's axes; no thresholds learnt from the data.
    return build_refined(faiss.IndexLSH(xb.shape[1], nbits, True, False), xb)


def build_pqfs(xb: np.ndarray, m: int) -> faiss.IndexRefine:
    return build_refined(faiss.IndexPQFastScan(xb.shape[1], m, 4, faiss.METRIC_INNER_PRODUCT), xb)


def build_ivfpq(xb: np.ndarray, nlist: int, m: int) -> faiss.IndexRefine:
    dim = xb.shape[1]
    quantizer = faiss.IndexFlatIP(dim)
    base = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
    base.own_fields = True
    quantizer.this.disown()
    return build_refined(base, xb, n_train=39 * nlist)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000, help="queries per kind (batched)")
    ap.add_argument("--single", type=int, default=100, help="queries timed one call each")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--near-sim", type=float, nargs="+", default=[0.6, 0.8],
                    help="cosine of a near query with its source (one recall column each)")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef-construction", type=int, default=40)
    ap.add_argument("--hnsw-max-size", type=int, default=1_000_000, help="skip HNSW above this size (slow build)")
    ap.add_argument("--hnsw-save", help="write the HNSW index here ({n} = size) to re-measure without a rebuild")
    ap.add_argument("--hnsw-load", help="read the HNSW index from here ({n} = size) instead of building it")
    ap.add_argument("--lsh-bits", type=int, default=512)
    ap.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantizers (4 bits each)")
    ap.add_argument("--k-factor", type=int, nargs="+", default=[2, 10],
                    help="re-ranked candidates = k * k_factor (lsh, pqfs)")
    ap.add_argument("--ivfpq-k-factor", type=int, default=10)
    ap.add_argument("--nlist-factor", type=float, default=2.0, help="IVF nlist = factor * sqrt(N)")
    ap.add_argument("--methods", nargs="+", default=["ivf", "hnsw", "pqfs"],
                    choices=["ivf", "ivfpq", "hnsw", "lsh", "pqfs"])
    return ap.parse_args()


class Size:
    """One gallery size: its vectors, its queries, exact search's answers and timings, and the
    table rows measured so far (`report` adds one per index setting)."""

    def __init__(self, n: int, args: argparse.Namespace, k: int, rows: list[str]) -> None:
        rng = np.random.default_rng(n)
        self.n, self.k, self.rows = n, k, rows
        self.xb = unit_rows(rng, n, args.dim)
        self.qns = [near_queries(rng, self.xb, args.queries, s) for s in args.near_sim]
        self.qr = unit_rows(rng, args.queries, args.dim)
        self.n_single = min(args.single, args.queries)
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(self.xb)
        build = time.perf_counter() - t0
        self.e1, self.eb, _ = time_search(flat, self.qns[0], k, self.n_single)
        self.gts = [flat.search(q, k)[1] for q in self.qns]
        _, _, self.gt_rand = time_search(flat, self.qr, k, 1)
        rows.append(f"{n:>8} {'FlatIP (exact)':<22} {build:>8.1f} {index_bytes(flat) / 2**20:>7.0f} "
                    f"{rss_mib():>8.0f} {self.e1:>8.3f} {self.eb:>9.4f} {1.0:>10.1f} {1.0:>8.1f} "
                    + " ".join(f"{1.0:>8.3f}" for _ in self.qns) + f" {1.0:>8.3f}")
        print(rows[-1], flush=True)

    def report(self, name: str, index: faiss.Index, build_s: float, nbytes: int) -> None:
        k = self.k
        a1, ab, _ = time_search(index, self.qns[0], k, self.n_single)
        r_near = [float(np.mean(index.search(q, k)[1][:, 0] == gt[:, 0])) for q, gt in zip(self.qns, self.gts)]
        _, _, ids_r = time_search(index, self.qr, k, 1)
        r_rand = float(np.mean(ids_r[:, 0] == self.gt_rand[:, 0]))
        self.rows.append(f"{self.n:>8} {name:<22} {build_s:>8.1f} {nbytes / 2**20:>7.0f} {rss_mib():>8.0f} "
                         f"{a1:>8.3f} {ab:>9.4f} {self.e1 / a1:>10.1f} {self.eb / ab:>8.1f} "
                         + " ".join(f"{r:>8.3f}" for r in r_near) + f" {r_rand:>8.3f}")
        print(self.rows[-1], flush=True)


def bench_ivf(size: Size, args: argparse.Namespace) -> None:
    nlist = int(args.nlist_factor * np.sqrt(size.n))
    t0 = time.perf_counter()
    ivf = build_ivf(size.xb, nlist)
    build = time.perf_counter() - t0
    nbytes = index_bytes(ivf)
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        size.report(f"IVF{nlist} nprobe={nprobe}", ivf, build, nbytes)


def bench_ivfpq(size: Size, args: argparse.Namespace) -> None:
    nlist = int(args.nlist_factor * np.sqrt(size.n))
    t0 = time.perf_counter()
    ivfpq = build_ivfpq(size.xb, nlist, args.pq_m)
    build = time.perf_counter() - t0
    nbytes = index_bytes(ivfpq)
    ivfpq.k_factor = args.ivfpq_k_factor
    for nprobe in args.nprobe:
        faiss.extract_index_ivf(ivfpq.base_index).nprobe = nprobe
        size.report(f"IVF{nlist}PQ{args.pq_m}+R{args.ivfpq_k_factor} np={nprobe}", ivfpq, build, nbytes)


def bench_hnsw(size: Size, args: argparse.Namespace) -> None:
    n = size.n
    t0 = time.perf_counter()
    if args.hnsw_load:
        hnsw = faiss.read_index(args.hnsw_load.format(n=n))
        build = float("nan")  # see the build log of the run that saved it
        print(f"loaded {args.hnsw_load.format(n=n)} in {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        hnsw = build_hnsw(size.xb, args.hnsw_m, args.hnsw_ef_construction)
        build = time.perf_counter() - t0
        if args.hnsw_save:
            faiss.write_index(hnsw, args.hnsw_save.format(n=n))
    nbytes = index_bytes(hnsw)
    m = hnsw.hnsw.nb_neighbors(1)
    for ef in args.ef_search:
        hnsw.hnsw.efSearch = ef
        size.report(f"HNSW{m} ef={ef}", hnsw, build, nbytes)


def bench_refined(size: Size, args: argparse.Namespace, method: str) -> None:
    label = f"LSH{args.lsh_bits}" if method == "lsh" else f"PQ{args.pq_m}x4fs"
    t0 = time.perf_counter()
    refined = build_lsh(size.xb, args.lsh_bits) if method == "lsh" else build_pqfs(size.xb, args.pq_m)
    build = time.perf_counter() - t0
    nbytes = index_bytes(refined)
    for kf in args.k_factor:
        refined.k_factor = kf
        size.report(f"{label}+R k*{kf}", refined, build, nbytes)


def main() -> None:
    args = parse_args()
    k = 5
    print(f"faiss {faiss.__version__} ({faiss.get_compile_options().strip()}), {faiss.omp_get_max_threads()} "
          f"threads, dim {args.dim}, near queries at cos~{args.near_sim}, k={k}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    header = (f"{'N':>8} {'index':<22} {'build s':>8} {'MiB':>7} {'RSS MiB':>8} "
              f"{'1q ms':>8} {'batch ms':>9} {'x exact 1q':>10} {'x batch':>8} "
              + " ".join(f"{'R@1 ' + str(s):>8}" for s in args.near_sim) + f" {'R@1 rand':>8}")
    rows: list[str] = []
    for n in args.sizes:
        size = Size(n, args, k, rows)
        # One index at a time: each is freed (its function returns) before the next is built.
        if "ivf" in args.methods:
            bench_ivf(size, args)
        if "ivfpq" in args.methods:
            bench_ivfpq(size, args)
        if "hnsw" in args.methods and (n <= args.hnsw_max_size or args.hnsw_load):
            bench_hnsw(size, args)
        for method in ("lsh", "pqfs"):
            if method in args.methods:
                bench_refined(size, args, method)
        del size
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n" + header)
    print("\n".join(rows))
    print("x exact 1q / x batch: exact ms per query divided by this index's (one query per call / batched).")


if __name__ == "__main__":
    main()
