"""Open-set identification: strangers must come back unknown, known people must still be named.

A face is named when its decider's similarity (`recognizer.decision`) is >= the threshold t:

    FPIR(t) = share of unknown faces given a name (false-positive identification rate)
    DIR(t)  = share of known faces given their own name (detection and identification rate)

The recommended threshold for a target FPIR is the smallest on a 1e-4 grid with FPIR <= target (any higher
names fewer known people). With N unknown faces FPIR moves in steps of 1/N.

That point estimate is what the report shows; a threshold that is *stored* must rest on enough strangers:
the bounded recommendation allows only as many named unknown faces as keep the one-sided Clopper-Pearson
upper bound of FPIR (at CONFIDENCE) under the target, and there is none when even zero named faces cannot
show it (fewer than `strangers_needed(target)` unknown faces: 299 for 0.01).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recognizer.decision import Decisions

__all__ = ["CONFIDENCE", "CURVE_STEP", "GRID", "DeciderOpenSet", "OpenSetScores", "OperatingPoint",
           "allowed_false_accepts", "fpir_upper_bound", "open_set_scores", "rates_at", "strangers_needed",
           "threshold_for_count", "threshold_for_rate"]

GRID = 1e-4  # thresholds are recommended on this grid, so model.json holds a readable number
CURVE_STEP = 0.01  # the curve in report.json is sampled every CURVE_STEP
CONFIDENCE = 0.95  # of the FPIR upper bound a stored threshold must keep under its target


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be large, p tiny)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def fpir_upper_bound(named: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of FPIR after `named` of `n` unknown faces were named: the largest p
    under which seeing so few named faces still has probability >= 1 - confidence."""
    if n <= 0:
        return 1.0
    if named >= n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = named / n, 1.0
    for _ in range(100):  # bisection: the CDF falls as p grows
        mid = (lo + hi) / 2
        if _binom_cdf(named, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def allowed_false_accepts(n: int, target: float, confidence: float = CONFIDENCE) -> int | None:
    """The most of `n` unknown faces that may be named with FPIR's upper bound still <= `target` (None: not even 0)."""
    if fpir_upper_bound(0, n, confidence) > target:
        return None
    lo, hi = 0, n  # the bound grows with the count named: the last count that keeps it under the target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fpir_upper_bound(mid, n, confidence) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def strangers_needed(target: float, confidence: float = CONFIDENCE) -> int:
    """Unknown faces needed, none of them named, to show FPIR <= `target` at `confidence` (bound 1-(1-c)^(1/n))."""
    if target <= 0.0:
        raise ValueError("a target FPIR of 0 can never be shown on a finite set of strangers")
    if target >= 1.0:
        return 0
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-target) - 1e-9)


def threshold_for_rate(negatives: np.ndarray, n_total: int, target: float, grid: float = GRID) -> float:
    """Smallest threshold on `grid` with #{negatives >= t} / n_total <= target (-1.0: none needed). `n_total`
    counts every trial, including those that can never be false accepts."""
    return threshold_for_count(negatives, math.floor(target * n_total + 1e-9), grid)


def threshold_for_count(negatives: np.ndarray, allowed: int, grid: float = GRID) -> float:
    """Smallest threshold on `grid` with at most `allowed` of `negatives` >= t (-1.0: none needed)."""
    neg = np.sort(np.asarray(negatives, np.float64))[::-1]
    if allowed >= len(neg):
        return -1.0
    # Just above the (allowed+1)-th highest negative score: it and everything below are refused.
    v = neg[allowed]
    k = math.ceil(round(v / grid, 6))
    t = round(k * grid, 6)
    if t <= v:  # compared after rounding: the stored value is the one that must refuse v
        t = round((k + 1) * grid, 6)
    return t


