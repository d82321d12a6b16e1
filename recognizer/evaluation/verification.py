"""Verification on labelled pairs in the LFW `pairs.txt` format: same person or not?

    pairs.txt   first line "F N": F folds, each of N matched then N mismatched pairs
                matched     "name n1 n2"            -> <root>/name/name_0001.jpg ...
                mismatched  "name1 n1 name2 n2"

A pair's score is the cosine similarity of the two photos' largest faces. Figures as published for LFW:
10-fold accuracy (per fold, the lowest threshold maximising accuracy on the other folds; mean and std) and
TAR at FAR (by `open_set.threshold_for_rate`, the open-set rule). Pairs with a missing, unreadable or
faceless photo are listed and left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecore.errors import FaceToolError
from facecore.outputs import refuse_special
from recognizer.evaluation.open_set import threshold_for_rate

__all__ = ["FARS", "Pair", "VerificationScores", "best_threshold", "kfold_accuracy", "lfw_path", "read_pairs",
           "score_pairs", "tar_at_far", "verify_pairs"]

FARS = (1e-2, 1e-3)


@dataclass
class Pair:
    a: str
    b: str
    same: bool
    fold: int
    line: int  # in the pairs file, 1-based

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "same": self.same, "fold": self.fold, "line": self.line}


def lfw_path(root: Path, name: str, n: str) -> str:
    return str(Path(root) / name / f"{name}_{int(n):04d}.jpg")


def read_pairs(pairs_file: str | Path, root: str | Path) -> tuple[int, int, list[Pair]]:
    """(folds, pairs per class per fold, pairs) of an LFW pairs.txt; raises FaceToolError on a malformed file."""
    path = Path(pairs_file)
    refuse_special(path)  # before any open: a FIFO's open blocks
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines()]
    try:
        folds, per_class = (int(x) for x in lines[0])
    except (IndexError, ValueError):
        raise FaceToolError(f"{path}: first line must be '<folds> <pairs per class>', like LFW's '10 300'") from None
    body = [(i + 2, ln) for i, ln in enumerate(lines[1:]) if ln]
    if len(body) != folds * 2 * per_class:
        raise FaceToolError(f"{path}: {len(body)} pair lines, expected {folds} folds x 2 x {per_class} = {folds * 2 * per_class}")
    pairs = []
    for j, (lineno, f) in enumerate(body):
        fold, same = j // (2 * per_class), (j % (2 * per_class)) < per_class
        if same and len(f) == 3:
            pairs.append(Pair(lfw_path(root, f[0], f[1]), lfw_path(root, f[0], f[2]), True, fold, lineno))
        elif not same and len(f) == 4:
            pairs.append(Pair(lfw_path(root, f[0], f[1]), lfw_path(root, f[2], f[3]), False, fold, lineno))
        else:
            kind = "matched 'name n1 n2'" if same else "mismatched 'name1 n1 name2 n2'"
            raise FaceToolError(f"{path}:{lineno}: expected a {kind} pair, got {' '.join(f)!r}")
    return folds, per_class, pairs


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on (sims, same), the lowest of equals. Candidates: the midpoints
    of consecutive distinct similarities, one below all and one above (every distinct classification)."""
    u = np.unique(sims)
    cand = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6]]) if len(u) else np.array([0.0])
    acc = ((sims[None, :] >= cand[:, None]) == same[None, :]).mean(axis=1) if len(sims) else np.zeros(1)
    return float(cand[int(np.argmax(acc))])


def kfold_accuracy(sims: np.ndarray, same: np.ndarray, folds: np.ndarray, n_folds: int) -> tuple[list[float], list[float]]:
    """(accuracy per fold, threshold per fold); a fold with no pairs left is skipped."""
    accs, thrs = [], []
    for f in range(n_folds):
        test = folds == f
        if not test.any() or test.all():
            continue
        t = best_threshold(sims[~test], same[~test])
        accs.append(float(((sims[test] >= t) == same[test]).mean()))
        thrs.append(t)
    return accs, thrs


