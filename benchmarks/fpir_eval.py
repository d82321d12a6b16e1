"""Check the shipped FPIR table on the held-out (evaluation) part of the stranger cohort.

    .venv/bin/python benchmarks/fpir_eval.py [--backbone sface] [--draws 20] [--sizes 5,30,60] [--classifier-draws 5]

For each gallery size N, `--draws` random galleries of N evaluation people are built in a real
gallery (5 photos of each enrolled, the rest of their photos are probes); strangers are every
photo of the evaluation people not enrolled. Each face is named by the project's own decision
code (`recognizer.decision.decide`, the kNN vote identify uses) at the threshold the table gives
for a target FPIR of 0.01 at that N, and at the old fixed 0.43. FPIR and DIR are pooled over the
draws; "predicted" is the table's FPIR at the threshold used.

With --classifier-draws, a cosine classifier (the estimator finetune.py's head is) is trained
on each of the first draws' enrolled faces, and the combined decision is scored beside kNN: as
identify runs it (rejection by the kNN similarity of the chosen person), and with the
classifier's probability of the chosen person as a second test, at the same DIR as kNN.

With --quality, the quality floor (recognizer.quality) is scored instead, on every face of the part
(label cleaning would drop the very faces too poor to match): enrolled photos are drawn among faces
above the floor (enrolment refuses the others), and every probe and stranger is decided as identify
decides it (a face under the floor is never named) and with no floor. Both are compared at t* and
at equal DIR (each at the highest threshold that keeps the floor's DIR at t*); `--norm-floors`
adds stricter floors on SFace's vector length beside the shipped one.

    .venv/bin/python benchmarks/fpir_eval.py --quality [--draws 20] [--sizes 5,30,60] [--norm-floors 8,9]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from recognizer.cli._options import passive_openmp

FIXED = 0.43
ENROLLED = 5


def build_gallery(path: Path, emb: np.ndarray, people: np.ndarray, model_id: str):
    from gallery import FaceRecord, create_gallery  # after passive_openmp() (faiss, torch)

    gal = create_gallery(path, model_id=model_id, dim=emb.shape[1])
    records = [FaceRecord(str(p), "cohort", f"{i:064x}", (0.0, 0.0, 1.0, 1.0)) for i, p in enumerate(people)]
    if len(records):
        gal.add(emb, records, model_id=model_id)
    return gal


def rates(names, sims, labels, t, extra=None):
    named = np.array([n is not None for n in names]) & (sims >= t)
    if extra is not None:
        named &= extra
    correct = named & np.array([n == lab for n, lab in zip(names, labels)])
    return named, correct


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="sface")
    ap.add_argument("--cohort", default=None)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--sizes", default="5,30,60")
    ap.add_argument("--target", type=float, default=0.01)
    ap.add_argument("--classifier-draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", action="store_true", help="score the quality floor against no floor at equal DIR")
    ap.add_argument("--norm-floors", type=lambda v: [float(x) for x in v.split(",") if x], default=[8.0, 9.0],
                    help="with --quality: stricter floors on SFace's vector length to score beside the shipped one")
    args = ap.parse_args()
    passive_openmp()
    logging.basicConfig(level=logging.WARNING)

    from recognizer.cache import CropCache  # after passive_openmp() (faiss, torch)
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import make_embedder
    from recognizer.evaluation.calibration import cohort_part
    from recognizer.evaluation.cohort import default_cohort_dir
    from recognizer.fpir import shipped_table
    from recognizer.pipeline import FacePipeline

    embedder = make_embedder(args.backbone)
    table = shipped_table(embedder.model_id)
    if table is None:
        raise SystemExit(f"no shipped FPIR table for {embedder.model_id}: run benchmarks/calibrate_fpir.py first")
    root = Path(args.cohort) if args.cohort else default_cohort_dir()

    pipeline = FacePipeline(Detector(), embedder, CropCache())
    if args.quality:  # every face: label cleaning drops exactly the faces too poor to match their own photos
        quality_run(args, *quality_faces(pipeline, root), table, embedder.model_id, np.random.default_rng(args.seed))
        return
    faces, cleaning = cohort_part(pipeline, root, "evaluation", progress=True)
    people = np.unique(faces.people)
    print(f"evaluation part: {len(people)} people, {len(faces.people)} faces ({faces.n_no_face} photos without a face, "
          f"{cleaning.dropped} mislabelled photos dropped, same-person groups {cleaning.same_person})")
    rng = np.random.default_rng(args.seed)
    rows, clf_rows = [], []
    for n in [int(v) for v in args.sizes.split(",")]:
        t_star = table.threshold_for(args.target, n, ENROLLED)
        agg = {"t": {"s": 0, "fp": 0, "k": 0, "ok": 0, "per_draw": []}, "fixed": {"s": 0, "fp": 0, "k": 0, "ok": 0, "per_draw": []}}
        clf_agg = {key: {"s": 0, "fp": 0, "k": 0, "ok": 0} for key in ("knn", "combined", "combined+p")}
        for draw in range(args.draws):
            one_draw(faces, people, n, rng, embedder.model_id, draw < args.classifier_draws, draw, t_star, agg, clf_agg)
        for key, t in (("t", t_star), ("fixed", FIXED)):
            a = agg[key]
            rows.append((n, key, t, a["fp"] / a["s"], float(np.std(a["per_draw"])), a["ok"] / max(a["k"], 1),
                         table.expected_fpir(t, n, ENROLLED), table.expected_fnir(t, ENROLLED), a["s"], a["k"]))
        if args.classifier_draws:
            clf_rows.append((n, clf_agg))
    print_tables(args, rows, clf_rows)


def one_draw(faces, people, n: int, rng, model_id: str, with_classifier: bool, draw: int, t_star: float,
             agg: dict, clf_agg: dict) -> None:
    """One random gallery of `n` people (ENROLLED photos each): its known probes and strangers
    decided, and counted into `agg` (kNN at t* and at the old fixed threshold) and `clf_agg`."""
    from recognizer.decision import decide  # after passive_openmp() (faiss, torch)
    from recognizer.network.head import CosineClassifier


    chosen = set(rng.choice(people, n, replace=False).tolist())
    enrolled_mask = np.zeros(len(faces.people), bool)
    for p in chosen:
        idx = np.flatnonzero(faces.people == p)
        enrolled_mask[rng.choice(idx, min(ENROLLED, len(idx)), replace=False)] = True
    in_gallery = np.isin(faces.people, list(chosen))
    probe = in_gallery & ~enrolled_mask
    stranger = ~in_gallery
    with tempfile.TemporaryDirectory() as tmp:
        gal = build_gallery(Path(tmp) / "g", faces.embeddings[enrolled_mask], faces.people[enrolled_mask], model_id)
        clf = None
        if with_classifier:
            clf = CosineClassifier(seed=draw).fit(faces.embeddings[enrolled_mask], faces.people[enrolled_mask].astype(str))
        q = np.concatenate([np.flatnonzero(probe), np.flatnonzero(stranger)])
        dec = decide(gal, clf, faces.embeddings[q], k=5, model_id=model_id)
        gal.close()
    is_probe = np.arange(len(q)) < probe.sum()
    labels = faces.people[q].astype(str)
    for key, t in (("t", t_star), ("fixed", FIXED)):
        named, correct = rates(dec.names["knn"], dec.similarity["knn"], labels, t)
        a = agg[key]
        a["s"] += int((~is_probe).sum()); a["fp"] += int(named[~is_probe].sum())
        a["k"] += int(is_probe.sum()); a["ok"] += int(correct[is_probe].sum())
        a["per_draw"].append(named[~is_probe].mean())
    if clf is not None:
        clf_agg_draw(clf_agg, dec, labels, is_probe, t_star)


def print_tables(args, rows: list, clf_rows: list) -> None:
    print(f"\n{args.draws} galleries per size, {ENROLLED} photos enrolled per person; target FPIR {args.target}")
    print("| people enrolled | threshold | FPIR measured (sd over draws) | FPIR predicted | DIR measured | 1 - FNIR predicted | stranger trials | known probes |")
    print("|---|---|---|---|---|---|---|---|")
    for n, key, t, fpir, sd, dir_, pred, fnir, ns, nk in rows:
        label = f"{t:.3f} (target {args.target:g})" if key == "t" else f"{t:.2f} (old fixed)"
        print(f"| {n} | {label} | {fpir:.4f} ({sd:.4f}) | {pred:.4f} | {dir_:.4f} | {1 - fnir:.4f} | {ns} | {nk} |")
    if clf_rows:
        print(f"\nclassifier for rejection ({args.classifier_draws} galleries per size): FPIR at the DIR kNN reaches at the target threshold")
        print("| people enrolled | decider | DIR | FPIR | stranger trials |")
        print("|---|---|---|---|---|")
        for n, c in clf_rows:
            for key, a in c.items():
                print(f"| {n} | {key} | {a['ok'] / max(a['k'], 1):.4f} | {a['fp'] / max(a['s'], 1):.4f} | {a['s']} |")


def clf_agg_draw(agg: dict, dec, labels, is_probe, t_star: float) -> None:
    """kNN at t*, combined at the threshold giving kNN's DIR, and combined with the classifier's probability as a second test.

    For the last, the probability floor and the threshold are chosen on this draw's own faces to
    give the lowest FPIR at a DIR no lower than kNN's: an optimistic choice, so if even it does
    not beat kNN, the classifier cannot earn its place in rejection.
    """
    knn_named, knn_ok = rates(dec.names["knn"], dec.similarity["knn"], labels, t_star)
    target_dir = knn_ok[is_probe].mean()
    people = dec.people
    col = {p: j for j, p in enumerate(people)}
    names = dec.names["combined"]
    p_chosen = np.array([dec.scores["classifier"][i, col[nm]] if nm is not None else 0.0 for i, nm in enumerate(names)])
    best = {}
    for key, floors in (("combined", [0.0]), ("combined+p", [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])):
        cand = None
        for floor in floors:
            for t in np.arange(t_star - 0.1, t_star + 0.1001, 0.0025):
                named, ok = rates(names, dec.similarity["combined"], labels, t, p_chosen >= floor)
                if ok[is_probe].mean() + 1e-12 < target_dir:
                    continue
                fp = named[~is_probe].mean()
                if cand is None or fp < cand[0]:
                    cand = (fp, named, ok)
        best[key] = cand
    for key, named, ok in (("knn", knn_named, knn_ok), ("combined", *best["combined"][1:]), ("combined+p", *best["combined+p"][1:])):
        a = agg[key]
        a["s"] += int((~is_probe).sum()); a["fp"] += int(named[~is_probe].sum())
        a["k"] += int(is_probe.sum()); a["ok"] += int(ok[is_probe].sum())


def quality_faces(pipeline, root):
    """(faces, people) of the evaluation part, label groups merged, no photo dropped."""
    from recognizer.evaluation.calibration import split_people  # after passive_openmp() (faiss, torch)
    from recognizer.evaluation.cohort import embed_cohort, merge_people

    chosen, groups = split_people(root, "evaluation")
    faces = merge_people(embed_cohort(pipeline, root, chosen, progress=True), groups)
    print(f"evaluation part: {len(np.unique(faces.people))} people, {len(faces.people)} faces ({faces.n_no_face} photos without a face)")
    return faces, np.unique(faces.people)


def quality_run(args, faces, people, table, model_id: str, rng) -> None:
    """Per gallery size and floor: DIR and FPIR at t* with the floor and without it, and both FPIRs at equal DIR."""
    from recognizer.decision import decide  # after passive_openmp() (faiss, torch)

    low = faces.low
    norm = np.array([q.signals.get("norm", np.inf) for q in faces.quality])
    floors = [("shipped floor", low)] + [(f"norm < {f:g} too", low | (norm < f)) for f in args.norm_floors]
    print(f"\n{args.draws} galleries per size, {ENROLLED} photos enrolled per person (above the shipped floor), "
          f"every face of the part (no label cleaning); target FPIR {args.target}")
    print("| people enrolled | t* | floor | faces under it | DIR at t*: floor / none | FPIR at t*: floor / none | "
          "at equal DIR (the floor's at t*): FPIR floor / none | stranger trials |")
    print("|---|---|---|---|---|---|---|---|")
    for n in [int(v) for v in args.sizes.split(",")]:
        t_star = table.threshold_for(args.target, n, ENROLLED)
        pool = {"sim": [], "ok": [], "probe": [], "q": []}
        for _ in range(args.draws):
            chosen = set(rng.choice(people, n, replace=False).tolist())
            enrolled = np.zeros(len(faces.people), bool)
            for p in chosen:
                idx = np.flatnonzero((faces.people == p) & ~low)
                enrolled[rng.choice(idx, min(ENROLLED, len(idx)), replace=False)] = True
            probe = np.isin(faces.people, list(chosen)) & ~enrolled
            q = np.concatenate([np.flatnonzero(probe), np.flatnonzero(~np.isin(faces.people, list(chosen)))])
            with tempfile.TemporaryDirectory() as tmp:
                gal = build_gallery(Path(tmp) / "g", faces.embeddings[enrolled], faces.people[enrolled], model_id)
                dec = decide(gal, None, faces.embeddings[q], k=5, model_id=model_id)
                gal.close()
            names = dec.names["knn"]
            pool["sim"].append(np.where([nm is not None for nm in names], dec.similarity["knn"], -1.0))
            pool["ok"].append(np.array([nm == lab for nm, lab in zip(names, faces.people[q].astype(str))]))
            pool["probe"].append(np.arange(len(q)) < probe.sum())
            pool["q"].append(q)
        sim, ok, is_probe, q = (np.concatenate(pool[k]) for k in ("sim", "ok", "probe", "q"))
        for label, mask in floors:
            fl = floor_rates(sim, ok, is_probe, mask[q], t_star)
            print(f"| {n} | {t_star:.3f} | {label} | {int(mask.sum())} | {fl[0]:.4f} / {fl[1]:.4f} | {fl[2]:.4f} / {fl[3]:.4f} | "
                  f"{fl[4]:.4f} / {fl[5]:.4f} | {int((~is_probe).sum())} |")


def floor_rates(sim, ok, is_probe, lowq, t_star: float) -> tuple:
    """(DIR at t* with the floor, without it, FPIR at t* with, without, and FPIR with and without at equal DIR: each
    run at the highest threshold whose DIR is still the floor's DIR at t*)."""
    def rates(t: float, floor: bool) -> tuple[float, float]:
        named = (sim >= t) & (~lowq if floor else True)
        return float((named & ok)[is_probe].mean()), float(named[~is_probe].mean())

    grid = np.arange(t_star, 1.0, 0.0005)
    (dir_q, fpir_q), (dir_0, fpir_0) = rates(t_star, True), rates(t_star, False)

    def at_equal_dir(floor: bool) -> float:
        return rates(max(t for t in grid if rates(t, floor)[0] >= dir_q), floor)[1]

    return dir_q, dir_0, fpir_q, fpir_0, at_equal_dir(True), at_equal_dir(False)


if __name__ == "__main__":
    main()
