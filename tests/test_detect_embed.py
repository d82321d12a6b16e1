"""Detection and embedding on real photos from the shared data folder."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from recognizer.detection.boxes import Face
from recognizer.detection.mtcnn import largest

FR = "face_recognition-examples"


def _embed_largest(pipeline, path):
    res = pipeline.analyze(path)
    assert res.faces, f"no face found in {path}"
    return res.embeddings[0]


@pytest.mark.parametrize(
    "group, people",
    [
        ("barack_obama+joe_biden__two_people.jpg", ["barack_obama", "joe_biden"]),
        ("barack_obama+joe_biden__obama_and_biden.jpg", ["barack_obama", "joe_biden"]),
        ("kit_harington+rose_leslie__kit_with_rose.jpg", ["kit_harington", "rose_leslie"]),
    ],
)
def test_both_named_people_found_in_group_photo(data, sface_pipeline, group, people):
    res = sface_pipeline.analyze(data / FR / "group" / group)
    assert len(res.faces) >= 2
    assert res.embeddings.shape == (len(res.faces), 128)
    # Each named person matches a different detected face: the faces found are really theirs.
    matched = set()
    for person in people:
        refs = np.stack([_embed_largest(sface_pipeline, p) for p in sorted((data / FR / "people" / person).iterdir())[:3]])
        sims = (res.embeddings @ refs.T).max(axis=1)
        best = int(np.argmax(sims))
        assert sims[best] > 0.35, (person, sims)
        matched.add(best)
    assert len(matched) == len(people)


def test_all_six_faces_in_multiface(data, detector):
    faces = detector.detect(data / "facenet-pytorch-test-images/group/multiface__6_faces_unnamed.jpg")
    assert len(faces) == 6
    for f in faces:
        assert f.box.shape == (4,) and f.landmarks.shape == (5, 2) and 0.9 <= f.score <= 1.0
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)


def test_no_face_gives_empty_list(detector):
    rng = np.random.default_rng(0)
    # A smooth landscape-like gradient with noise: no face anywhere.
    y, x = np.mgrid[0:480, 0:640]
    img = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], -1) + rng.normal(0, 8, (480, 640, 3))
    faces = detector.detect(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)))
    assert faces == []
    assert detector.detect(Image.new("RGB", (5, 5))) == []


def test_exif_orientation_gives_the_same_face(data, sface_pipeline, tmp_path):
    src = data / "facenet-pytorch-test-images/people/paul_rudd/1.jpg"
    upright = sface_pipeline.analyze(src)
    img = Image.open(src).convert("RGB")
    # Store the pixels rotated, with the EXIF tag (6 = rotate 90 CW to display) that undoes it.
    rotated = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    rotated.save(path, quality=95, exif=exif.tobytes())
    again = sface_pipeline.analyze(path)
    assert len(again.faces) == len(upright.faces) >= 1
    assert again.size == upright.size
    assert np.abs(again.faces[0].box - upright.faces[0].box).max() < 6
    assert float(again.embeddings[0] @ upright.embeddings[0]) > 0.95


def test_sface_one_nearest_neighbour_on_celebrity_val(data, sface_pipeline):
    def embed_split(split):
        paths = sorted((data / "5-celebrity-faces" / split).glob("*/*"))
        X, y = [], []
        for res in sface_pipeline.analyze_many(paths):
            if res.faces:
                X.append(res.embeddings[0])
                y.append(res.source.split("/")[-2])
        return np.stack(X), np.array(y)

    Xt, yt = embed_split("train")
    Xv, yv = embed_split("val")
    assert len(yv) == 25
    acc = float((yt[(Xv @ Xt.T).argmax(1)] == yv).mean())
    print(f"sface 1-NN accuracy on 5-celebrity-faces val: {acc:.3f}")
    assert acc >= 0.96


def test_sface_verification_auc_on_deepface_pairs(data, sface_pipeline):
    from recognizer.sample_data import pair_similarities

    sims, same, n_pairs = pair_similarities(sface_pipeline, data)
    assert n_pairs == 300 and len(sims) >= 0.95 * n_pairs
    # ROC AUC without scikit-learn (not in the core install): the chance that a same-person pair scores
    # above a different-person pair, ties counting half.
    s, y = np.asarray(sims, dtype=np.float64), np.asarray(same, dtype=bool)
    diff = s[y][:, None] - s[~y][None, :]
    auc = float((diff > 0).mean() + 0.5 * (diff == 0).mean())
    print(f"sface ROC AUC on deepface master.csv pairs: {auc:.4f} ({len(sims)} pairs)")
    assert auc >= 0.95


def test_crop_cache_skips_detection_and_gives_same_result(data, detector, sface, tmp_path):
    from recognizer.cache import CropCache
    from recognizer.pipeline import FacePipeline

    cache = CropCache(tmp_path)
    path = data / FR / "group/barack_obama+joe_biden__two_people.jpg"
    first = FacePipeline(detector, sface, cache).analyze(path)

    class NoDetect:
        settings = detector.settings
        engine = detector.engine

        def detect(self, image):
            raise AssertionError("detection ran despite a cache hit")

    second = FacePipeline(NoDetect(), sface, cache).analyze(path)
    assert cache.hits == 1 and cache.misses == 1
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(np.stack([f.box for f in first.faces]), np.stack([f.box for f in second.faces]))
    # Another detector setting is another key.
    from dataclasses import replace

    detector2 = type(detector)(replace(detector.settings, score_threshold=0.95))
    FacePipeline(detector2, sface, cache).analyze(path)
    assert cache.misses == 2
    # A damaged entry is a miss, not a crash.
    for entry in tmp_path.rglob("*.npz"):
        entry.write_bytes(b"garbage")
    assert len(FacePipeline(detector, sface, cache).analyze(path).faces) == len(first.faces)


def test_pipeline_accepts_bytes_and_reports_unreadable_in_streams(data, sface_pipeline, tmp_path):
    path = data / "facenet-pytorch-test-images/people/kate_siegel/1.jpg"
    from_bytes = sface_pipeline.analyze(path.read_bytes())
    assert len(from_bytes.faces) >= 1
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    results = list(sface_pipeline.analyze_many([path, bad, path]))
    assert [r.error is None for r in results] == [True, False, True]
    assert results[1].embeddings.shape == (0, 128) and "bad.jpg" in results[1].source
    # The same photo gives the same numbers however it arrives (tests/test_determinism.py).
    np.testing.assert_array_equal(results[0].embeddings, from_bytes.embeddings)
    np.testing.assert_array_equal(results[2].embeddings, results[0].embeddings)


def test_largest_picks_biggest_box(data, detector):
    faces = detector.detect(data / FR / "group/barack_obama+joe_biden__two_people.jpg")
    assert len(faces) == 2 and faces[0].area > faces[1].area  # the detector lists the largest first
    # `largest` must find the biggest box wherever it sits, not take the first one.
    assert largest(faces[::-1]) is faces[0]
    small, big, mid = (Face(box=np.array(b, np.float32), score=0.99, landmarks=np.zeros((5, 2), np.float32))
                       for b in ([0, 0, 10, 10], [50, 50, 90, 95], [20, 20, 45, 40]))
    for order in ([small, big, mid], [mid, small, big], [big, mid, small]):
        assert largest(order) is big
    assert largest([]) is None


def test_analyze_many_overlapped_keeps_order_and_matches_one_at_a_time(data, detector, sface, tmp_path):
    from recognizer.pipeline import FacePipeline

    pipe = FacePipeline(detector, sface)  # no cache: every photo is detected in the workers
    paths = sorted((data / "5-celebrity-faces/val/madonna").iterdir())[:4] + [data / FR / "group/barack_obama+joe_biden__two_people.jpg"]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    sources = [paths[0], bad, *paths[1:]]
    sface.batch_size = 3  # several embedding batches, each spanning photos
    try:
        many = list(pipe.analyze_many(sources, workers=3))
    finally:
        sface.batch_size = 32
    assert [r.source for r in many] == [str(p) for p in sources]
    assert many[1].error and many[1].embeddings.shape == (0, 128)
    for r in [many[0], *many[2:]]:
        one = pipe.analyze(r.source)
        assert len(one.faces) == len(r.faces) >= 1
        np.testing.assert_array_equal(r.embeddings, one.embeddings)
