"""The stranger cohort: people nobody enrolls, whose faces show how often a stranger looks like someone.

The cohort is a folder of `<person>/*` photos (by default `cohort-celeba/` in the shared data;
`FACETOOL_COHORT` or an explicit path overrides it). Its people are split once, by person, into
a calibration part (the shipped FPIR table is built from it alone) and an evaluation part (held
out to check the table); the split is committed in `cohort_split.json` as folder names only, with
the label groups found to be one person (see `clean_labels`).

Only numbers derived from the cohort leave this module: embeddings stay in memory, and nothing
here records a photo's path.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from recognizer.image import list_images
from recognizer.sample_data import data_dir

__all__ = ["COHORT_DIRNAME", "SPLIT_FILE", "Cleaning", "CohortFaces", "clean_labels", "cohort_photos",
           "default_cohort_dir", "embed_cohort", "embed_photos", "load_split", "merge_people"]

log = logging.getLogger(__name__)

COHORT_DIRNAME = "cohort-celeba"
SPLIT_FILE = Path(__file__).resolve().parent / "cohort_split.json"


def default_cohort_dir() -> Path:
    env = os.environ.get("FACETOOL_COHORT")
    return Path(env).expanduser() if env else data_dir() / COHORT_DIRNAME


@dataclass
class CohortFaces:
    """One unit embedding per photo in which a face was found (the largest), with its person."""

    embeddings: np.ndarray  # (n, dim) float32
    people: np.ndarray  # (n,) person id (folder name, or the group's first name once merged)
    n_photos: int  # photos read, including those without a face
    n_no_face: int
    quality: list | None = None  # recognizer.quality.FaceQuality per face, where the pipeline assessed them

    def subset(self, keep: np.ndarray) -> "CohortFaces":
        quality = None if self.quality is None else [q for q, k in zip(self.quality, np.asarray(keep, bool)) if k]
        return CohortFaces(self.embeddings[keep], self.people[keep], int(np.sum(keep)), 0, quality)

    @property
    def low(self) -> np.ndarray:
        """Mask of the faces under the quality floor (none when quality was not assessed)."""
        if self.quality is None:
            return np.zeros(len(self.people), bool)
        return np.array([q is not None and q.low for q in self.quality], bool)


def load_split(path: str | Path = SPLIT_FILE) -> dict:
    """{"calibration": [...], "evaluation": [...], "same_person": [[...], ...], ...} from the committed file."""
    with open(path, encoding="utf-8") as fh:
        split = json.load(fh)
    for key in ("calibration", "evaluation"):
        if not isinstance(split.get(key), list):
            raise ValueError(f"{path}: no list of people under {key!r}")
    if set(split["calibration"]) & set(split["evaluation"]):
        raise ValueError(f"{path}: a person is in both the calibration and the evaluation part")
    return split


def cohort_photos(root: str | Path, people: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(paths, person per path), people in sorted order, photos sorted by name within each."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no stranger cohort here (a folder of <person>/ photos; set FACETOOL_COHORT)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if people is None else sorted(people)
    paths, labels = [], []
    for name in names:
        d = root / name
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: a person of the cohort split is missing from the cohort folder")
        files = sorted(list_images(str(d)))
        paths += files
        labels += [name] * len(files)
    return paths, labels


def embed_cohort(pipeline, root: str | Path, people: Sequence[str] | None = None, *, progress: bool = False) -> CohortFaces:
    """The largest face of every photo of `people` (default: every folder), through the project's own pipeline."""
    return embed_photos(pipeline, *cohort_photos(root, people), progress=progress)


def embed_photos(pipeline, paths: Sequence[str | Path], labels: Sequence[str], *, progress: bool = False) -> CohortFaces:
    """The largest face of each photo (person: the same item of `labels`); photos without one are counted."""
    emb, who, quality = [], [], []
    no_face = 0
    for res, label in zip(pipeline.analyze_many(paths, progress=progress), labels):
        if res.error is not None or not len(res.faces):
            no_face += 1
            continue
        emb.append(res.embeddings[0])
        who.append(label)
        quality.append(res.quality[0] if res.quality else None)
    dim = pipeline.embedder.dim
    return CohortFaces(np.stack(emb).astype(np.float32) if emb else np.zeros((0, dim), np.float32), np.array(who, dtype=object),
                       len(paths), no_face, quality)


def merge_people(faces: CohortFaces, groups: Sequence[Sequence[str]]) -> CohortFaces:
    """Relabel each group of labels found to be one person with its first (sorted) label."""
    people = faces.people.copy()
    for g in groups:
        g = sorted(g)
        people[np.isin(people, g)] = g[0]
    return CohortFaces(faces.embeddings, people, faces.n_photos, faces.n_no_face, faces.quality)


