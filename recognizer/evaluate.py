"""What each decider (classifier, kNN vote, combined) says about faces, and its closed-set scores.

`decide` is the one place the three deciders are run over a batch of faces; `finetune.py`'s
end-of-training report and `evaluate.py` (closed set here, open set in `recognizer.openset`) both
score its output, so the figures they print are the same computation.

Each decider gives, per face, a score for every person (the `scores` matrix: classifier
probability, kNN vote share, combined score of `recognizer.combine`) and a name: the person with
the highest score, ties going to the higher similarity and then to the name, the rule
`KnnVote.best` and `combine` use. `similarity` is what `identify` compares with the model's
threshold: the cosine similarity to the named person's closest face among the k neighbours, 0
when none of them is theirs. The classifier alone is held to the same rule, so it cannot make a
stranger look familiar either.

Closed set: every face is someone the model knows, so no threshold applies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recognizer.combine import combine

DECIDERS = ("classifier", "knn", "combined")
TOP_K = (1, 3)


@dataclass
class Decisions:
    """Per decider: a score per face and person, the name given and its similarity."""

    people: list[str]  # columns of `scores` and `neighbour_similarity`, sorted
    neighbour_similarity: np.ndarray  # (n, P): similarity to each person's closest face among the k neighbours, 0 if none
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # decider -> (n, P)
    names: dict[str, list[str | None]] = field(default_factory=dict)  # decider -> name per face (None: no candidate)
    similarity: dict[str, np.ndarray] = field(default_factory=dict)  # decider -> (n,)

    @property
    def deciders(self) -> list[str]:
        return [d for d in DECIDERS if d in self.scores]

    def __len__(self) -> int:
        return len(self.neighbour_similarity)

    def ranking(self, decider: str, i: int) -> list[str]:
        """Candidates of face i, best first (people with a score of 0 are not candidates)."""
        s, sim = self.scores[decider][i], self.neighbour_similarity[i]
        cand = [j for j in range(len(self.people)) if s[j] > 0]
        cand.sort(key=lambda j: (s[j], sim[j], self.people[j]), reverse=True)
        return [self.people[j] for j in cand]


def decide(gallery, classifier, embeddings: np.ndarray, *, k: int, model_id: str) -> Decisions:
    """Run the kNN vote, and the classifier and the combination when there is a classifier.

    `classifier` may be None (a model that was never finetuned): then only the kNN vote runs.
    """
    emb = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
    votes = gallery.knn_vote(emb, k, model_id=model_id) if len(emb) else []
    classes = [str(c) for c in classifier.classes_] if classifier is not None else []
    people = sorted(set(gallery.people()) | set(classes))
    col = {p: j for j, p in enumerate(people)}
    n, P = len(emb), len(people)
    nsim = np.zeros((n, P))
    knn = np.zeros((n, P))
    for i, v in enumerate(votes):
        for p, s in v.similarity.items():
            nsim[i, col[p]] = s
        for p, s in v.scores.items():
            knn[i, col[p]] = s
    out = Decisions(people, nsim)
    out.scores["knn"] = knn
    out.names["knn"] = [v.best()[0] for v in votes]
    if classifier is not None:
        proba = classifier.predict_proba(emb) if n else np.zeros((0, len(classes)))
        clf = np.zeros((n, P))
        clf[:, [col[c] for c in classes]] = proba
        out.scores["classifier"] = clf
        out.names["classifier"] = [classes[j] for j in np.argmax(proba, axis=1)]
        decisions = [combine(classes, p, v) for p, v in zip(proba, votes)]
        comb = np.zeros((n, P))
        for i, dec in enumerate(decisions):
            for p, s in dec.scores.items():
                comb[i, col[p]] = s
        out.scores["combined"] = comb
        out.names["combined"] = [dec.name for dec in decisions]
        out.scores = {d: out.scores[d] for d in DECIDERS}
        out.names = {d: out.names[d] for d in DECIDERS}
    for d, names in out.names.items():
        out.similarity[d] = np.array([nsim[i, col[p]] if p is not None else 0.0 for i, p in enumerate(names)])
    return out


@dataclass
class ClosedSetScores:
    labels: list[str]
    predictions: dict[str, list[str | None]] = field(default_factory=dict)  # decider -> name per face
    top_k: dict[str, dict[int, float]] = field(default_factory=dict)  # decider -> {k: share of faces with the truth in the top k}

    def accuracy(self, decider: str) -> float:
        pred = self.predictions[decider]
        return float(np.mean([p == t for p, t in zip(pred, self.labels)])) if self.labels else 0.0

    def classification_report(self, decider: str) -> dict:
        """scikit-learn's per-person precision, recall, f1 and support (as a dict)."""
        from sklearn.metrics import classification_report

        if not self.labels:
            return {}
        pred = [p if p is not None else "(none)" for p in self.predictions[decider]]
        return classification_report(self.labels, pred, labels=sorted(set(self.labels)), output_dict=True, zero_division=0)

    def confusion(self, decider: str) -> tuple[list[str], np.ndarray]:
        """(names, matrix): rows are the true person, columns the answer (other names included)."""
        from sklearn.metrics import confusion_matrix

        pred = [p if p is not None else "(none)" for p in self.predictions[decider]]
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
    """Predictions, accuracy and top-k accuracy of each decider for unit `embeddings` of faces named `labels`.

    `classifier` may be None (a model that was never finetuned): then only the kNN vote is scored.
    """
    return closed_set_from_decisions(decide(gallery, classifier, embeddings, k=k, model_id=model_id), labels, top_k)


def _rounded(obj):
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, float):
        return round(obj, 4)
    return obj