def rates_at(known_correct: np.ndarray, known_sim: np.ndarray, unknown_named: np.ndarray, unknown_sim: np.ndarray,
             thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPIR, DIR) at each threshold; `unknown_named`: the decider named the unknown face (before the threshold)."""
    t = np.asarray(thresholds, np.float64)[:, None]
    fpir = ((unknown_sim[None, :] >= t) & unknown_named[None, :]).mean(axis=1) if len(unknown_sim) else np.zeros(len(t))
    dir_ = ((known_sim[None, :] >= t) & known_correct[None, :]).mean(axis=1) if len(known_sim) else np.zeros(len(t))
    return fpir, dir_


@dataclass
class OperatingPoint:
    threshold: float
    fpir: float
    dir: float

    def to_dict(self) -> dict:
        return {"threshold": round(self.threshold, 4), "fpir": round(self.fpir, 4), "dir": round(self.dir, 4)}


@dataclass
class DeciderOpenSet:
    at_current: OperatingPoint
    recommended: OperatingPoint
    curve_thresholds: np.ndarray  # every threshold at which a rate changes (plus the two above)
    curve_fpir: np.ndarray
    curve_dir: np.ndarray
    bounded: OperatingPoint | None = None  # the threshold that may be stored (module docstring); None: too few strangers

    def sampled_curve(self) -> dict:
        grid = np.round(np.arange(-1.0, 1.0 + CURVE_STEP / 2, CURVE_STEP), 4)
        idx = np.searchsorted(self.curve_thresholds, grid, side="left")
        # Rates at t equal those at the smallest curve threshold >= t (rates only change at the face scores).
        idx = np.clip(idx, 0, len(self.curve_thresholds) - 1)
        return {"threshold": grid.tolist(), "fpir": np.round(self.curve_fpir[idx], 4).tolist(),
                "dir": np.round(self.curve_dir[idx], 4).tolist()}

    def to_dict(self) -> dict:
        return {"at_current": self.at_current.to_dict(), "recommended": self.recommended.to_dict(),
                "bounded": None if self.bounded is None else self.bounded.to_dict(), "curve": self.sampled_curve()}


@dataclass
class OpenSetScores:
    n_known: int
    n_unknown: int
    unknown_source: str  # e.g. "--unknown people/" or "held out: alice, bob"
    threshold: float  # the model's current threshold
    target_fpir: float
    deciders: dict[str, DeciderOpenSet] = field(default_factory=dict)
    deployed: str = "knn"  # the decider identify uses: combined once finetuned, else knn
    notes: list[str] = field(default_factory=list)
    threshold_info: dict = field(default_factory=dict)

    @property
    def predicted_fpir(self) -> float | None:
        return self.threshold_info.get("expected_fpir")

    @property
    def recommended_threshold(self) -> float:
        return self.deciders[self.deployed].recommended.threshold

    @property
    def bounded_threshold(self) -> float | None:
        """The threshold `--set-threshold` stores: FPIR's upper bound at CONFIDENCE <= target (None: no such)."""
        b = self.deciders[self.deployed].bounded
        return None if b is None else b.threshold

    @property
    def strangers_needed(self) -> int:
        return strangers_needed(self.target_fpir) if self.target_fpir > 0 else 0

    def to_dict(self) -> dict:
        return {"n_known": self.n_known, "n_unknown": self.n_unknown, "unknown_source": self.unknown_source,
                "threshold": self.threshold, "target_fpir": self.target_fpir, "deployed": self.deployed,
                "recommended_threshold": round(self.recommended_threshold, 4),
                "bounded_threshold": None if self.bounded_threshold is None else round(self.bounded_threshold, 4),
                "confidence": CONFIDENCE, "notes": self.notes,
                "threshold_info": self.threshold_info, "predicted_fpir": self.predicted_fpir,
                "deciders": {d: s.to_dict() for d, s in self.deciders.items()}}


def open_set_scores(known: Decisions, labels: Sequence[str], unknown: Decisions, *, threshold: float, target_fpir: float,
                    unknown_source: str) -> OpenSetScores:
    """FPIR and DIR per decider at the current threshold and across thresholds, and a recommendation."""
    labels = [str(x) for x in labels]
    deployed = known.deployed
    out = OpenSetScores(len(labels), len(unknown), unknown_source, float(threshold), float(target_fpir), deployed=deployed)
    if len(unknown) and 1.0 / len(unknown) > target_fpir:
        out.notes.append(f"{len(unknown)} unknown faces: FPIR moves in steps of {1 / len(unknown):.3f}, so a target of "
                         f"{target_fpir:g} means no unknown face may be named; more unknown faces give a finer estimate")
    for d in known.deciders:
        kc = np.array([n == t for n, t in zip(known.names[d], labels)], bool)
        ks = known.similarity[d]
        un = np.array([n is not None for n in unknown.names[d]], bool)
        us = unknown.similarity[d]
        rec_t = threshold_for_rate(us[un], len(unknown), target_fpir)
        curve_t = np.unique(np.concatenate([ks, us, [threshold, rec_t, 1.0 + CURVE_STEP]]))
        fpir, dir_ = rates_at(kc, ks, un, us, curve_t)
        (f_cur, f_rec), (d_cur, d_rec) = rates_at(kc, ks, un, us, np.array([threshold, rec_t]))
        out.deciders[d] = DeciderOpenSet(OperatingPoint(float(threshold), float(f_cur), float(d_cur)),
                                         OperatingPoint(rec_t, float(f_rec), float(d_rec)), curve_t, fpir, dir_,
                                         _bounded_point(kc, ks, un, us, target_fpir))
    if out.bounded_threshold is None and target_fpir > 0:
        out.notes.append(f"{len(unknown)} unknown faces cannot show an FPIR of at most {target_fpir:g} at "
                         f"{CONFIDENCE:.0%} confidence: that needs at least {out.strangers_needed} unknown faces with "
                         "none named, so no threshold may be stored from them")
    return out


def _bounded_point(kc, ks, un, us, target: float) -> OperatingPoint | None:
    """The operating point whose FPIR upper bound stays <= `target` (None when the strangers are too few)."""
    allowed = allowed_false_accepts(len(us), target) if target > 0 else None
    if allowed is None:
        return None
    t = threshold_for_count(us[un], allowed)
    (f,), (d,) = rates_at(kc, ks, un, us, np.array([t]))
    return OperatingPoint(t, float(f), float(d))
