"""Same photo, same result: a photo's faces and embeddings do not depend on the thread count or
on how the photo arrived (alone, in a folder, as bytes).

Every network call of a detection runs on one torch thread, on a split of the work fixed by the
photo alone (recognizer/detection/mtcnn.py, RNET_CHUNK), and the embedders compute each face on its own,
so the answers are bit-identical: they are compared with ==, not with a tolerance, since a
tolerance would be a guess about one CPU's kernels. CI runs this file with torch's AVX-512 kernels
where the CPU has them and again with ATEN_CPU_CAPABILITY=avx2.

The photos are chosen to be sensitive: multi-threaded torch kernels split some reductions by
thread count (ONet's 1152-input Linear on 2 threads, PNet's convolutions on 3 or 4), which moved
the group photos' landmarks; one thread per photo in a folder against every core for a lone
photo made this file fail.
"""
from __future__ import annotations

import numpy as np
import pytest

from recognizer.pipeline import FacePipeline

PHOTOS = [
    "face_recognition-examples/group/barack_obama+joe_biden__obama_and_biden.jpg",
    "face_recognition-examples/group/barack_obama+joe_biden__two_people.jpg",
    "face_recognition-examples/group/kit_harington+rose_leslie__kit_with_rose.jpg",
    "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg",
    "face_recognition-examples/people/barack_obama/examples__obama-1080p.jpg",
]


def faces_array(faces) -> np.ndarray:
    """Every number a face carries (box, landmarks, score), one row per face."""
    return np.array([np.r_[f.box, f.landmarks.ravel(), f.score] for f in faces], np.float64).reshape(len(faces), -1)


def assert_same(a, b, what: str) -> None:
    assert len(a.faces) == len(b.faces), what
    np.testing.assert_array_equal(faces_array(a.faces), faces_array(b.faces), err_msg=what)
    np.testing.assert_array_equal(a.crops, b.crops, err_msg=what)
    np.testing.assert_array_equal(a.embeddings, b.embeddings, err_msg=what)


@pytest.fixture(scope="module")
def photos(data):
    paths = [data / p for p in PHOTOS]
    missing = [p for p in paths if not p.is_file()]
    assert not missing, missing
    return paths


def test_detection_is_bit_identical_on_1_2_and_4_threads(photos, detector):
    for path in photos:
        ref = faces_array(detector.detect(path, threads=1))
        assert len(ref) >= 1, path
        for threads in (2, 4):
            np.testing.assert_array_equal(faces_array(detector.detect(path, threads=threads)), ref, err_msg=f"{path.name}, {threads} threads")


@pytest.mark.parametrize("backbone", ["sface", "facenet_random"])
def test_same_photo_same_result_alone_in_a_folder_as_bytes_on_any_thread_count(photos, detector, backbone, request):
    embedder = request.getfixturevalue(backbone)
    pipe = FacePipeline(detector, embedder)  # no crop cache: every path detects for itself
    alone = [pipe.analyze(p) for p in photos]  # a lone photo: every core
    assert sum(len(r.faces) for r in alone) >= 12
    batch = embedder.batch_size
    try:
        for workers in (1, 2, 4):  # a folder: one photo per worker thread, one thread each
            embedder.batch_size = 3  # embedding batches that span photos
            folder = list(pipe.analyze_many(photos, workers=workers))
            embedder.batch_size = batch
            for a, f in zip(alone, folder):
                assert_same(a, f, f"{a.source}: alone vs in a folder of {workers} workers")
    finally:
        embedder.batch_size = batch
    for a, p in zip(alone, photos):
        assert_same(a, pipe.analyze(p.read_bytes()), f"{p.name}: path vs bytes")
        for threads in (1, 4):
            got = pipe.detect_and_crop(p, threads=threads)
            got.embeddings = embedder.embed(got.crops)
            assert_same(a, got, f"{p.name}: alone on {threads} threads")
