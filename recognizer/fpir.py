"""The unknown threshold from a target false-positive identification rate (FPIR), for the current gallery.

A stranger is named when their face matches some enrolled person at or above the threshold t.
Every enrolled person is one more chance of that, so at a fixed t the share of strangers named
(FPIR) grows with the number of people N. The model, measured on a stranger cohort:

    p_s(k, t) = share of cohort people of whom a random k of their faces include one with
                similarity >= t to stranger face s (exact over all k-subsets: 1 - C(n-a, k) / C(n, k)
                for a person with n faces, a of them >= t)
    FPIR(N, k, t) = mean over stranger faces s of  1 - (1 - p_s(k, t)) ** N

People are independent *given the stranger's face*: some faces look like many people, most like nobody, and
a plain 1 - (1 - mean p) ** N (concave in p) overstates FPIR as N grows, costing DIR. The kNN vote's winner is
at best the closest person, so the measured FPIR is at most this. FNIR(k, t), the share of a known person's
photos whose best similarity to k of their own faces is under t, is the DIR the threshold costs.
`build_table` makes a `FpirTable` (saved as JSON); `FpirTable.threshold_for` inverts it for a target.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from facecore.atomic import write_json_atomic

__all__ = ["DEFAULT_TARGET_FPIR", "FINE_STEP", "GALLERY_SIZES", "K_MAX", "TABLE_DIR", "TABLE_FORMAT", "THRESHOLDS",
           "FpirTable", "build_table", "fpir_from_rates", "genuine_miss_rates", "shipped_table", "stranger_match_rates",
           "table_path"]

K_MAX = 8  # faces per person the table covers; cohort people have 5-10 photos
THRESHOLDS = np.round(np.arange(0.20, 0.8001, 0.01), 2)
GALLERY_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
DEFAULT_TARGET_FPIR = 0.01
TABLE_DIR = Path(__file__).resolve().parent / "fpir_tables"
TABLE_FORMAT = 1
FINE_STEP = 1e-3  # thresholds are derived on this grid


def _miss_ratio(n: np.ndarray, a: np.ndarray, k: int) -> np.ndarray:
    """C(n - a, k) / C(n, k): chance that a random k-subset of n faces avoids all a matching ones."""
    n = np.asarray(n, np.int64)
    a = np.asarray(a, np.int64)
    out = np.ones(np.broadcast(n, a).shape)
    for i in range(k):  # prod_{i<k} (n - a - i) / (n - i)
        out = out * np.clip(n - a - i, 0, None) / np.maximum(n - i, 1)
    return out


def stranger_match_rates(strangers: np.ndarray, stranger_people: Sequence, enrolled: np.ndarray, enrolled_people: Sequence,
                         ks: Sequence[int], thresholds: Sequence[float]) -> np.ndarray:
    """p[s, ki, ti]: share of enrolled-side people (not s's own; with at least k faces) matched by stranger face s
    at k faces each."""
    s_people = np.asarray(stranger_people)
    e_people = np.asarray(enrolled_people)
    names, e_idx = np.unique(e_people, return_inverse=True)
    onehot = np.zeros((len(e_people), len(names)), np.float32)
    onehot[np.arange(len(e_people)), e_idx] = 1.0
    n_faces = onehot.sum(axis=0).astype(np.int64)
    own = s_people[:, None] == names[None, :]  # (S, P): the stranger's own label is not a stranger to them
    sim = np.asarray(strangers, np.float32) @ np.asarray(enrolled, np.float32).T
    out = np.zeros((len(strangers), len(ks), len(thresholds)))
    for ti, t in enumerate(thresholds):
        a = np.rint((sim >= t).astype(np.float32) @ onehot).astype(np.int64)  # (S, P) faces of each person >= t
        for ki, k in enumerate(ks):
            valid = (~own) & (n_faces >= k)[None, :]
            hit = 1.0 - _miss_ratio(n_faces[None, :], a, k)
            out[:, ki, ti] = np.where(valid, hit, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    return out


def genuine_miss_rates(faces: np.ndarray, people: Sequence, ks: Sequence[int], thresholds: Sequence[float]) -> np.ndarray:
    """fnir[ki, ti]: share of photos whose best similarity to a random k of their person's other photos (exact
    over subsets; people with at most k photos left out) is under t."""
    people = np.asarray(people)
    sim = np.asarray(faces, np.float32) @ np.asarray(faces, np.float32).T
    out = np.zeros((len(ks), len(thresholds)))
    groups = [np.flatnonzero(people == p) for p in np.unique(people)]
    for ti, t in enumerate(thresholds):
        sums = np.zeros(len(ks))
        counts = np.zeros(len(ks))
        for g in groups:
            block = sim[np.ix_(g, g)] >= t
            np.fill_diagonal(block, False)
            a = block.sum(axis=1)
            n_other = len(g) - 1
            for ki, k in enumerate(ks):
                if n_other >= k:
                    sums[ki] += _miss_ratio(np.full(len(g), n_other), a, k).sum()
                    counts[ki] += len(g)
        out[:, ti] = sums / np.maximum(counts, 1)
    return out


def fpir_from_rates(p: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Mean over strangers (axis 0) of 1 - (1 - p) ** N, for each N in `sizes` (new last axis)."""
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    n = np.asarray(sizes, np.float64)
    # log1p keeps the tiny per-person rates that dominate large galleries exact.
    return (-np.expm1(np.log1p(-np.minimum(p, 1 - 1e-15))[..., None] * n)).mean(axis=0)


