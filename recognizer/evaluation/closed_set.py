"""Closed-set scores of each decider: accuracy, top-k accuracy, per-person report and confusion matrix.

Closed set: every face is someone the model knows, so no threshold applies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from facecore.names import UNKNOWN
from recognizer.decision import Decisions, decide
from recognizer.evaluation.metrics import classification_report, confusion_matrix

__all__ = ["TOP_K", "ClosedSetScores", "closed_set_from_decisions", "closed_set_scores"]
TOP_K = (1, 3)


@dataclass
class ClosedSetScores:
    labels: list[str]
    predictions: dict[str, list[str | None]] = field(default_factory=dict)  # decider -> name per face
    top_k: dict[str, dict[int, float]] = field(default_factory=dict)  # decider -> {k: share of faces with the truth in the top k}

    def accuracy(self, decider: str) -> float:
        pred = self.predictions[decider]
        return float(np.mean([p == t for p, t in zip(pred, self.labels)])) if self.labels else 0.0

    def classification_report(self, decider: str) -> dict:
        """Per-person precision, recall, f1 and support (scikit-learn's dict, from recognizer.evaluation.metrics)."""
        if not self.labels:
            return {}
        pred = [p if p is not None else UNKNOWN for p in self.predictions[decider]]
        return classification_report(self.labels, pred, labels=sorted(set(self.labels)))

    def confusion(self, decider: str) -> tuple[list[str], np.ndarray]:
        """(names, matrix): rows are the true person, columns the answer (other names included)."""
        pred = [p if p is not None else UNKNOWN for p in self.predictions[decider]]
        names = sorted(set(self.labels)) + sorted(set(pred) - set(self.labels))
        return names, confusion_matrix(self.labels, pred, labels=names) if self.labels else np.zeros((0, 0), int)

    def to_dict(self) -> dict:
        out: dict = {"n": len(self.labels)}
        for d in self.predictions:
            correct = sum(p == t for p, t in zip(self.predictions[d], self.labels))
            out[d] = {"accuracy": round(self.accuracy(d), 4), "correct": int(correct),
                      "top_k": {str(k): round(v, 4) for k, v in self.top_k[d].items()},
                      "per_person": _rounded(self.classification_report(d))}
        return out


def closed_set_from_decisions(decisions: Decisions, labels: Sequence[str], top_k: Sequence[int] = TOP_K) -> ClosedSetScores:
    labels = [str(x) for x in labels]
    if len(labels) != len(decisions):
        raise ValueError(f"{len(labels)} labels for {len(decisions)} faces")
    result = ClosedSetScores(labels)
    for d in decisions.deciders:
        result.predictions[d] = list(decisions.names[d])
        ranks = [decisions.ranking(d, i) for i in range(len(labels))]
        result.top_k[d] = {k: float(np.mean([t in r[:k] for t, r in zip(labels, ranks)])) if labels else 0.0 for k in top_k}
    return result


def closed_set_scores(gallery, classifier, embeddings: np.ndarray, labels: Sequence[str], *, k: int, model_id: str,
                      top_k: Sequence[int] = TOP_K) -> ClosedSetScores:
    """Each decider's predictions and (top-k) accuracy for unit `embeddings` of faces named `labels` (with no
    `classifier`, never finetuned: the kNN vote alone)."""
    return closed_set_from_decisions(decide(gallery, classifier, embeddings, k=k, model_id=model_id), labels, top_k)


def _rounded(obj):
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, float):
        return round(obj, 4)
    return obj