def tar_at_far(sims: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float, float]:
    """(TAR, threshold, FAR reached) at the smallest threshold accepting at most `far` of the mismatched pairs."""
    neg = sims[~same]
    t = threshold_for_rate(neg, len(neg), far)
    pos = sims[same]
    return (float((pos >= t).mean()) if len(pos) else 0.0, t, float((neg >= t).mean()) if len(neg) else 0.0)


@dataclass
class VerificationScores:
    pairs_file: str
    n_folds: int
    per_class: int
    n_pairs: int  # in the file
    similarities: np.ndarray  # of the scored pairs
    same: np.ndarray
    folds: np.ndarray
    fold_accuracy: list[float]
    fold_threshold: list[float]
    tar: dict[float, tuple[float, float, float]]  # far -> (tar, threshold, far reached)
    skipped: list[dict] = field(default_factory=list)  # pairs left out, with the photo and why
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.fold_accuracy)) if self.fold_accuracy else 0.0

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.fold_accuracy)) if self.fold_accuracy else 0.0

    def to_dict(self) -> dict:
        return {"pairs_file": self.pairs_file, "folds": self.n_folds, "pairs_per_class": self.per_class,
                "pairs_in_file": self.n_pairs, "pairs_scored": int(len(self.similarities)),
                "matched_scored": int(self.same.sum()), "mismatched_scored": int((~self.same).sum()),
                "accuracy_mean": round(self.accuracy_mean, 4), "accuracy_std": round(self.accuracy_std, 4),
                "fold_accuracy": [round(a, 4) for a in self.fold_accuracy],
                "fold_threshold": [round(t, 4) for t in self.fold_threshold],
                "tar_at_far": {f"{far:g}": {"tar": round(v[0], 4), "threshold": round(v[1], 4), "far": round(v[2], 4)}
                               for far, v in self.tar.items()},
                "skipped": self.skipped, "notes": self.notes}


def score_pairs(similarities: np.ndarray, same: np.ndarray, folds: np.ndarray, *, pairs_file: str, n_folds: int,
                per_class: int, n_pairs: int, skipped: list[dict], fars=FARS) -> VerificationScores:
    sims, same, folds = np.asarray(similarities, np.float64), np.asarray(same, bool), np.asarray(folds, int)
    accs, thrs = kfold_accuracy(sims, same, folds, n_folds)
    out = VerificationScores(pairs_file, n_folds, per_class, n_pairs, sims, same, folds, accs, thrs,
                             {far: tar_at_far(sims, same, far) for far in fars}, skipped)
    n_neg = int((~same).sum())
    for far in fars:
        if n_neg and far * n_neg < 1:
            out.notes.append(f"TAR at FAR {far:g}: {n_neg} mismatched pairs cannot measure a FAR under {1 / n_neg:.3g}; "
                             "the threshold accepts none of them")
    return out


def verify_pairs(pipeline, pairs_file: str | Path, root: str | Path, *, progress: bool = False, fars=FARS) -> VerificationScores:
    """Embed each photo of the pairs once (largest face) and score the pairs."""
    n_folds, per_class, pairs = read_pairs(pairs_file, root)
    photos = sorted({p.a for p in pairs} | {p.b for p in pairs})
    emb: dict[str, np.ndarray] = {}
    existing = [p for p in photos if Path(p).is_file()]
    why = {p: "missing" for p in set(photos) - set(existing)}
    for res in pipeline.analyze_many(existing, progress=progress):
        if res.skip_reason is not None:
            why[res.source] = res.skip_reason
        else:
            emb[res.source] = res.embeddings[0]
    sims, same, folds, skipped = [], [], [], []
    for p in pairs:
        bad = [(x, why[x]) for x in (p.a, p.b) if x not in emb]
        if bad:
            skipped.append({**p.to_dict(), "reasons": {x: r for x, r in bad}})
            continue
        sims.append(float(np.dot(emb[p.a], emb[p.b])))
        same.append(p.same)
        folds.append(p.fold)
    return score_pairs(np.array(sims), np.array(same, bool), np.array(folds, int), pairs_file=str(pairs_file),
                       n_folds=n_folds, per_class=per_class, n_pairs=len(pairs), skipped=skipped, fars=fars)
