"""The fast detector finds every face the original facenet-pytorch MTCNN set-up found.

tests/data/detections_baseline.json holds the boxes the detector found before the speed work
(see tests/data/record_detections.py) in the shared group and single-person photos; each of
them must be matched by a box of the current detector with IoU >= 0.5.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

BASELINE = Path(__file__).parent / "data" / "detections_baseline.json"


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box in a (n, 4) with each in b (m, 4): (n, m)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_iou_helper():
    a = np.array([[0, 0, 10, 10]], float)
    assert iou(a, np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)).round(3).tolist() == [[1.0, 0.333, 0.0]]


@pytest.fixture(scope="module")
def baseline() -> dict[str, list[list[float]]]:
    return json.loads(BASELINE.read_text())["photos"]


def test_baseline_covers_the_group_photos(baseline, data):
    groups = {p.relative_to(data).as_posix() for d in ("face_recognition-examples", "facenet-pytorch-test-images", "deepface-test-dataset") for p in (data / d / "group").iterdir()}
    assert groups <= set(baseline)
    assert sum(len(baseline[g]) for g in groups) == 19
    assert len(baseline) >= 200


def test_every_baseline_face_is_still_found(baseline, data, detector):
    paths = sorted(baseline)
    found = detector.detect_many([data / p for p in paths])
    missed = []
    for path, faces in zip(paths, found):
        want = np.array(baseline[path], float).reshape(-1, 4)
        if not len(want):
            continue
        got = np.array([f.box for f in faces], float).reshape(-1, 4)
        best = iou(want, got).max(axis=1) if len(got) else np.zeros(len(want))
        missed += [(path, want[i].tolist(), round(float(best[i]), 2)) for i in np.flatnonzero(best < 0.5)]
    assert not missed, missed
    # New faces are allowed (a face the old set-up missed), but not a flood of false ones.
    extra = sum(len(f) for f in found) - sum(len(v) for v in baseline.values())
    assert extra <= 5, extra


def test_detect_many_equals_detect_one_at_a_time(data, detector):
    # Two same-sized photos share a batch; a third size runs alone.
    from PIL import Image

    src = Image.open(data / "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg").convert("RGB")
    imgs = [src.resize((640, 480)), src.resize((640, 480)).transpose(Image.Transpose.FLIP_LEFT_RIGHT), src.resize((800, 420))]
    many = detector.detect_many(imgs)
    for img, faces in zip(imgs, many):
        one = detector.detect(img)
        assert len(one) == len(faces) >= 5
        np.testing.assert_allclose(np.stack([f.box for f in one]), np.stack([f.box for f in faces]), atol=0.05)


def test_pyramid_drops_only_levels_for_faces_below_the_smallest(detector):
    from dataclasses import replace

    from recognizer.detect import Detector

    everything = Detector(replace(detector.settings, min_face_fraction=0.0)).pyramid(1600, 900)
    kept = detector.pyramid(1600, 900)
    assert kept == everything[len(everything) - len(kept) :] and len(kept) < len(everything)
    smallest = detector.settings.smallest_face(1600, 900)  # 5% of 900 px
    assert 12 / kept[0] <= smallest < 12 / kept[1]
    # Small photos keep the whole pyramid: the 20-pixel floor applies.
    assert detector.pyramid(300, 300) == Detector(replace(detector.settings, min_face_fraction=0.0)).pyramid(300, 300)
