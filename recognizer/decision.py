"""What each decider (classifier, kNN vote, combined) says about a batch of faces: `decide`.

`identify` names faces with it and the finetune report and evaluations score its output, so their figures
describe what identify does. Each decider gives a score per face and person (classifier probability, kNN vote
share, `recognizer.combine`'s score) and a name: the highest score, ties to the higher similarity, then the
name. `similarity`, compared with the threshold, is the cosine to the named person's closest face among the k
neighbours (0 if none is theirs), for the classifier alone too: it cannot make a stranger look familiar.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facecore.ranking import rank_key
from recognizer.combine import combine

__all__ = ["DECIDERS", "Decisions", "decide"]

DECIDERS = ("classifier", "knn", "combined")


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

    @property
    def deployed(self) -> str:
        """The decider identify answers with: the combination once finetuned, else the kNN vote."""
        return "combined" if "combined" in self.scores else "knn"

    def ranking(self, decider: str, i: int) -> list[str]:
        """Candidates of face i, best first (people with a score of 0 are not candidates)."""
        s, sim = self.scores[decider][i], self.neighbour_similarity[i]
        cand = [j for j in range(len(self.people)) if s[j] > 0]
        cand.sort(key=lambda j: rank_key(s[j], sim[j], self.people[j]), reverse=True)
        return [self.people[j] for j in cand]


def _matrix(rows, col: dict[str, int], width: int) -> np.ndarray:
    """(len(rows), width) with row i's {person: value} at the people's columns, 0 elsewhere."""
    out = np.zeros((len(rows), width))
    for i, row in enumerate(rows):
        for p, s in row.items():
            out[i, col[p]] = s
    return out


def _with_classifier(out: Decisions, classifier, emb: np.ndarray, votes, col: dict[str, int]) -> None:
    """Add the classifier's and the combination's scores and names to `out`, in DECIDERS order."""
    classes = [str(c) for c in classifier.classes_]
    n, P = len(emb), len(out.people)
    proba = classifier.predict_proba(emb) if n else np.zeros((0, len(classes)))
    clf = np.zeros((n, P))
    clf[:, [col[c] for c in classes]] = proba
    out.scores["classifier"] = clf
    out.names["classifier"] = [classes[j] for j in np.argmax(proba, axis=1)]
    decisions = [combine(classes, p, v) for p, v in zip(proba, votes)]
    out.scores["combined"] = _matrix([dec.scores for dec in decisions], col, P)
    out.names["combined"] = [dec.name for dec in decisions]
    out.scores = {d: out.scores[d] for d in DECIDERS}
    out.names = {d: out.names[d] for d in DECIDERS}


def decide(gallery, classifier, embeddings: np.ndarray, *, k: int, model_id: str) -> Decisions:
    """The kNN vote's decisions, and the classifier's and the combination's unless `classifier` is None."""
    emb = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
    votes = gallery.knn_vote(emb, k, model_id=model_id) if len(emb) else []
    classes = [str(c) for c in classifier.classes_] if classifier is not None else []
    people = sorted(set(gallery.people()) | set(classes))
    col = {p: j for j, p in enumerate(people)}
    nsim = _matrix([v.similarity for v in votes], col, len(people)).reshape(len(emb), len(people))
    out = Decisions(people, nsim)
    out.scores["knn"] = _matrix([v.scores for v in votes], col, len(people)).reshape(len(emb), len(people))
    out.names["knn"] = [v.best()[0] for v in votes]
    if classifier is not None:
        _with_classifier(out, classifier, emb, votes, col)
    for d, names in out.names.items():
        out.similarity[d] = np.array([nsim[i, col[p]] if p is not None else 0.0 for i, p in enumerate(names)])
    return out
