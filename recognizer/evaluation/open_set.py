"""Open-set identification: strangers must come back unknown, known people must still be named.

A face is named when its decider's similarity (`recognizer.decision`) is >= the threshold t:

    FPIR(t) = share of unknown faces given a name (false-positive identification rate)
    DIR(t)  = share of known faces given their own name (detection and identification rate)

The recommended threshold for a target FPIR is the smallest on a 1e-4 grid with FPIR <= target (any higher
names fewer known people). With N unknown faces FPIR moves in steps of 1/N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recognizer.decision import Decisions

__all__ = ["CURVE_STEP", "GRID", "DeciderOpenSet", "OpenSetScores", "OperatingPoint", "open_set_scores", "rates_at",
           "threshold_for_rate"]

GRID = 1e-4  # thresholds are recommended on this grid, so model.json holds a readable number
CURVE_STEP = 0.01  # the curve in report.json is sampled every CURVE_STEP


def threshold_for_rate(negatives: np.ndarray, n_total: int, target: float, grid: float = GRID) -> float:
    """Smallest threshold on `grid` with #{negatives >= t} / n_total <= target (-1.0: none needed). `n_total`
    counts every trial, including those that can never be false accepts."""
    neg = np.sort(np.asarray(negatives, np.float64))[::-1]
    allowed = math.floor(target * n_total + 1e-9)  # false accepts the target permits
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

    def sampled_curve(self) -> dict:
        grid = np.round(np.arange(-1.0, 1.0 + CURVE_STEP / 2, CURVE_STEP), 4)
        idx = np.searchsorted(self.curve_thresholds, grid, side="left")
        # Rates at t equal those at the smallest curve threshold >= t (rates only change at the face scores).
        idx = np.clip(idx, 0, len(self.curve_thresholds) - 1)
        return {"threshold": grid.tolist(), "fpir": np.round(self.curve_fpir[idx], 4).tolist(),
                "dir": np.round(self.curve_dir[idx], 4).tolist()}

    def to_dict(self) -> dict:
        return {"at_current": self.at_current.to_dict(), "recommended": self.recommended.to_dict(), "curve": self.sampled_curve()}


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

    def to_dict(self) -> dict:
        return {"n_known": self.n_known, "n_unknown": self.n_unknown, "unknown_source": self.unknown_source,
                "threshold": self.threshold, "target_fpir": self.target_fpir, "deployed": self.deployed,
                "recommended_threshold": round(self.recommended_threshold, 4), "notes": self.notes,
                "threshold_info": self.threshold_info, "predicted_fpir": self.predicted_fpir,
                "deciders": {d: s.to_dict() for d, s in self.deciders.items()}}


def open_set_scores(known: Decisions, labels: Sequence[str], unknown: Decisions, *, threshold: float, target_fpir: float,
                    unknown_source: str) -> OpenSetScores:
    """FPIR and DIR per decider at the current threshold and across thresholds, and a recommendation."""
    labels = [str(x) for x in labels]
    deployed = "combined" if "combined" in known.deciders else "knn"
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
                                         OperatingPoint(rec_t, float(f_rec), float(d_rec)), curve_t, fpir, dir_)
    return out
