"""Issue 30, item 5: do quality-weighted templates or mirrored embeddings raise DIR at a fixed FPIR?

    .venv/bin/python benchmarks/template_eval.py [--part evaluation] [--draws 50] [--enrolled 1,3] [--fpir 0.01]

On one part of the stranger cohort (crops held in memory only), each draw enrols half of the people
with `--enrolled` photos each (drawn among faces above the quality floor, as enrolment does); their
other photos are known probes, every photo of the other half is a stranger. A probe is named by its
closest enrolled person; the threshold is the one giving the target FPIR on the pooled strangers;
DIR = probes named correctly at it. Compared: plain vectors and the nearest enrolled face (what
identify's kNN vote reduces to here), the same with each face embedded as the mean of it and its
mirror image, and, with several photos, a per-person template (mean of the person's vectors,
weighted by quality score or not).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from recognizer.cli._options import passive_openmp


def l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def dir_at_fpir(best_sim: np.ndarray, correct: np.ndarray, is_probe: np.ndarray, fpir: float) -> float:
    """DIR at the threshold where the pooled strangers' share named is `fpir`."""
    t = float(np.quantile(best_sim[~is_probe], 1.0 - fpir))
    return float(((best_sim > t) & correct)[is_probe].mean())


def score_draw(vec: np.ndarray, people: np.ndarray, enrolled: np.ndarray, probes: np.ndarray, weights, mode: str):
    """(best similarity, correct flag) of each query (probes then strangers) against the enrolled faces."""
    gal_people = people[enrolled]
    G = vec[enrolled]
    if mode != "nearest":
        names = np.unique(gal_people)
        w = weights[enrolled] if mode == "weighted" else np.ones(len(G))
        G = l2n(np.stack([(G[gal_people == p] * w[gal_people == p, None]).sum(0) for p in names]))
        gal_people = names
    q = np.concatenate([np.flatnonzero(probes), np.flatnonzero(~np.isin(people, gal_people))])
    S = vec[q] @ G.T
    j = S.argmax(1)
    return S[np.arange(len(q)), j], gal_people[j] == people[q], np.arange(len(q)) < probes.sum()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="evaluation", choices=["calibration", "evaluation"])
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--enrolled", default="1,3")
    ap.add_argument("--fpir", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    passive_openmp()
    logging.basicConfig(level=logging.WARNING)
    from recognizer.cache import CropCache  # after passive_openmp() (faiss, torch)
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import make_embedder
    from recognizer.evaluation.calibration import split_people
    from recognizer.evaluation.cohort import cohort_photos, default_cohort_dir, merge_people, CohortFaces
    from recognizer.pipeline import FacePipeline

    embedder = make_embedder("sface")
    pipe = FacePipeline(Detector(), embedder, CropCache())
    root = default_cohort_dir()
    chosen, groups = split_people(root, args.part)
    paths, labels = cohort_photos(root, chosen)
    emb, crops, who, quality = [], [], [], []
    for res, label in zip(pipe.analyze_many(paths, progress=True), labels):
        if res.error is None and res.faces:
            emb.append(res.embeddings[0]); crops.append(res.crops[0]); who.append(label); quality.append(res.quality[0])
    faces = merge_people(CohortFaces(np.stack(emb), np.array(who, dtype=object), len(paths), 0, quality), groups)
    plain = faces.embeddings
    mirrored = l2n(plain + embedder.embed(np.ascontiguousarray(np.stack(crops)[:, :, ::-1])))
    del crops
    weights = np.array([q.score for q in faces.quality])
    people, low = faces.people, faces.low
    names = np.unique(people)
    print(f"{args.part} part: {len(people)} faces of {len(names)} people; {args.draws} draws, half the people enrolled, "
          f"target FPIR {args.fpir}")
    print("| photos enrolled per person | method | DIR at the target FPIR (sd over draws) |\n|---|---|---|")
    rng = np.random.default_rng(args.seed)
    for k in [int(v) for v in args.enrolled.split(",")]:
        methods = [("plain, nearest face", plain, "nearest"), ("mirrored, nearest face", mirrored, "nearest")]
        if k > 1:
            methods += [("plain, mean template", plain, "mean"), ("plain, quality-weighted template", plain, "weighted"),
                        ("mirrored, quality-weighted template", mirrored, "weighted")]
        pooled = {m[0]: [] for m in methods}
        for _ in range(args.draws):
            enrolled_people = rng.choice(names, len(names) // 2, replace=False)
            enrolled = np.zeros(len(people), bool)
            for p in enrolled_people:
                idx = np.flatnonzero((people == p) & ~low)
                if len(idx) > k:  # at least one probe left
                    enrolled[rng.choice(idx, k, replace=False)] = True
            probes = np.isin(people, people[enrolled]) & ~enrolled
            for label, vec, mode in methods:
                pooled[label].append(score_draw(vec, people, enrolled, probes, weights, mode))
        for label, rows in pooled.items():
            per = [dir_at_fpir(*r, args.fpir) for r in rows]
            sim, ok, is_probe = (np.concatenate([r[i] for r in rows]) for i in range(3))
            print(f"| {k} | {label} | {dir_at_fpir(sim, ok, is_probe, args.fpir):.4f} ({np.std(per):.4f}) |")


if __name__ == "__main__":
    main()
