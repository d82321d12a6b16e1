"""The combined decision: classifier probabilities mixed with the kNN vote (recognizer.combine)."""
from __future__ import annotations

import numpy as np
import pytest

from gallery import Hit, KnnVote
from gallery.base import vote
from recognizer.combine import combine

CLASSES = ["ann", "bob", "cyd"]


def knn(*hits: tuple[str, float]) -> KnnVote:
    return vote([Hit(i, p, s, f"{p}.jpg") for i, (p, s) in enumerate(hits)])


def test_agreement_keeps_the_common_answer():
    d = combine(CLASSES, np.array([0.8, 0.1, 0.1]), knn(("ann", 0.7), ("ann", 0.6), ("bob", 0.3)))
    assert d.name == "ann" and d.similarity == pytest.approx(0.7)
    assert d.classifier == {"name": "ann", "probability": 0.8}
    assert sum(d.scores.values()) == pytest.approx(1.0) and 0 < d.score <= 1


def test_confident_classifier_breaks_a_split_vote():
    v = knn(("ann", 0.55), ("bob", 0.56), ("bob", 0.5), ("ann", 0.45))
    assert v.best()[0] == "bob"
    assert combine(CLASSES, np.array([0.9, 0.05, 0.05]), v).name == "ann"


def test_person_enrolled_after_training_wins_when_the_neighbours_are_theirs():
    # The classifier never saw "dan" and confidently names someone it knows; the vote is all dan.
    d = combine(CLASSES, np.array([0.98, 0.01, 0.01]), knn(("dan", 0.8), ("dan", 0.7), ("dan", 0.6)))
    assert d.name == "dan" and d.score == pytest.approx(1.0) and d.similarity == pytest.approx(0.8)
    assert d.classifier["name"] == "ann"


def test_classifier_is_trusted_less_when_neighbours_are_unknown_to_it():
    # 2/3 of the vote for dan: the classifier's 0.98 for ann is scaled by the 1/3 known share.
    d = combine(CLASSES, np.array([0.98, 0.01, 0.01]), knn(("dan", 0.6), ("dan", 0.6), ("ann", 0.6)))
    assert d.name == "dan"
    assert d.scores["ann"] == pytest.approx(0.5 / 3 + 0.5 * (1 / 3) * 0.98)


def test_candidate_without_a_neighbour_has_similarity_zero():
    # The classifier alone cannot make a face familiar: no neighbour of cyd, similarity 0.
    d = combine(CLASSES, np.array([0.0, 0.0, 1.0]), knn(("ann", 0.1)), weight=0.9)
    assert d.name == "cyd" and d.similarity == 0.0


def test_no_votes_means_no_decision_and_bad_input_is_refused():
    d = combine(CLASSES, np.array([0.2, 0.3, 0.5]), knn(("ann", -0.2)))
    assert d.name is None and d.score == 0.0 and d.classifier["name"] == "cyd"
    with pytest.raises(ValueError, match="3 classes"):
        combine(CLASSES, np.array([0.5, 0.5]), knn(("ann", 0.5)))


def test_combined_is_at_least_the_better_decider_on_celebrity_val(sface_pipeline, data, tmp_path):
    """Measured on real faces: a cosine head fitted on train, a gallery of train, scored on val."""
    from gallery import FaceRecord, create_gallery
    from recognizer.evaluation.closed_set import closed_set_scores
    from recognizer.network.head import CosineClassifier

    def embed(split):
        x, y = [], []
        for person in sorted((data / "5-celebrity-faces" / split).iterdir()):
            for f in sorted(person.iterdir()):
                r = sface_pipeline.analyze(f)
                if len(r.faces):
                    x.append(r.embeddings[0])
                    y.append(person.name)
        return np.stack(x), y

    xt, yt = embed("train")
    xv, yv = embed("val")
    clf = CosineClassifier(epochs=30).fit(xt, yt)
    assert clf.fit(xt, yt) is clf and list(clf.classes_) == sorted(set(yt))
    proba = clf.predict_proba(xv)
    assert proba.shape == (25, 5) and np.allclose(proba.sum(1), 1)
    assert list(clf.predict(xv)) == [clf.classes_[i] for i in proba.argmax(1)]

    mid = sface_pipeline.embedder.model_id
    gal = create_gallery(tmp_path / "g", model_id=mid, dim=128)
    gal.add(xt, [FaceRecord(p, f"{i}.jpg", f"{i:064x}", (0, 0, 1, 1)) for i, p in enumerate(yt)], model_id=mid)
    scores = closed_set_scores(gal, clf, xv, yv, k=5, model_id=mid)
    acc = {d: scores.accuracy(d) for d in ("classifier", "knn", "combined")}
    print(f"sface, 5-celebrity-faces val: {acc}")
    assert acc["combined"] >= max(acc["classifier"], acc["knn"]) and acc["combined"] >= 0.96
    assert scores.to_dict()["n"] == 25
    gal.close()
