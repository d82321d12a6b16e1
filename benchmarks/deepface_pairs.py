"""Lay out deepface-test-dataset's labelled pairs in the LFW format, for `evaluate.py --pairs`.

    .venv/bin/python benchmarks/deepface_pairs.py OUT_DIR [--folds 10] [--per-class 3]

The LFW images are not shipped here; deepface-test-dataset's master.csv has 38 same-person and
261 different-person pairs. This writes OUT_DIR/pairs.txt ("F N", then per fold N matched and N
mismatched pairs, in master.csv order) and OUT_DIR/root/<name>/<name>_0001.jpg symlinks to the
photos (numbered per person in file-name order), so that

    evaluate.py --model DIR --pairs OUT_DIR/pairs.txt --pairs-root OUT_DIR/root

runs the LFW protocol on them. No photo is copied.
"""
from __future__ import annotations

import argparse

from recognizer.sample_data import data_dir, write_deepface_pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=3)
    args = ap.parse_args()
    pairs, root = write_deepface_pairs(args.out_dir, data_dir(), args.folds, args.per_class)
    print(f"--pairs {pairs} --pairs-root {root}")


if __name__ == "__main__":
    main()