@dataclass
class FpirTable:
    """FPIR and FNIR over thresholds, faces per person and gallery sizes, for one embedding model."""

    model_id: str
    backbone: str
    thresholds: np.ndarray  # (T,)
    ks: np.ndarray  # (K,) faces per person, 1..K_MAX
    sizes: np.ndarray  # (G,) gallery sizes (people)
    fpir: np.ndarray  # (K, G, T)
    fnir: np.ndarray  # (K, T)
    cohort: dict = field(default_factory=dict)  # what it was built from (counts only)

    def _k_weights(self, k: float) -> list[tuple[int, float]]:
        k = float(np.clip(k, self.ks[0], self.ks[-1]))
        lo = int(np.searchsorted(self.ks, k, side="right") - 1)
        lo = min(max(lo, 0), len(self.ks) - 1)
        if lo == len(self.ks) - 1 or k == self.ks[lo]:
            return [(lo, 1.0)]
        w = (k - self.ks[lo]) / (self.ks[lo + 1] - self.ks[lo])
        return [(lo, 1 - w), (lo + 1, w)]

    def fpir_curve(self, n_people: float, faces_per_person: float) -> np.ndarray:
        """FPIR at each of `self.thresholds` for `n_people` with `faces_per_person` each on average: log FPIR
        interpolated over log N, beyond the largest size along the last step's slope (at most linear in N)."""
        if n_people <= 0:
            return np.zeros(len(self.thresholds))
        top = int(self.ks[-1])
        if faces_per_person > top and top >= 2:
            # More faces per person than the cohort shows: extend the power law FPIR follows from K/2 to K faces,
            # its exponent capped at 1 (union bound: k faces are at most k times the chances of one).
            f_top = self.fpir_curve(n_people, top)
            f_half = self.fpir_curve(n_people, top / 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                gamma = np.clip(np.log(f_top / f_half) / math.log(2), 0.0, 1.0)
            gamma = np.where(np.isfinite(gamma), gamma, 1.0)
            return np.minimum(1.0, f_top * (faces_per_person / top) ** gamma)
        x = np.log(np.asarray(self.sizes, np.float64))
        curve = np.zeros(len(self.thresholds))
        for ki, w in self._k_weights(faces_per_person):
            f = np.log(np.maximum(self.fpir[ki], 1e-12))  # (G, T)
            ln = math.log(n_people)
            j = int(np.clip(np.searchsorted(x, ln, side="right") - 1, 0, len(x) - 2))  # beyond: the last step
            u = (ln - x[j]) / (x[j + 1] - x[j])
            val = np.exp(f[j] + u * (f[j + 1] - f[j]))
            val[self.fpir[ki, j + 1] <= 0] = 0.0
            curve += w * np.minimum(val, 1.0)
        return curve

    def fnir_curve(self, faces_per_person: float) -> np.ndarray:
        return sum(w * self.fnir[ki] for ki, w in self._k_weights(faces_per_person))

    def _fine(self, curve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.round(np.arange(self.thresholds[0], self.thresholds[-1] + FINE_STEP / 2, FINE_STEP), 4)
        # FPIR is near-exponential in t across the tail, so interpolate its logarithm.
        logc = np.log(np.maximum(curve, 1e-12))
        return t, np.exp(np.interp(t, self.thresholds, logc))

    def expected_fpir(self, threshold: float, n_people: float, faces_per_person: float) -> float:
        logc = np.log(np.maximum(self.fpir_curve(n_people, faces_per_person), 1e-12))
        v = float(np.exp(np.interp(threshold, self.thresholds, logc)))
        return 0.0 if v <= 1e-12 else v

    def expected_fnir(self, threshold: float, faces_per_person: float) -> float:
        return float(np.interp(threshold, self.thresholds, self.fnir_curve(faces_per_person)))

    def threshold_for(self, target_fpir: float, n_people: float, faces_per_person: float) -> float:
        """Smallest threshold (on a 0.001 grid) whose expected FPIR is at most `target_fpir`."""
        if not 0.0 < target_fpir < 1.0:
            raise ValueError(f"target FPIR must be in (0, 1), got {target_fpir}")
        t, c = self._fine(self.fpir_curve(n_people, faces_per_person))
        ok = np.flatnonzero(c <= target_fpir)
        if not len(ok):
            return float(t[-1])
        # FPIR falls with t; take the first point from which it stays under the target.
        bad = np.flatnonzero(c > target_fpir)
        first = int(bad[-1] + 1) if len(bad) else 0
        return float(t[min(first, len(t) - 1)])

    def to_dict(self) -> dict:
        def r(a):
            return [float(f"{v:.4g}") for v in np.asarray(a).ravel()]

        return {"format": TABLE_FORMAT, "model_id": self.model_id, "backbone": self.backbone,
                "thresholds": [round(float(v), 4) for v in self.thresholds], "faces_per_person": [int(v) for v in self.ks],
                "gallery_sizes": [int(v) for v in self.sizes], "cohort": self.cohort,
                "fpir": [[r(self.fpir[ki, gi]) for gi in range(len(self.sizes))] for ki in range(len(self.ks))],
                "fnir": [r(self.fnir[ki]) for ki in range(len(self.ks))]}

    @classmethod
    def from_dict(cls, d: dict, where: str = "table") -> "FpirTable":
        try:
            if d.get("format") != TABLE_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {TABLE_FORMAT}")
            t = cls(str(d["model_id"]), str(d["backbone"]), np.asarray(d["thresholds"], np.float64),
                    np.asarray(d["faces_per_person"], np.int64), np.asarray(d["gallery_sizes"], np.int64),
                    np.asarray(d["fpir"], np.float64), np.asarray(d["fnir"], np.float64), dict(d.get("cohort", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: not an FPIR table ({exc})") from None
        shape = (len(t.ks), len(t.sizes), len(t.thresholds))
        if t.fpir.shape != shape or t.fnir.shape != shape[::2] or len(t.thresholds) < 2 or len(t.sizes) < 2:
            raise ValueError(f"{where}: FPIR table arrays do not match its axes")
        if np.any(np.diff(t.thresholds) <= 0) or np.any(np.diff(t.sizes) <= 0) or np.any(np.diff(t.ks) <= 0):
            raise ValueError(f"{where}: FPIR table axes must increase")
        return t

    def save(self, path: str | Path) -> None:
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "FpirTable":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: unreadable FPIR table ({exc})") from None
        return cls.from_dict(raw, str(path))


def build_table(faces: np.ndarray, people: Sequence, *, model_id: str, backbone: str, cohort: dict | None = None,
                thresholds: Sequence[float] = THRESHOLDS, sizes: Sequence[int] = GALLERY_SIZES, k_max: int = K_MAX) -> FpirTable:
    """The table from cohort faces (unit embeddings) and their people: each face is a stranger to every other person."""
    people = np.asarray(people)
    counts = np.unique(people, return_counts=True)[1]
    if len(counts) < 3:
        raise ValueError(f"a stranger cohort needs at least 3 people with faces, got {len(counts)}")
    k_top = int(min(k_max, counts.max() - 1))
    ks = list(range(1, max(k_top, 1) + 1))
    thresholds = np.asarray(thresholds, np.float64)
    p = stranger_match_rates(faces, people, faces, people, ks, thresholds)
    fpir = np.moveaxis(fpir_from_rates(p, sizes), -1, 1)  # (K, T, G) -> (K, G, T)
    fnir = genuine_miss_rates(faces, people, ks, thresholds)
    info = {"people": int(len(counts)), "faces": int(len(people))}
    info.update(cohort or {})
    return FpirTable(model_id, backbone, thresholds, np.asarray(ks), np.asarray(sizes, np.int64), fpir, fnir, info)


def table_path(model_id: str, directory: Path = TABLE_DIR) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
    return directory / f"{safe}.json"


def shipped_table(model_id: str) -> FpirTable | None:
    """The table shipped with the package for this embedding model, or None."""
    path = table_path(model_id)
    if not path.exists():
        return None
    table = FpirTable.load(path)
    if table.model_id != model_id:
        raise ValueError(f"{path}: table is for model {table.model_id}, not {model_id}")
    return table
