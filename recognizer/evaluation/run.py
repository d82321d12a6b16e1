"""Evaluate a model directory on labelled photos: the library behind `evaluate.py`.

Closed set, open set and verification on pairs from one pass of detection and embedding per photo (its
largest face; a photo with none is counted and listed). The model is only read. With no folder of unknown
people, a share of the enrolled people is held out: removed from a temporary copy of the gallery, their
photos become the unknown faces (a classifier that still knows them is refused by the decision rule, since
none of the k neighbours is theirs).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from facecore.errors import FaceToolError
from facecore.names import UNKNOWN, match_folders
from gallery import open_gallery
from recognizer.modeldir.config import load_config, save_config
from recognizer.modeldir.lock import writer_lock
from recognizer.decision import decide
from recognizer.evaluation.mistakes import Mistake, answers, confusion_with_unknown, find_mistakes
from recognizer.evaluation.closed_set import ClosedSetScores, closed_set_from_decisions
from recognizer.evaluation.open_set import OpenSetScores, open_set_scores
from recognizer.evaluation.report import render_markdown, write_report
from recognizer.evaluation.verification import VerificationScores, verify_pairs
from recognizer.recognizer import Recognizer
from recognizer.threshold import threshold_info
from recognizer.training.dataset import SPLIT_FILE, list_people

__all__ = ["HOLDOUT_SHARE", "EvaluationOptions", "EvaluationReport", "FaceSet", "embed_labelled", "evaluate_model",
           "evaluate_recognizer", "labelled_photos", "set_threshold"]

log = logging.getLogger(__name__)

HOLDOUT_SHARE = 0.2


@dataclass
class EvaluationOptions:
    unknown_dir: str | None = None
    pairs_file: str | None = None
    pairs_root: str | None = None
    target_fpir: float = 0.01
    holdout_share: float = HOLDOUT_SHARE
    seed: int = 0
    progress: bool = False


@dataclass
class FaceSet:
    """Embeddings of the largest face of labelled photos, and the photos that gave none."""

    embeddings: np.ndarray
    labels: list[str]
    paths: list[str]
    hashes: list[str]
    undetected: list[dict] = field(default_factory=list)  # {"file", "person", "reason"}
    boxes: list = field(default_factory=list)  # the face's box in each photo (for the mistakes' thumbnails)

    def subset(self, keep: np.ndarray) -> "FaceSet":
        """The faces where `keep` is true (the photos without a face stay with the caller)."""
        idx = np.flatnonzero(keep)
        return FaceSet(self.embeddings[idx], [self.labels[i] for i in idx], [self.paths[i] for i in idx],
                       [self.hashes[i] for i in idx], boxes=[self.boxes[i] for i in idx] if self.boxes else [])


def embed_labelled(pipeline, paths: list[str], labels: list[str], progress: bool = False) -> FaceSet:
    emb, kept, kept_paths, hashes, undetected, boxes = [], [], [], [], [], []
    for res, label in zip(pipeline.analyze_many(paths, progress=progress), labels):
        if res.skip_reason is not None:
            undetected.append({"file": res.source, "person": label, "reason": res.skip_reason})
            continue
        emb.append(res.embeddings[0])
        kept.append(label)
        kept_paths.append(res.source)
        hashes.append(res.content_hash)
        boxes.append(tuple(float(v) for v in res.faces[0].box))
    dim = pipeline.embedder.dim
    return FaceSet(np.stack(emb) if emb else np.zeros((0, dim), np.float32), kept, kept_paths, hashes, undetected, boxes)


def labelled_photos(data_dir: str | Path, model_dir: str | Path) -> tuple[list[str], list[str], str]:
    """(paths, labels, description) of the evaluation photos: DATA_DIR/val/<person>/*, else for train/ alone
    the val photos finetune.py held out (split.json), else DATA_DIR/<person>/*."""
    data = Path(data_dir)
    if (data / "val").is_dir():
        s = list_people(data / "val")
        return s.paths, s.labels, f"{data / 'val'}"
    if (data / "train").is_dir():
        split = Path(model_dir) / SPLIT_FILE
        if not split.is_file():
            raise FaceToolError(f"{data}: has train/ but no val/, and {split} (finetune's held-out photos) is missing; "
                                "pass a folder of <person>/ photos the model was not trained on")
        val = json.loads(split.read_text(encoding="utf-8"))["val"]
        return val["paths"], val["labels"], f"{data / 'train'} (the validation share held out in {split})"
    s = list_people(data)
    return s.paths, s.labels, str(data)


@dataclass
class EvaluationReport:
    model_dir: str
    backbone: str
    model_id: str
    has_classifier: bool
    threshold: float
    knn_k: int
    data: str
    closed: ClosedSetScores | None = None
    open: OpenSetScores | None = None
    verification: VerificationScores | None = None
    undetected: dict[str, list[dict]] = field(default_factory=dict)  # section -> photos without a face
    notes: list[str] = field(default_factory=list)
    threshold_set: float | None = None  # written into model.json by --set-threshold
    mistakes: dict[str, list[Mistake]] = field(default_factory=dict)  # "closed_set" / "open_set" -> wrong answers
    open_confusion: tuple[list[str], np.ndarray] | None = None  # at the threshold in use, with an "unknown" row/column

    def to_dict(self) -> dict:
        return {"model_dir": self.model_dir, "backbone": self.backbone, "model_id": self.model_id,
                "has_classifier": self.has_classifier, "threshold": self.threshold, "knn_k": self.knn_k, "data": self.data,
                "closed_set": self.closed.to_dict() if self.closed is not None else None,
                "open_set": self.open.to_dict() if self.open is not None else None,
                "verification": self.verification.to_dict() if self.verification is not None else None,
                "undetected": self.undetected, "notes": self.notes, "threshold_set": self.threshold_set,
                "mistakes": {k: [m.to_dict() for m in v] for k, v in self.mistakes.items()},
                "open_set_confusion": None if self.open_confusion is None else
                {"names": self.open_confusion[0], "matrix": self.open_confusion[1].tolist()}}

    def markdown(self) -> str:
        """The report as Markdown (what `evaluate.py` prints)."""
        return render_markdown(self)

    def write(self, out_dir: str | Path, inputs: Sequence[str | Path] = ()) -> list[Path]:
        """report.md, report.json and the plots into `out_dir` (never among `inputs`: facecore.outputs); the paths written."""
        return write_report(self, out_dir, inputs)


def evaluate_model(model_dir: str | Path, data_dir: str | Path | None, opts: EvaluationOptions, cache=None) -> EvaluationReport:
    rec = Recognizer.open(model_dir, cache=cache)
    try:
        photos = labelled_photos(data_dir, model_dir) if data_dir is not None else None
        return evaluate_recognizer(rec, photos, opts)
    finally:
        rec.gallery.close()


def evaluate_recognizer(rec, photos: tuple[list[str], list[str], str] | None, opts: EvaluationOptions) -> EvaluationReport:
    """`evaluate_model` on an open Recognizer, on `photos` = (paths, labels, description) (None: pairs only)."""
    cfg = rec.config
    report = EvaluationReport(str(rec.dir), cfg.backbone, cfg.model_id, rec.classifier is not None,
                              rec.threshold_info().threshold, cfg.knn_k, "")
    if rec.classifier is None:
        report.notes.append("this model has no classifier (it was never finetuned): the kNN vote alone is reported")
    if photos is not None:
        paths, labels, report.data = photos
        enrolled = set(rec.gallery.people())
        labels = _as_enrolled(labels, enrolled, report)
        faces = embed_labelled(rec.pipeline, paths, labels, opts.progress)
        known = np.array([lab in enrolled for lab in faces.labels], bool)
        strangers = sorted(set(faces.labels) - enrolled)
        if strangers:
            report.notes.append(f"people in the data who are not enrolled, scored as unknown only: {', '.join(strangers)}")
        leaked = len({h for h in faces.hashes} & {r.content_hash for r in rec.gallery.records()})
        if leaked:
            report.notes.append(f"{leaked} evaluation photos are enrolled in the gallery: they find themselves, "
                                "so the figures are optimistic")
        kf = faces.subset(known)
        report.undetected["closed_set"] = [u for u in faces.undetected if u["person"] in enrolled]
        if len(kf.labels):
            dec = decide(rec.gallery, rec.classifier, kf.embeddings, k=cfg.knn_k, model_id=cfg.model_id)
            report.closed = closed_set_from_decisions(dec, kf.labels)
            d = dec.deployed
            report.mistakes["closed_set"] = find_mistakes(kf.labels, answers(dec.names[d], dec.similarity[d]),
                                                          dec.similarity[d], kf.paths, kf.boxes)
            report.open = _open_set(rec, faces, kf, dec, strangers, opts, report)
        else:
            report.notes.append("no face of an enrolled person was found in the data: nothing to score")
    if opts.pairs_file:
        if not opts.pairs_root:
            raise FaceToolError("--pairs needs --pairs-root, the folder holding <name>/<name>_0001.jpg")
        report.verification = verify_pairs(rec.pipeline, opts.pairs_file, opts.pairs_root, progress=opts.progress)
        report.undetected["verification"] = report.verification.skipped
    return report


def _has_boxes(faces: FaceSet) -> bool:
    return len(faces.boxes) == len(faces.labels)


def _open_mistakes(report, out, known: FaceSet, known_dec, unknown: FaceSet, unknown_dec) -> None:
    """The open set's wrong answers at the threshold in use, and its confusion matrix with "unknown"."""
    d, t = known_dec.deployed, out.threshold
    expected = list(known.labels) + [UNKNOWN] * len(unknown.labels)
    got = answers(known_dec.names[d], known_dec.similarity[d], t) + answers(unknown_dec.names[d], unknown_dec.similarity[d], t)
    sims = np.concatenate([known_dec.similarity[d], unknown_dec.similarity[d]])
    report.mistakes["open_set"] = find_mistakes(expected, got, sims, known.paths + unknown.paths,
                                                known.boxes + unknown.boxes if _has_boxes(known) and _has_boxes(unknown) else None)
    report.open_confusion = confusion_with_unknown(expected, got)


def _as_enrolled(labels: list[str], enrolled: set[str], report) -> list[str]:
    """Folder names as the enrolled people they name (`match_folders`, with a note for each loose match);
    FaceToolError, listing both sides, when no folder is anyone enrolled."""
    match = match_folders(labels, enrolled)
    if labels and not match.people:
        raise FaceToolError(f"{report.data}: none of its folders ({', '.join(sorted(set(labels)))}) is an enrolled person "
                            f"({', '.join(sorted(enrolled)) or 'nobody is enrolled'}); rename the folders or the people "
                            "(enroll.py --rename OLD NEW)")
    if match.loose:
        report.notes.append("folders matched to enrolled people by name: "
                            + ", ".join(f"{f} → {p}" for f, p in match.loose))
    for f, p in match.near.items():
        report.notes.append(f"folder {f} is nobody enrolled, so its photos count as a stranger's; did you mean {p}?")
    return [match.people.get(lab, lab) for lab in labels]


def _open_set(rec, faces: FaceSet, kf: FaceSet, known_dec, strangers: list[str], opts: EvaluationOptions, report):
    # Labelled people who are not enrolled are strangers to the model: unknown faces too.
    uf_parts = [faces.subset(np.array([lab in strangers for lab in faces.labels], bool))] if strangers else []
    if opts.unknown_dir:
        return _open_set_on_unknown_dir(rec, faces, kf, known_dec, strangers, opts, report, uf_parts)
    return _open_set_held_out(rec, faces, kf, strangers, opts, report, uf_parts)


def _open_set_on_unknown_dir(rec, faces: FaceSet, kf: FaceSet, known_dec, strangers: list[str],
                             opts: EvaluationOptions, report, uf_parts: list[FaceSet]):
    """Open set with the photos of `opts.unknown_dir` (less anyone enrolled) and the strangers as unknown faces."""
    cfg = rec.config
    s = list_people(Path(opts.unknown_dir))
    enrolled = set(rec.gallery.people())
    as_enrolled = match_folders(s.labels, enrolled).people  # a folder of an enrolled person is not unknown
    s.labels = [as_enrolled.get(lab, lab) for lab in s.labels]
    clash = sorted(set(s.labels) & enrolled)
    if clash:
        report.notes.append(f"{opts.unknown_dir}: {', '.join(clash)} are enrolled, so their photos are not unknown; left out")
    keep = [i for i, lab in enumerate(s.labels) if lab not in enrolled]
    unk = embed_labelled(rec.pipeline, [s.paths[i] for i in keep], [s.labels[i] for i in keep], opts.progress)
    uf_parts.append(unk)
    report.undetected["unknown"] = unk.undetected + [u for u in faces.undetected if u["person"] in strangers]
    unknown = _concat(uf_parts, faces.embeddings.shape[1])
    source = f"{opts.unknown_dir} ({len(set(unk.labels))} people)" + (f" and {', '.join(strangers)}" if strangers else "")
    unk_dec = decide(rec.gallery, rec.classifier, unknown.embeddings, k=cfg.knn_k, model_id=cfg.model_id)
    info = rec.threshold_info()
    out = open_set_scores(known_dec, kf.labels, unk_dec, threshold=info.threshold, target_fpir=opts.target_fpir,
                          unknown_source=source)
    out.threshold_info = info.to_dict()
    _open_mistakes(report, out, kf, known_dec, unknown, unk_dec)
    return out


def _open_set_held_out(rec, faces: FaceSet, kf: FaceSet, strangers: list[str], opts: EvaluationOptions, report,
                       uf_parts: list[FaceSet]):
    """Open set with a share of the enrolled people held out of a copy of the gallery (None, with a note, when
    fewer than 3 are in the data)."""
    people = sorted(set(kf.labels))
    if len(people) < 3:
        report.notes.append("open set skipped: holding people out needs at least 3 enrolled people in the data "
                            "(pass --unknown DIR instead)")
        return None
    n_hold = min(len(people) - 2, max(1, round(opts.holdout_share * len(people))))
    held = sorted(np.random.default_rng(opts.seed).choice(people, n_hold, replace=False).tolist())
    kn, kn_dec, unknown, un_dec, info = _decide_without(rec, kf, held, uf_parts, faces.embeddings.shape[1])
    report.undetected["unknown"] = [u for u in faces.undetected if u["person"] in set(held) | set(strangers)]
    source = f"held out of a copy of the gallery: {', '.join(held)}" + (f"; not enrolled: {', '.join(strangers)}" if strangers else "")
    out = open_set_scores(kn_dec, kn.labels, un_dec, threshold=info.threshold, target_fpir=opts.target_fpir, unknown_source=source)
    out.threshold_info = info.to_dict()
    _open_mistakes(report, out, kn, kn_dec, unknown, un_dec)
    return out


def _decide_without(rec, kf: FaceSet, held: list[str], uf_parts: list[FaceSet], dim: int):
    """(known faces left, their decisions, the unknown faces, their decisions, the threshold) against a
    temporary copy of the gallery without the `held` people."""
    cfg = rec.config
    with tempfile.TemporaryDirectory(prefix="facetool-eval-") as tmp:
        copy = Path(tmp) / "gallery"
        shutil.copytree(rec.gallery.path, copy)
        with open_gallery(copy, model_id=cfg.model_id) as gal:
            for p in held:
                gal.remove_person(p)
            is_held = np.array([lab in held for lab in kf.labels], bool)
            kn, un = kf.subset(~is_held), kf.subset(is_held)
            unknown = _concat(uf_parts + [un], dim)
            kn_dec = decide(gal, rec.classifier, kn.embeddings, k=cfg.knn_k, model_id=cfg.model_id)
            un_dec = decide(gal, rec.classifier, unknown.embeddings, k=cfg.knn_k, model_id=cfg.model_id)
            # The threshold identify would use with this smaller gallery.
            info = threshold_info(cfg, rec.fpir_table, gal.people())
    return kn, kn_dec, unknown, un_dec, info


def _concat(parts: list[FaceSet], dim: int) -> FaceSet:
    if not parts:
        return FaceSet(np.zeros((0, dim), np.float32), [], [], [])
    return FaceSet(np.concatenate([p.embeddings for p in parts]), sum((p.labels for p in parts), []),
                   sum((p.paths for p in parts), []), sum((p.hashes for p in parts), []), sum((p.undetected for p in parts), []),
                   sum((p.boxes for p in parts), []) if all(_has_boxes(p) for p in parts) else [])


def set_threshold(model_dir: str | Path, threshold: float) -> None:
    """Store `threshold` in model.json (written atomically: readers see the old or the new file)."""
    if not -1.0 <= threshold <= 1.0:
        raise FaceToolError(f"{threshold} is not a cosine similarity in [-1, 1]")
    with writer_lock(model_dir):  # read-modify-write: a finetune's switch must not be written over
        cfg = load_config(model_dir)
        cfg.threshold = float(threshold)
        cfg.target_fpir = None  # a fixed threshold replaces the target (enroll.py --target-fpir sets one again)
        save_config(model_dir, cfg)
    log.info("threshold of %s set to %.4f", model_dir, threshold)
