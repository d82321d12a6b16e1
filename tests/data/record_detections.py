"""Record the faces a detector finds in the shared sample photos, as the recall baseline.

    OMP_NUM_THREADS=1 .venv/bin/python tests/data/record_detections.py > tests/data/detections_baseline.json

(One thread: on a shared machine, two OpenMP threads spinning against other processes run
MTCNN many times slower; the thread count does not change which faces are found.)

`detections_baseline.json` was written with the detector as it was before the speed work
(facenet-pytorch MTCNN, min_face_size 20, factor 0.709, whole photo up to 1600 px);
test_detection_recall.py checks that every face recorded there is still found. Re-run this only
to move the baseline on purpose, and say why in the commit.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from recognizer.sample_data import data_dir

# Group photos plus every single-person folder; aligned/ and unlabeled/ are left out (already-cropped faces).
PATTERNS = [
    "face_recognition-examples/group/*",
    "facenet-pytorch-test-images/group/*",
    "deepface-test-dataset/group/*",
    "face_recognition-examples/people/*/*",
    "facenet-pytorch-test-images/people/*/*",
    "deepface-test-dataset/people/*/*",
    "5-celebrity-faces/train/*/*",
    "5-celebrity-faces/val/*/*",
]


def photos(root: Path) -> list[Path]:
    from recognizer.image import IMAGE_SUFFIXES

    return [p for pat in PATTERNS for p in sorted(root.glob(pat)) if p.suffix.lower() in IMAGE_SUFFIXES]


def main() -> None:
    from recognizer.detection.mtcnn import Detector

    root = data_dir()
    det = Detector()
    out = {"settings": "facenet-pytorch MTCNN defaults of recognizer.detection.mtcnn before the speed work", "photos": {}}
    for p in photos(root):
        faces = det.detect(p)
        out["photos"][p.relative_to(root).as_posix()] = [[round(float(v), 1) for v in f.box] for f in faces]
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
