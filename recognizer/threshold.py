"""Which unknown threshold a model uses now, and what it costs.

With a `target_fpir` in model.json, the threshold comes from the FPIR table (`recognizer.fpir`) for the gallery
as it is now (people, mean faces each); without one, or without a table, the fixed `threshold`. `--threshold`
(the server's `?threshold=`) overrides both for one run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recognizer.fpir import FpirTable, shipped_table

__all__ = ["Confusion", "ThresholdCache", "ThresholdInfo", "confusions", "gallery_shape", "load_table",
           "threshold_info"]

log = logging.getLogger(__name__)


@dataclass
class ThresholdInfo:
    threshold: float
    source: str  # "target FPIR" | "fixed" | "override"
    target_fpir: float | None
    n_people: int
    faces_per_person: float
    expected_fpir: float | None  # at `threshold`, for this gallery (None: no table)
    expected_fnir: float | None  # share of known people's photos called unknown at `threshold`: the DIR it costs
    note: str = ""

    def to_dict(self) -> dict:
        def r(v):
            return None if v is None else round(float(v), 4)

        return {"threshold": r(self.threshold), "source": self.source, "target_fpir": self.target_fpir,
                "people": self.n_people, "faces_per_person": round(self.faces_per_person, 2),
                "expected_fpir": r(self.expected_fpir), "expected_dir_cost": r(self.expected_fnir), "note": self.note}

    def describe(self) -> str:
        """One line for a person reading the CLI's output."""
        s = f"unknown threshold {self.threshold:.3f} ({self.source}"
        if self.source == "target FPIR":
            s += f" {self.target_fpir:g}"
        s += f", {self.n_people} people, {self.faces_per_person:.1f} faces each)"
        if self.expected_fpir is not None:
            s += (f": about {100 * self.expected_fpir:.2f}% of strangers would be named; "
                  f"about {100 * self.expected_fnir:.1f}% of photos of enrolled people called unknown")
        if self.note:
            s += f" [{self.note}]"
        return s


def load_table(model_dir: Path, cfg) -> FpirTable | None:
    """The model's own table (finetuned models) or the shipped one for its embeddings; None if neither."""
    if cfg.fpir_table:
        path = Path(model_dir) / cfg.fpir_table
        table = FpirTable.load(path)
        if table.model_id != cfg.model_id:
            log.warning("%s was calibrated for model %s, not %s: using the fixed threshold", path, table.model_id, cfg.model_id)
            return None
        return table
    return shipped_table(cfg.model_id)


def gallery_shape(people: dict[str, int]) -> tuple[int, float]:
    n = len(people)
    return n, (float(np.mean(list(people.values()))) if n else 0.0)


def threshold_info(cfg, table: FpirTable | None, people: dict[str, int], override: float | None = None) -> ThresholdInfo:
    n, k = gallery_shape(people)
    note = ""
    if override is not None:
        t, source = float(override), "override"
    elif cfg.target_fpir is not None and table is not None:
        t, source = (table.threshold_for(cfg.target_fpir, n, k) if n else float(cfg.threshold)), "target FPIR"
        if n and k > table.ks[-1]:
            note = f"more faces per person than the cohort shows ({int(table.ks[-1])}): FPIR extrapolated"
    else:
        t, source = float(cfg.threshold), "fixed"
        if cfg.target_fpir is not None:
            note = "no FPIR table for this model's embeddings: using its fixed threshold"
    if table is None or not n:
        return ThresholdInfo(t, source, cfg.target_fpir, n, k, None, None, note)
    return ThresholdInfo(t, source, cfg.target_fpir, n, k, table.expected_fpir(t, n, k), table.expected_fnir(t, k), note)


@dataclass
class Confusion:
    person: str
    other: str
    similarity: float
    photo: str  # the person's photo
    other_photo: str

    def to_dict(self) -> dict:
        return {"person": self.person, "other": self.other, "similarity": round(self.similarity, 4),
                "photo": self.photo, "other_photo": self.other_photo}


def confusions(gallery, threshold: float, people: list[str] | None = None) -> list[Confusion]:
    """Faces of `people` (default: everyone) at least `threshold` similar to someone else's (a mislabelled photo,
    or two people the model confuses), once per (person, other) pair with its closest faces."""
    records = {r.id: r for r in gallery.records()}
    ids, vecs = gallery.vectors()
    if not len(ids):
        return []
    who = np.array([records[int(i)].person for i in ids], dtype=object)
    rows = np.flatnonzero(np.isin(who, people)) if people is not None else np.arange(len(ids))
    best: dict[tuple[str, str], Confusion] = {}
    for start in range(0, len(rows), 1024):  # bounded memory for a large gallery
        r = rows[start:start + 1024]
        sim = vecs[r] @ vecs.T
        sim[who[r][:, None] == who[None, :]] = -np.inf
        i_s, j_s = np.nonzero(sim >= threshold)
        for i, j in zip(i_s, j_s):
            a, b = records[int(ids[r[i]])], records[int(ids[j])]
            key = (a.person, b.person)
            s = float(sim[i, j])
            if key not in best or s > best[key].similarity:
                best[key] = Confusion(a.person, b.person, s, a.source, b.source)
    return sorted(best.values(), key=lambda c: -c.similarity)


class ThresholdCache:
    """A model's FPIR table and threshold, worked out once per model, table and gallery shape."""

    def __init__(self) -> None:
        self._table: tuple | None = None  # (model id, table file, table or None)
        self._info: tuple | None = None

    def table(self, model_dir: Path, cfg) -> FpirTable | None:
        key = (cfg.model_id, cfg.fpir_table)
        if self._table is None or self._table[:2] != key:
            try:
                table = load_table(model_dir, cfg)
            except ValueError as exc:  # a damaged or missing table costs the derived threshold, not the model
                log.warning("%s; using the fixed threshold", exc)
                table = None
            self._table = (*key, table)
        return self._table[2]

    def info(self, model_dir: Path, cfg, people: dict[str, int], override: float | None = None) -> ThresholdInfo:
        key = (override, cfg.model_id, cfg.target_fpir, cfg.threshold, len(people), sum(people.values()))
        if self._info is None or self._info[0] != key:
            self._info = (key, threshold_info(cfg, self.table(model_dir, cfg), people, override))
        return self._info[1]
