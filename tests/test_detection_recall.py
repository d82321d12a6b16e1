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

from recognizer.detection.boxes import iou_matrix

BASELINE = Path(__file__).parent / "data" / "detections_baseline.json"


def test_iou_helper():
    """The project's one IoU (`detection.boxes.iou_matrix`, used here, by video tracking and by
    chips found again in their photos), against values worked out by hand."""
    a = np.array([[0, 0, 10, 10], [0, 0, 4, 4]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [2, 2, 12, 12], [1, 1, 3, 3]], float)
    want = [[1.0, 50 / 150, 0.0, 64 / 136, 4 / 100],
            [16 / 100, 0.0, 0.0, 4 / 112, 4 / 16]]
    got = iou_matrix(a, b)
    assert got.shape == (2, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(iou_matrix(b, a), np.transpose(want), rtol=0, atol=1e-12)  # symmetric
    # One box (4,) against none, and empty (zero-area) boxes: no division by zero, IoU 0.
    assert iou_matrix([0, 0, 10, 10], np.zeros((0, 4))).shape == (1, 0)
    assert iou_matrix([[3, 3, 3, 3]], [[3, 3, 3, 3]]).tolist() == [[0.0]]


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
        best = iou_matrix(want, got).max(axis=1) if len(got) else np.zeros(len(want))
        missed += [(path, want[i].tolist(), round(float(best[i]), 2)) for i in np.flatnonzero(best < 0.5)]
    assert not missed, missed
    # New faces are allowed (a face the old set-up missed), but not a flood of false ones.
    extra = sum(len(f) for f in found) - sum(len(v) for v in baseline.values())
    assert extra <= 5, extra


def test_pyramid_drops_only_levels_for_faces_below_the_smallest(detector):
    from dataclasses import replace

    from recognizer.detection.mtcnn import Detector

    everything = Detector(replace(detector.settings, min_face_fraction=0.0)).pyramid(1600, 900)
    kept = detector.pyramid(1600, 900)
    assert kept == everything[len(everything) - len(kept) :] and len(kept) < len(everything)
    smallest = detector.settings.smallest_face(1600, 900)  # 5% of 900 px
    assert 12 / kept[0] <= smallest < 12 / kept[1]
    # Small photos keep the whole pyramid: the 20-pixel floor applies.
    assert detector.pyramid(300, 300) == Detector(replace(detector.settings, min_face_fraction=0.0)).pyramid(300, 300)


def test_candidate_crops_equal_torch_area_resampling(data):
    """The vectorised crops of the second and third stages are facenet-pytorch's per-box
    `interpolate(mode="area")` of the box clipped to its photo: boxes inside, across the edges,
    smaller than the output (upsampled), wider than tall, and enough boxes of one photo (1400 at
    24x24) that the gather runs in several calls."""
    import torch
    from PIL import Image
    from torch.nn.functional import interpolate

    from recognizer.detection.mtcnn import _crop_boxes, _summed_area

    src = Image.open(data / "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg").convert("RGB")
    arr = np.array(src.resize((320, 240)))
    rng = np.random.default_rng(0)
    n = 1400
    x1 = rng.uniform(-40, 330, n)
    y1 = rng.uniform(-40, 250, n)
    side = rng.uniform(3, 200, (n, 2))
    boxes = torch.tensor(np.c_[x1, y1, x1 + side[:, 0], y1 + side[:, 1], rng.uniform(0, 1, n)], dtype=torch.float32)
    # More boxes than one gather takes at 24x24.
    for size in (24, 48):
        got, keep = _crop_boxes(_summed_area(arr), boxes.numpy(), size)
        b = boxes[:, :4].trunc().int().numpy()
        want, kept = [], []
        for i, (bx1, by1, bx2, by2) in enumerate(b):
            x, y = max(bx1, 1), max(by1, 1)
            ex, ey = min(bx2, 320), min(by2, 240)
            kept.append(ey > y - 1 and ex > x - 1)
            if kept[-1]:
                plane = torch.from_numpy(arr).permute(2, 0, 1)[None, :, y - 1 : ey, x - 1 : ex].float()
                want.append((interpolate(plane, size=(size, size), mode="area") - 127.5) * 0.0078125)
        assert keep.tolist() == kept and 0 < sum(kept) < n  # some boxes lie wholly outside
        assert got.shape == (sum(kept), 3, size, size) and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, torch.cat(want).numpy(), atol=1e-6, rtol=0)


def test_thread_count_is_set_in_the_detecting_thread_only(data, detector):
    """A stream detects in worker threads with their own torch thread count, set and restored
    around each call; the count of the thread that started them does not move meanwhile."""
    import threading

    import torch

    from recognizer.detection.networks import torch_threads

    mine = torch.get_num_threads()
    other = mine + 1
    inside, release, seen = threading.Event(), threading.Event(), {}

    def worker():
        before = torch.get_num_threads()
        with torch_threads(other):
            seen["inside"] = torch.get_num_threads()
            inside.set()
            release.wait(10)
        seen["restored"] = torch.get_num_threads() == before

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(10)
    assert torch.get_num_threads() == mine  # while the worker runs with its own count
    release.set()
    t.join()
    assert seen == {"inside": other, "restored": True}
    faces = detector.detect(data / "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg", threads=other)
    assert len(faces) == 6 and torch.get_num_threads() == mine