@dataclass
class Cleaning:
    same_person: list[list[str]]  # label groups whose faces match like one person's
    dropped: int  # photos that look like another label's person, or like none of their own label's photos
    kept: np.ndarray  # bool mask over the input faces


def clean_labels(faces: CohortFaces, *, quantile: float = 0.05, impostor_quantile: float = 0.99) -> Cleaning:
    """Labelling errors found from the embeddings alone, with levels from their own distributions:
    two labels are one person when their between-label median similarity is above the `quantile` of the
    within-label medians; a photo is dropped when it looks more like another label's person (above its own
    label's median and the highest median between different people), or when even its best match in its own
    label is under the `impostor_quantile` of different-person similarities (a bystander, or a wrong label)."""
    x, y = faces.embeddings, faces.people
    labels = sorted(set(y))
    idx = {p: np.flatnonzero(y == p) for p in labels}
    sim = x @ x.T
    med = _label_medians(sim, labels, idx)
    off = med.copy()
    np.fill_diagonal(off, -np.inf)
    groups = _same_person_groups(off, labels, float(np.nanquantile(np.diag(med), quantile)))
    group_of = {p: frozenset(g) for g in groups for p in g}
    impostor_top, impostor_low = _impostor_levels(sim, off, labels, idx, group_of, impostor_quantile)
    kept = _kept_faces(sim, y, labels, idx, group_of, impostor_top, impostor_low)
    return Cleaning([sorted(g) for g in sorted(groups, key=min)], int((~kept).sum()), kept)


def _label_medians(sim: np.ndarray, labels: list, idx: dict) -> np.ndarray:
    """(L, L) median similarity between two labels' faces (within a label: distinct pairs; NaN: none)."""
    L = len(labels)
    med = np.zeros((L, L))
    for a, pa in enumerate(labels):
        for b in range(a, L):
            block = sim[np.ix_(idx[pa], idx[labels[b]])]
            if a == b:
                block = block[~np.eye(len(block), dtype=bool)]
            med[a, b] = med[b, a] = np.median(block) if block.size else np.nan
    return med


def _same_person_groups(off: np.ndarray, labels: list, level: float) -> list[set[str]]:
    """Groups of labels joined by a between-label median (`off`, diagonal -inf) above `level`."""
    L = len(labels)
    pairs = [(labels[a], labels[b]) for a in range(L) for b in range(a + 1, L) if off[a, b] > level]
    groups: list[set[str]] = []
    for a, b in pairs:
        hit = [g for g in groups if a in g or b in g]
        merged = set().union(*hit, {a, b}) if hit else {a, b}
        groups = [g for g in groups if g not in hit] + [merged]
    return groups


def _impostor_levels(sim: np.ndarray, off: np.ndarray, labels: list, idx: dict, group_of: dict,
                     impostor_quantile: float) -> tuple[float, float]:
    """(highest median similarity between labels of different people, `impostor_quantile` of different-person
    face similarities)."""
    L = len(labels)
    diff = [off[a, b] for a in range(L) for b in range(a + 1, L)
            if group_of.get(labels[a], {labels[a]}) != group_of.get(labels[b], {labels[b]})]
    impostor_top = float(np.nanmax(diff)) if diff else 1.0
    same = np.zeros(sim.shape, bool)
    for p in labels:
        g = np.concatenate([idx[q] for q in group_of.get(p, {p})])
        same[np.ix_(idx[p], g)] = True
    impostor_low = float(np.quantile(sim[~same], impostor_quantile)) if (~same).any() else -1.0
    return impostor_top, impostor_low


def _kept_faces(sim: np.ndarray, y: np.ndarray, labels: list, idx: dict, group_of: dict,
                impostor_top: float, impostor_low: float) -> np.ndarray:
    """Mask of the faces that look like their own label's person (see `clean_labels`)."""
    kept = np.ones(len(y), bool)
    for i in range(len(y)):
        own_group = group_of.get(y[i], frozenset({y[i]}))
        per_label = np.array([np.median(sim[i, idx[p]]) if p not in own_group else -np.inf for p in labels])
        own = np.concatenate([idx[p] for p in own_group])
        own = own[own != i]
        own_med = float(np.median(sim[i, own])) if len(own) else -1.0
        if len(own) and float(np.max(sim[i, own])) < impostor_low:
            kept[i] = False
            continue
        best = int(np.argmax(per_label))
        if per_label[best] > max(own_med, impostor_top):
            kept[i] = False
            log.debug("face %d of %s looks like %s", i, y[i], labels[best])
    return kept
