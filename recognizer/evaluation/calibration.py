"""Calibrate an embedding model's FPIR table on the calibration part of a stranger cohort.

`benchmarks/calibrate_fpir.py` runs it for the shipped tables; `finetune.py` runs it for the
new embeddings it makes, since a table describes one embedding space only.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recognizer.evaluation.cohort import Cleaning, CohortFaces, clean_labels, embed_cohort, load_split, merge_people
from recognizer.fpir import FpirTable, build_table

__all__ = ["calibrate", "cohort_part", "split_people"]

log = logging.getLogger(__name__)


def split_people(root: Path, part: str = "calibration") -> tuple[list[str] | None, list[list[str]]]:
    """(people of `root` in one part of the split, label groups known to be one person); a cohort folder with
    none of the committed split's people (one of the user's own) is used whole (None)."""
    split = load_split()
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root}: no stranger cohort here (a folder of <person>/ photos; set FACETOOL_COHORT)")
    present = {p.name for p in Path(root).iterdir() if p.is_dir()}
    chosen = [p for p in split[part] if p in present]
    if not chosen:
        return None, []
    groups = [g for g in split.get("same_person", []) if set(g) <= set(chosen)]
    return chosen, groups


def cohort_part(pipeline, root: str | Path, part: str = "calibration", *, progress: bool = False) -> tuple[CohortFaces, Cleaning]:
    """Faces of one part of the split, label groups merged and mislabelled photos dropped."""
    root = Path(root)
    people, groups = split_people(root, part)
    faces = merge_people(embed_cohort(pipeline, root, people, progress=progress), groups)
    cleaning = clean_labels(faces)
    cleaning.same_person = [sorted(g) for g in groups] + cleaning.same_person  # those of the split, merged above
    kept = faces.subset(cleaning.kept)
    kept.n_photos, kept.n_no_face = faces.n_photos, faces.n_no_face
    return kept, cleaning


def calibrate(pipeline, root: str | Path, *, progress: bool = False) -> tuple[FpirTable, Cleaning]:
    """The FPIR table of `pipeline`'s embedder from the cohort at `root` (raises FileNotFoundError without one)."""
    faces, cleaning = cohort_part(pipeline, root, "calibration", progress=progress)
    info = {"photos": faces.n_photos, "no_face": faces.n_no_face, "mislabelled_dropped": cleaning.dropped,
            "same_person_groups": len(cleaning.same_person)}
    emb = pipeline.embedder
    table = build_table(faces.embeddings, faces.people, model_id=emb.model_id, backbone=emb.name, cohort=info)
    log.info("FPIR table for %s from %d faces of %d people", emb.model_id, len(faces.people), len(np.unique(faces.people)))
    return table, cleaning
