"""The one order of candidate people, shared by the gallery's kNN vote, the combination with the
classifier and the evaluation's rankings."""
from __future__ import annotations

__all__ = ["best_candidate", "rank_key"]


def rank_key(score: float, similarity: float, name: str) -> tuple[float, float, str]:
    """Best last: the higher score, on a tie the higher similarity, then the name, so that an
    answer never depends on dict order."""
    return (score, similarity, name)


def best_candidate(scores: dict[str, float], similarity: dict[str, float]) -> str | None:
    """The person `rank_key` puts first (similarity 0 for a person missing from `similarity`)."""
    if not scores:
        return None
    return max(scores, key=lambda p: rank_key(scores[p], similarity.get(p, 0.0), p))
