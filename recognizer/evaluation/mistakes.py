"""The faces an evaluation got wrong, and the confusion matrix with an "unknown" row and column.

A face's answer is the deployed decider's name when its similarity reaches the threshold, else "unknown"
(with no threshold, the closed set: the name, or "unknown" when the decider has no candidate). A mistake is
an answer other than the expected one: a wrong name, a known person called unknown, a stranger named.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facecore.names import UNKNOWN
from recognizer.evaluation.metrics import confusion_matrix

__all__ = ["Mistake", "answers", "confusion_with_unknown", "find_mistakes"]


@dataclass
class Mistake:
    photo: str
    expected: str  # the person, or "unknown" for a stranger's face
    got: str  # the answer, or "unknown"
    similarity: float  # to the named person (to the nearest candidate when the answer is unknown)
    box: tuple[float, float, float, float] | None = None  # the face in the photo, for its thumbnail

    def to_dict(self) -> dict:
        return {"photo": self.photo, "expected": self.expected, "got": self.got, "similarity": round(self.similarity, 4)}


def answers(names: Sequence[str | None], similarity: np.ndarray, threshold: float | None = None) -> list[str]:
    """Each face's answer: its name when named and (with a threshold) similar enough, else UNKNOWN."""
    return [n if n is not None and (threshold is None or s >= threshold) else UNKNOWN
            for n, s in zip(names, np.asarray(similarity, np.float64))]


def find_mistakes(expected: Sequence[str], got: Sequence[str], similarity: np.ndarray, photos: Sequence[str],
                  boxes: Sequence | None = None) -> list[Mistake]:
    """The faces whose answer is not the expected one, most similar first (the most confident mistakes)."""
    sims = np.asarray(similarity, np.float64)
    out = [Mistake(photos[i], e, g, float(sims[i]), None if boxes is None else tuple(map(float, boxes[i])))
           for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    return sorted(out, key=lambda m: (-m.similarity, m.photo))


def confusion_with_unknown(expected: Sequence[str], got: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(names, matrix): rows the expected answer, columns the answer given; the people, then "unknown", then
    any other name answered."""
    people = sorted(set(expected) - {UNKNOWN})
    names = people + [UNKNOWN] + sorted(set(got) - set(people) - {UNKNOWN})
    if not len(expected):
        return names, np.zeros((len(names), len(names)), int)
    return names, confusion_matrix(list(expected), list(got), labels=names)
