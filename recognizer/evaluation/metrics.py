"""Closed-set metrics in numpy: scikit-learn's `confusion_matrix` and `classification_report(output_dict=True,
zero_division=0)`, number for number (tests/test_metrics.py compares them), so the core install needs no
scikit-learn or scipy (issue 26)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["classification_report", "confusion_matrix"]


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts: row i is the true label `labels[i]`, column j the answer `labels[j]`; pairs with a label
    outside `labels` are left out (as scikit-learn does)."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels for {len(y_pred)} answers")
    index = {name: i for i, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        i, j = index.get(t), index.get(p)
        if i is not None and j is not None:
            matrix[i, j] += 1
    return matrix


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, 0 where den is 0 (zero_division=0)."""
    den = np.asarray(den, dtype=np.float64).copy()
    zero = den == 0
    den[zero] = 1
    out = np.asarray(num, dtype=np.float64) / den
    out[zero] = 0.0
    return out


def _prf(tp: np.ndarray, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = _divide(tp, pred)
    recall = _divide(tp, true)
    f1 = _divide(2.0 * tp.astype(np.float64), 1.0 * true.astype(np.float64) + pred.astype(np.float64))
    return precision, recall, f1


def classification_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Per-label precision, recall, f1-score and support, then "accuracy" (when `labels` holds every label
    seen) or "micro avg", "macro avg" and "weighted avg": scikit-learn's dict with zero_division=0."""
    labels = [str(x) for x in labels]
    y_true = [str(x) for x in y_true]
    y_pred = [str(x) for x in y_pred]
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels for {len(y_pred)} answers")
    if not labels:
        raise ValueError("no labels")
    tp = np.array([sum(t == p == name for t, p in zip(y_true, y_pred)) for name in labels], dtype=np.int64)
    pred = np.array([sum(p == name for p in y_pred) for name in labels], dtype=np.int64)
    true = np.array([sum(t == name for t in y_true) for name in labels], dtype=np.int64)
    p, r, f1 = _prf(tp, pred, true)
    heads = ("precision", "recall", "f1-score", "support")
    report: dict = {name: dict(zip(heads, map(float, row))) for name, *row in zip(labels, p, r, f1, true)}
    support = float(np.sum(true))
    micro = [float(x[0]) for x in _prf(tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True))]
    if set(labels) >= set(y_true) | set(y_pred):
        report["accuracy"] = micro[0]
    else:
        report["micro avg"] = dict(zip(heads, [*micro, support]))
    report["macro avg"] = dict(zip(heads, [float(np.mean(x)) for x in (p, r, f1)] + [support]))
    weighted = [float(np.average(x, weights=true)) if true.sum() else float(np.mean(x)) for x in (p, r, f1)]
    report["weighted avg"] = dict(zip(heads, weighted + [support]))
    return report
