"""Build the shipped FPIR table of a backbone from the calibration part of the stranger cohort.

    .venv/bin/python benchmarks/calibrate_fpir.py [--backbone sface] [--cohort DIR] [--make-split]

Embeds every photo of the calibration people (recognizer/evaluation/cohort_split.json) through the
project's own pipeline (crops cached in ~/.cache/facetool, so a rerun skips detection), drops
mislabelled photos (`recognizer.evaluation.cohort.clean_labels`), and writes
recognizer/fpir_tables/<model id>.json: numbers only. It prints the thresholds the table gives
for a target FPIR of 0.01 at a few gallery sizes.

--make-split embeds the whole cohort, finds label groups that are one person, and writes the
split (2/3 calibration, 1/3 evaluation, by person, seed 17). It was run once; the split is committed.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from recognizer.cli._options import passive_openmp

SEED = 17


def make_split(faces, out: Path) -> None:
    from facecore.atomic import write_json_atomic
    from recognizer.evaluation.cohort import clean_labels

    cleaning = clean_labels(faces)
    group_of = {p: g[0] for g in cleaning.same_person for p in g}
    units = sorted({group_of.get(p, p) for p in set(faces.people)})
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(units))
    n_eval = len(units) // 3
    eval_units = {units[i] for i in order[:n_eval]}
    members = {u: sorted([p for p in set(faces.people) if group_of.get(p, p) == u]) for u in units}
    calibration = sorted(p for u in units if u not in eval_units for p in members[u])
    evaluation = sorted(p for u in eval_units for p in members[u])
    write_json_atomic(out, {
        "about": "Stranger cohort split by person (folder names of cohort-celeba): the shipped FPIR tables are built from "
                 "'calibration' alone, 'evaluation' is held out. 'same_person' lists label groups whose faces match like one "
                 "person's (benchmarks/calibrate_fpir.py --make-split, sface): they are one person everywhere and stay on one side.",
        "seed": SEED,
        "same_person": cleaning.same_person,
        "calibration": calibration,
        "evaluation": evaluation,
    })
    print(f"split: {len(calibration)} calibration, {len(evaluation)} evaluation labels; same person: {cleaning.same_person}; "
          f"{cleaning.dropped} photos look like another label's person")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="sface")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--cohort", default=None, help="cohort folder (default: FACETOOL_COHORT or ../shared/data/cohort-celeba)")
    ap.add_argument("--make-split", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    passive_openmp()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    from recognizer.cache import CropCache
    from recognizer.evaluation.calibration import calibrate
    from recognizer.evaluation.cohort import SPLIT_FILE, default_cohort_dir, embed_cohort
    from recognizer.detection.mtcnn import Detector
    from recognizer.embedding.backbones import make_embedder
    from recognizer.fpir import DEFAULT_TARGET_FPIR, TABLE_DIR, table_path
    from recognizer.pipeline import FacePipeline

    root = Path(args.cohort) if args.cohort else default_cohort_dir()
    embedder = make_embedder(args.backbone, args.weights)
    pipe = FacePipeline(Detector(), embedder, CropCache())
    if args.make_split:
        make_split(embed_cohort(pipe, root, progress=True), SPLIT_FILE)
        return
    table, cleaning = calibrate(pipe, root, progress=True)
    TABLE_DIR.mkdir(exist_ok=True)
    path = table_path(embedder.model_id)
    table.save(path)
    print(f"{args.backbone} ({embedder.model_id}): {table.cohort}")
    print(f"wrote {path.relative_to(Path(__file__).resolve().parent.parent)}")
    print(f"| people enrolled | faces each | threshold for FPIR <= {DEFAULT_TARGET_FPIR} | expected FNIR there |")
    print("|---|---|---|---|")
    for n in (1, 5, 30, 60, 100, 158, 1000):
        for k in (1, 5):
            t = table.threshold_for(DEFAULT_TARGET_FPIR, n, k)
            print(f"| {n} | {k} | {t:.3f} | {table.expected_fnir(t, k):.3f} |")
    for t in (0.43, 0.50):
        print(f"expected FPIR at {t} with 5 faces each: " + ", ".join(
            f"N={n}: {table.expected_fpir(t, n, 5):.4f}" for n in (5, 30, 100, 158)))


if __name__ == "__main__":
    main()
