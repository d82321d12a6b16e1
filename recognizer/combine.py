"""One decision from the classifier's probabilities and the gallery's nearest-neighbour vote.

The classifier knows only the people it was trained on; the kNN vote covers everyone enrolled. The rule:

    m        = share of the kNN vote that went to people the classifier knows
    q(p)     = m * P_clf(p)   for p the classifier knows
             = S_knn(p)       for anyone else
    score(p) = (1 - w) * S_knn(p) + w * q(p),    w = CLASSIFIER_WEIGHT

and the decision is the person with the highest score (ties: higher similarity, then name).

Why: P_clf is a distribution *given that the face is one of its classes*, m the vote's estimate of that
probability: the classifier loses its say as the neighbours turn out to be people enrolled later (m = 0: the
vote alone). Both terms sum to 1 over the people, so `score` is in [0, 1]. `similarity` is the cosine to the
chosen person's closest neighbour (0 if none is theirs), so the classifier cannot make a stranger look familiar.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from facecore.ranking import best_candidate

__all__ = ["CLASSIFIER_WEIGHT", "Decision", "combine"]

CLASSIFIER_WEIGHT = 0.5


@dataclass
class Decision:
    name: str | None
    score: float
    similarity: float
    classifier: dict = field(default_factory=dict)  # {"name": top class, "probability": its probability}
    scores: dict[str, float] = field(default_factory=dict)  # combined score per candidate

    def to_dict(self) -> dict:
        return {"name": self.name, "score": round(self.score, 4), "similarity": round(self.similarity, 4),
                "classifier": self.classifier}


def combine(classes: Sequence[str], proba: np.ndarray, vote, weight: float = CLASSIFIER_WEIGHT) -> Decision:
    """Combine classifier probabilities (n_classes,), columns following `classes`, with a KnnVote."""
    classes = [str(c) for c in classes]
    proba = np.asarray(proba, dtype=np.float64).reshape(-1)
    if len(proba) != len(classes):
        raise ValueError(f"{len(proba)} probabilities for {len(classes)} classes")
    top = int(np.argmax(proba)) if len(proba) else -1
    clf = {"name": classes[top], "probability": round(float(proba[top]), 4)} if top >= 0 else {"name": None, "probability": 0.0}

    known = set(classes)
    knn = dict(vote.scores)
    m = sum(s for p, s in knn.items() if p in known)
    scores = {p: (1 - weight) * s for p, s in knn.items()}
    for p, s in knn.items():
        if p not in known:
            scores[p] += weight * s
    if m > 0:
        for p, pr in zip(classes, proba):
            scores[p] = scores.get(p, 0.0) + weight * m * float(pr)
    if not scores:
        return Decision(None, 0.0, 0.0, clf, {})
    name = best_candidate(scores, vote.similarity)
    return Decision(name, float(scores[name]), float(vote.similarity.get(name, 0.0)), clf, scores)
