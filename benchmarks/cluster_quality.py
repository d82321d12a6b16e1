"""Clustering quality on real photos: cohort-celeba people mixed with deepface-test-dataset, none enrolled.

    .venv/bin/python benchmarks/cluster_quality.py [--people 60] [--backbone sface]

The subset is fixed: the first N cohort identities in sorted folder order (celeba_07201 onwards,
all their photos) plus every person folder of deepface-test-dataset. Each photo's largest face
is its labelled person (cohort photos may show bystanders too; they have no label and are left
out). Faces are detected and embedded through the project's pipeline (reusing the crop cache),
then clustered with `recognizer.clustering` exactly as cluster.py does, at the linkage threshold
tied to the backbone's default decision threshold, and at a few others for comparison.
Prints pairwise and BCubed precision/recall per setting. Only counts are printed, no paths.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from recognizer.cli._options import passive_openmp


def labelled_photos(data: Path, people: int) -> tuple[list[Path], list[str]]:
    from recognizer.image import list_images

    cohort = sorted(p for p in (data / "cohort-celeba").iterdir() if p.is_dir())[:people]
    deepface = sorted(p for p in (data / "deepface-test-dataset" / "people").iterdir() if p.is_dir())
    files, labels = [], []
    for person in cohort + deepface:
        for f in list_images(person):
            files.append(Path(f))
            labels.append(f"{person.parent.name}/{person.name}")
    return files, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=60, help="cohort identities (the first N by folder name)")
    ap.add_argument("--backbone", default="sface")
    ap.add_argument("--k", type=int, default=None, help="neighbours per face (default: the clustering default)")
    args = ap.parse_args()
    passive_openmp()

    from recognizer.cache import CropCache
    from recognizer.clustering.graph import DEFAULT_K, cluster_embeddings
    from recognizer.clustering.metrics import bcubed_scores, pairwise_scores
    from recognizer.clustering.service import DEFAULT_LINK_OFFSET, link_threshold
    from recognizer.sample_data import data_dir
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import make_embedder
    from recognizer.evaluation.cohort import embed_photos
    from recognizer.modeldir.config import DEFAULT_THRESHOLDS
    from recognizer.pipeline import FacePipeline

    files, labels = labelled_photos(data_dir(), args.people)
    pipe = FacePipeline(Detector(), make_embedder(args.backbone, None), CropCache())
    t0 = time.perf_counter()
    faces = embed_photos(pipe, files, labels, progress=True)
    X, y, no_face = faces.embeddings, faces.people, faces.n_no_face
    print(f"{len(files)} photos of {len(set(labels))} people ({args.people} cohort + "
          f"{len(set(labels)) - args.people} deepface); {len(X)} faces, {no_face} photos without a face; "
          f"detect+embed {time.perf_counter() - t0:.1f} s")
    thr = DEFAULT_THRESHOLDS[args.backbone]
    k = args.k or DEFAULT_K
    print(f"model threshold {thr}; linkage threshold = threshold + offset; k = {k}")
    print(f"{'linkage':>8} {'offset':>7} {'link thr':>8} | {'pair P':>7} {'pair R':>7} | {'BCubed P':>8} {'BCubed R':>8} | clusters singletons")
    for linkage in ("average", "single"):
        for offset in (-0.10, -0.05, 0.0, 0.05, 0.10):
            t = link_threshold(thr, offset)
            lab = cluster_embeddings(X, t, k=k, linkage=linkage)
            pw, bc = pairwise_scores(lab, y), bcubed_scores(lab, y)
            sizes = np.bincount(lab)
            mark = " <- default" if linkage == "average" and offset == DEFAULT_LINK_OFFSET else ""
            print(f"{linkage:>8} {offset:>+7.2f} {t:>8.3f} | {pw['precision']:7.4f} {pw['recall']:7.4f} | "
                  f"{bc['precision']:8.4f} {bc['recall']:8.4f} | {len(sizes):8d} {int(np.sum(sizes == 1)):10d}{mark}")
    t = link_threshold(thr, DEFAULT_LINK_OFFSET)
    print(f"average linkage at {t:.3f}, neighbours per face:")
    for kk in (4, 8, 16, 32, 64):
        lab = cluster_embeddings(X, t, k=kk)
        pw, bc = pairwise_scores(lab, y), bcubed_scores(lab, y)
        print(f"   k={kk:<3d} pairwise P {pw['precision']:.4f} R {pw['recall']:.4f} | BCubed P {bc['precision']:.4f} R {bc['recall']:.4f}"
              + (" <- default" if kk == k else ""))


if __name__ == "__main__":
    main()
