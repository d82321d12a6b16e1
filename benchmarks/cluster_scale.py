"""How clustering scales: time and peak memory from 1,000 to 20,000 faces, after embedding.

    .venv/bin/python benchmarks/cluster_scale.py [--sizes 1000,2500,5000,10000,20000] [--cohort]

The machine is shared, so wall time depends on the load (printed); CPU time (all threads
of the process) is what an idle machine's wall time comes close to, on its cores.

Synthetic 128-d embeddings (SFace's size) drawn around random centres: people with 1-20 faces
each, every face at cosine ~0.6 from the others of its person (SFace's same-person pairs on
deepface-test-dataset sit around there) and ~0 from everyone else. Each size runs in a fresh
process, so the peak memory it reports (ru_maxrss growth while clustering) is its own. The
reference, in the same run: scikit-learn's average-linkage AgglomerativeClustering on the dense
cosine distance matrix, at the sizes where that fits (it needs n x n). --cohort also times the
real cohort-celeba faces (all identities, largest face per photo, through the crop cache).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

THRESHOLD = 0.43  # sface's default decision threshold: the linkage threshold at offset 0


def synthetic(n: int, dim: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 21)))
    sizes[-1] -= sum(sizes) - n
    centres = rng.normal(size=(len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(sizes)), sizes)
    X = centres[y] + rng.normal(scale=0.8 / np.sqrt(dim), size=(n, dim))  # cos(face, face') ~ 1 / (1 + 0.64)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


def child(method: str, n: int) -> dict:
    import resource

    import faiss  # noqa: F401  (loaded before the baseline, as the library is in cluster.py)

    from recognizer.clustering.graph import cluster_embeddings
    from recognizer.clustering.metrics import pairwise_scores

    X, y = synthetic(n)
    cluster_embeddings(X[:50], THRESHOLD)  # warm-up: first-call costs are not the clustering's
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "ours":
        labels = cluster_embeddings(X, THRESHOLD)
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                         distance_threshold=1 - THRESHOLD).fit_predict(X)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    pw = pairwise_scores(labels, y)
    return {"method": method, "n": n, "seconds": dt, "cpu": cpu, "peak_mib": peak / 1024, "precision": pw["precision"], "recall": pw["recall"]}


def cohort() -> None:
    from recognizer.cache import CropCache
    from recognizer.clustering.graph import cluster_embeddings
    from recognizer.clustering.metrics import bcubed_scores, pairwise_scores
    from recognizer.sample_data import data_dir
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import make_embedder
    from recognizer.image import list_images
    from recognizer.pipeline import FacePipeline

    people = sorted(p for p in (data_dir() / "cohort-celeba").iterdir() if p.is_dir())
    files, labels = [], []
    for p in people:
        for f in list_images(p):
            files.append(f)
            labels.append(p.name)
    pipe = FacePipeline(Detector(), make_embedder("sface", None), CropCache())
    X, y = [], []
    for res, lab in zip(pipe.analyze_many(files, progress=True), labels):
        if res.error is None and len(res.faces):
            X.append(res.embeddings[0])
            y.append(lab)
    X = np.stack(X)
    t0 = time.perf_counter()
    lab = cluster_embeddings(X, THRESHOLD)
    dt = time.perf_counter() - t0
    pw, bc = pairwise_scores(lab, np.array(y)), bcubed_scores(lab, np.array(y))
    print(f"real cohort: {len(X)} faces of {len(set(y))} people clustered in {dt:.2f} s; pairwise P {pw['precision']:.4f} "
          f"R {pw['recall']:.4f}, BCubed P {bc['precision']:.4f} R {bc['recall']:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,2500,5000,10000,20000")
    ap.add_argument("--reference-max", type=int, default=5000, help="largest size the dense reference runs at")
    ap.add_argument("--cohort", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    import os

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = {}
    for n in [int(v) for v in args.sizes.split(",")]:
        for method in ("dense", "ours") if n <= args.reference_max else ("ours",):
            out = subprocess.run([sys.executable, __file__, "--child", method, str(n)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[(method, n)] = r
            ref = rows.get(("dense", n))
            vs = f"  dense reference: {ref['cpu'] / r['cpu']:.1f}x the CPU time, {ref['peak_mib'] / max(r['peak_mib'], 0.1):.1f}x the memory" if method == "ours" and ref else ""
            print(f"{method:>5} n={n:6d}: {r['seconds']:7.2f} s wall, {r['cpu']:6.2f} s CPU  peak +{r['peak_mib']:7.1f} MiB ({1024 * r['peak_mib'] / n:6.1f} KiB/face)  "
                  f"pairwise P {r['precision']:.4f} R {r['recall']:.4f}{vs}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    if args.cohort:
        cohort()


if __name__ == "__main__":
    main()
