"""Closed-set accuracy of the three deciders (classifier, kNN vote, combined) on labelled faces.

One function computes it for `finetune.py`'s end-of-training report and for `evaluate.py`, so the
figures both print are the same computation. Closed set: every face is someone the model knows,
so no threshold applies; `predictions` keeps each decider's answers for per-class reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recognizer.combine import combine

DECIDERS = ("classifier", "knn", "combined")


@dataclass
class ClosedSetScores:
    labels: list[str]
    predictions: dict[str, list[str | None]] = field(default_factory=dict)  # decider -> name per face

    def accuracy(self, decider: str) -> float:
        pred = self.predictions[decider]
        return float(np.mean([p == t for p, t in zip(pred, self.labels)])) if self.labels else 0.0

    def to_dict(self) -> dict:
        out: dict = {"n": len(self.labels)}
        for d in self.predictions:
            correct = sum(p == t for p, t in zip(self.predictions[d], self.labels))
            out[d] = {"accuracy": round(self.accuracy(d), 4), "correct": int(correct)}
        return out


def closed_set_scores(gallery, classifier, embeddings: np.ndarray, labels: Sequence[str], *, k: int, model_id: str) -> ClosedSetScores:
    """Predictions and accuracy of each decider for unit `embeddings` of faces named `labels`.

    `classifier` may be None (a model that was never finetuned): then only the kNN vote is scored.
    """
    labels = [str(x) for x in labels]
    result = ClosedSetScores(labels)
    votes = gallery.knn_vote(np.asarray(embeddings, np.float32), k, model_id=model_id) if len(labels) else []
    result.predictions["knn"] = [v.best()[0] for v in votes]
    if classifier is None:
        return result
    proba = classifier.predict_proba(embeddings) if len(labels) else np.zeros((0, len(classifier.classes_)))
    classes = [str(c) for c in classifier.classes_]
    result.predictions["classifier"] = [classes[i] for i in np.argmax(proba, axis=1)]
    result.predictions["combined"] = [combine(classes, p, v).name for p, v in zip(proba, votes)]
    result.predictions = {d: result.predictions[d] for d in DECIDERS}
    return result
