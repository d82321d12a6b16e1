"""How the default unknown threshold of each backbone was chosen: similarities of labelled pairs.

    .venv/bin/python benchmarks/calibrate_threshold.py [--backbone sface] [--weights vggface2]

Reads deepface-test-dataset/master.csv (300 labelled pairs) and prints the same-person and
different-person cosine similarity ranges, the equal-error-rate threshold, and the threshold
that keeps the false-accept rate at 1% and 0.1%.
"""
from __future__ import annotations

import argparse

import numpy as np

from recognizer.cli._options import passive_openmp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="sface")
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    passive_openmp()

    from sklearn.metrics import roc_auc_score, roc_curve

    from recognizer.cache import CropCache
    from recognizer.sample_data import data_dir, pair_similarities
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import make_embedder
    from recognizer.modeldir.config import DEFAULT_THRESHOLDS
    from recognizer.pipeline import FacePipeline

    pipe = FacePipeline(Detector(), make_embedder(args.backbone, args.weights), CropCache())
    sims, same, _ = pair_similarities(pipe, data_dir())
    sims, same = np.array(sims), np.array(same)
    fpr, tpr, thr = roc_curve(same, sims)
    eer_i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    print(f"backbone {args.backbone}: {len(sims)} pairs ({same.sum()} same-person), AUC {roc_auc_score(same, sims):.4f}")
    print(f"same-person similarity:      min {sims[same].min():.3f}  median {np.median(sims[same]):.3f}")
    print(f"different-person similarity: max {sims[~same].max():.3f}  median {np.median(sims[~same]):.3f}")
    print(f"equal-error-rate threshold {thr[eer_i]:.3f} (EER {fpr[eer_i]:.3f})")
    diff = np.sort(sims[~same])
    for far in (1e-2, 1e-3):
        t = diff[min(len(diff) - 1, int(np.ceil(len(diff) * (1 - far))))]
        print(f"threshold for FAR <= {far:g}: {t:.3f}  (true accepts {np.mean(sims[same] > t):.3f})")
    print(f"middle of the gap between the classes: {(sims[~same].max() + sims[same].min()) / 2:.3f}")
    d = DEFAULT_THRESHOLDS.get(args.backbone)
    if d is not None:
        print(f"default threshold {d}: false accepts {np.mean(sims[~same] >= d):.4f}, true accepts {np.mean(sims[same] >= d):.3f}")


if __name__ == "__main__":
    main()
