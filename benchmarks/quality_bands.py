"""Face quality against recognisability on one part of the stranger cohort (issue 30).

    .venv/bin/python benchmarks/quality_bands.py [--part evaluation] [--threshold 0.43] [--backbone sface]

Every photo's largest face goes through the project's pipeline (detection, crop, embedding and
`recognizer.quality`); every pair of faces is compared at the model's threshold. Printed: how the
false non-match rate (FNMR, same person under the threshold) and the false match rate (FMR, two
people at or over it) of a face's pairs vary with each quality signal, and a table by quality band
of the lower-scoring face of each pair, with each band's share of all errors. The calibration part
chose the levels in `recognizer/quality.py`; the evaluation part reports them
(benchmarks/results/quality-sface.md). Only numbers leave the cohort.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from recognizer.cli._options import passive_openmp

SIGNALS = {"eye_distance": [0, 10, 15, 20, 25, 30, 40, 1e9], "abs_yaw": [0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 9],
           "sharpness": [0, 3, 20, 60, 100, 150, 300, 1e9], "norm": [0, 5.5, 7, 8, 9, 10, 11, 12, 12.5, 99],
           "detection": [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.01]}
BANDS = [0.0, 0.25, 0.4, 0.55, 0.7, 0.85, 1.01]


def per_face(S: np.ndarray, same: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Per face: the share of its same-person pairs under `t` (NaN without one), of its other pairs at or over it."""
    n = len(S)
    mated = same & ~np.eye(n, dtype=bool)
    fn = np.where(mated.sum(1) > 0, ((S < t) & mated).sum(1) / np.maximum(mated.sum(1), 1), np.nan)
    fp = ((S >= t) & ~same).sum(1) / np.maximum((~same).sum(1), 1)
    return fn, fp


def signal_tables(sig: dict[str, np.ndarray], fn: np.ndarray, fp: np.ndarray) -> None:
    for name, edges in SIGNALS.items():
        x = sig[name]
        print(f"\n| {name} | faces | share | FNMR | FMR |\n|---|---|---|---|---|")
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (x >= lo) & (x < hi)
            if m.any():
                print(f"| [{lo:g}, {hi:g}) | {m.sum()} | {m.mean():.3f} | {np.nanmean(fn[m]):.3f} | {fp[m].mean():.5f} |")


def band_table(score: np.ndarray, S: np.ndarray, same: np.ndarray, t: float) -> None:
    iu = np.triu_indices(len(score), 1)
    q = np.minimum(score[iu[0]], score[iu[1]])
    sim, gen = S[iu], same[iu]
    miss, false = (sim < t) & gen, (sim >= t) & ~gen
    face_band = np.digitize(score, BANDS[1:-1])
    print("\n| quality band (lower face of the pair) | share of faces | share of pairs | genuine error (FNMR) | "
          "impostor error (FMR) | share of all false non-matches | share of all false matches |")
    print("|---|---|---|---|---|---|---|")
    for b, (lo, hi) in enumerate(zip(BANDS[:-1], BANDS[1:])):
        m = (q >= lo) & (q < hi)
        g, im = m & gen, m & ~gen
        print(f"| [{lo:g}, {min(hi, 1):g}{']' if hi > 1 else ')'} | {np.mean(face_band == b):.3f} | {m.mean():.3f} | "
              f"{miss[g].sum() / max(g.sum(), 1):.4f} | {false[im].sum() / max(im.sum(), 1):.6f} | "
              f"{miss[g].sum() / max(miss.sum(), 1):.3f} | {false[im].sum() / max(false.sum(), 1):.3f} |")
    print(f"\nall pairs: FNMR {miss.sum() / max(gen.sum(), 1):.4f} ({miss.sum()} of {gen.sum()}), "
          f"FMR {false.sum() / max((~gen).sum(), 1):.6f} ({false.sum()} of {(~gen).sum()})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="evaluation", choices=["calibration", "evaluation"])
    ap.add_argument("--threshold", type=float, default=0.43)
    ap.add_argument("--backbone", default="sface")
    ap.add_argument("--cohort", default=None)
    args = ap.parse_args()
    passive_openmp()
    logging.basicConfig(level=logging.WARNING)

    from recognizer.cache import CropCache  # after passive_openmp() (faiss, torch)
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import make_embedder
    from recognizer.evaluation.calibration import split_people
    from recognizer.evaluation.cohort import default_cohort_dir, embed_cohort, merge_people
    from recognizer.pipeline import FacePipeline

    root = Path(args.cohort) if args.cohort else default_cohort_dir()
    people, groups = split_people(root, args.part)
    faces = merge_people(embed_cohort(FacePipeline(Detector(), make_embedder(args.backbone), CropCache()), root, people,
                                      progress=True), groups)
    sig = {k: np.array([q.signals.get(k, np.nan) for q in faces.quality]) for k in ("eye_distance", "sharpness", "norm", "detection")}
    sig["abs_yaw"] = np.abs([q.signals["yaw"] for q in faces.quality])
    score = np.array([q.score for q in faces.quality])
    S = faces.embeddings @ faces.embeddings.T
    same = faces.people[:, None] == faces.people[None, :]
    print(f"{args.part} part: {len(faces.people)} faces of {len(np.unique(faces.people))} people "
          f"({faces.n_no_face} photos without a face), threshold {args.threshold}; "
          f"{int(faces.low.sum())} faces under the quality floor")
    fn, fp = per_face(S, same, args.threshold)
    signal_tables(sig, fn, fp)
    print("\n| quality score | faces | share | FNMR | FMR |\n|---|---|---|---|---|")
    for lo, hi in zip(BANDS[:-1], BANDS[1:]):
        m = (score >= lo) & (score < hi)
        if m.any():
            print(f"| [{lo:g}, {min(hi, 1):g}) | {m.sum()} | {m.mean():.3f} | {np.nanmean(fn[m]):.3f} | {fp[m].mean():.5f} |")
    band_table(score, S, same, args.threshold)


if __name__ == "__main__":
    main()
