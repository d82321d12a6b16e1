"""How well a clustering matches the true identities: pairwise and BCubed precision/recall.

Pairwise: over all pairs of faces, precision = pairs put together that are the same person /
pairs put together; recall = same-person pairs put together / same-person pairs. Computed from
the contingency table (cluster x person counts), so no pair list is formed.
BCubed (Bagga & Baldwin): per face, precision = share of its cluster that is its person, recall =
share of its person that is in its cluster; both averaged over faces.
"""
from __future__ import annotations

import numpy as np

__all__ = ["bcubed_scores", "pairwise_scores"]


def _contingency(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    true = np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"predicted and true labels must be 1-d of one length, got {pred.shape} and {true.shape}")
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(true, return_inverse=True)
    nt = int(t.max()) + 1 if len(t) else 1
    cells, counts = np.unique(p.astype(np.int64) * nt + t, return_counts=True)
    return p, t, np.stack([cells // nt, cells % nt, counts], 1)


def pairwise_scores(pred, true) -> dict[str, float]:
    """Pairwise precision, recall and F1 (1.0 where no pair exists to judge)."""
    p, t, table = _contingency(pred, true)
    def c2(x):
        x = np.asarray(x, np.float64)
        return float(np.sum(x * (x - 1) / 2))
    together_same = c2(table[:, 2])
    together = c2(np.bincount(p))
    same = c2(np.bincount(t))
    prec = together_same / together if together else 1.0
    rec = together_same / same if same else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1}


def bcubed_scores(pred, true) -> dict[str, float]:
    p, t, table = _contingency(pred, true)
    n = len(p)
    if n == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    csize = np.bincount(p).astype(np.float64)
    tsize = np.bincount(t).astype(np.float64)
    cell = table[:, 2].astype(np.float64)
    # each of a cell's `cell` faces has precision cell/|cluster| and recall cell/|person|
    prec = float(np.sum(cell * cell / csize[table[:, 0]]) / n)
    rec = float(np.sum(cell * cell / tsize[table[:, 1]]) / n)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1}
