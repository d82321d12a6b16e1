"""One meaning per number (issue 27): every label shows the similarity to the named person (to the nearest
person when unknown); `score`, the decision's share, exists only for a name (JSON null when unknown)."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from recognizer.cli import identify as identify_cli

FR = "face_recognition-examples"


def test_identify_json_numbers_mean_one_thing(tmp_path, data, folders, fast_open):
    from recognizer.recognizer import Recognizer

    rec = Recognizer.open(tmp_path / "m", backbone="sface", create=True)
    for f in folders[:2]:  # two people only: the group photos hold strangers
        rec.enroll(f.name.replace("_", " ").title(), sorted(f.iterdir()))
    thr = rec.threshold_info().threshold
    faces = []
    for photo in sorted((data / "facenet-pytorch-test-images" / "group").iterdir()) + sorted((data / FR / "group").iterdir()):
        faces += rec.identify(photo).to_dict()["faces"]
    rec.gallery.close()
    named = [f for f in faces if f["name"]]
    unknown = [f for f in faces if not f["name"]]
    assert named and unknown
    for f in named:
        assert f["similarity"] >= thr and 0 < f["score"] <= 1
    for f in unknown:
        assert f["score"] is None  # before: the vote share of a person it was not named, up to 1.0
        assert f["similarity"] < thr
        assert -1 <= f["similarity"] and f["similarity"] >= f["knn"]["similarity"]  # the nearest person's


def test_labels_show_the_similarity_for_named_and_unknown_faces():
    from recognizer.drawing import label_text
    from recognizer.video.render import track_label
    from recognizer.video.tracking import Track

    assert label_text("Jerry Seinfeld", 0.6234) == "Jerry Seinfeld 0.62"
    assert label_text(None, 0.3412) == "unknown 0.34"
    t = Track(8)
    t.name, t.score, t.similarity = None, 1.0, 0.31
    assert track_label(t) == "unknown 0.31"  # before: "unknown #8", a track number where a similarity stands
    t.name, t.similarity = "Lin", 0.72
    assert track_label(t) == "Lin 0.72"
