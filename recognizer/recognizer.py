"""The recognizer: a model directory opened for enrolling and identifying people.

Identification names each face by a vote of its k nearest enrolled faces, weighted by
similarity; the face is called unknown (name None) when its similarity to the winner's closest
enrolled face is under the model's threshold. Once `finetune.py` has trained a classifier, its
prediction is combined with the vote (see `recognizer.combine`).
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from gallery.atomic import fsync_dir
from recognizer.cache import CropCache
from recognizer.detection.mtcnn import Detector
from recognizer.embedding.backbones import Embedder, make_embedder
from recognizer.errors import ModelError
from recognizer.image import ImageSource, list_images
from recognizer.config import (
    DEFAULT_THRESHOLDS,
    GALLERY_DIR,
    MODEL_FILE,
    ModelConfig,
    ensure_private_dir,
    load_config,
    save_config,
)
from recognizer.pipeline import FacePipeline, PhotoResult

log = logging.getLogger(__name__)


@dataclass
class FaceIdentity:
    box: list[float]
    detection_score: float
    name: str | None  # None: unknown
    score: float  # confidence of the decision, in [0, 1]
    similarity: float  # cosine similarity to the closest enrolled face of `name` (or of the best guess)
    knn: dict = field(default_factory=dict)
    classifier: dict | None = None

    def to_dict(self) -> dict:
        out = {
            "box": [round(v, 1) for v in self.box],
            "detection_score": round(self.detection_score, 4),
            "name": self.name,
            "score": round(self.score, 4),
            "similarity": round(self.similarity, 4),
            "knn": self.knn,
        }
        if self.classifier is not None:
            out["classifier"] = self.classifier
        return out


@dataclass
class PhotoIdentification:
    photo: str
    faces: list[FaceIdentity] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    error: str | None = None

    def annotated(self, image: ImageSource | None = None) -> Image.Image:
        """The photo (or `image`, the same photo already decoded) with boxes and names drawn:
        known faces in green, unknown ones in red dashes."""
        from recognizer.annotate import annotate

        return annotate(self.photo if image is None else image, self)

    def to_dict(self) -> dict:
        out = {"photo": self.photo, "faces": [f.to_dict() for f in self.faces]}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class FileOutcome:
    file: str
    status: str  # added | no face | several faces | unreadable | duplicate
    detail: str = ""

    def to_dict(self) -> dict:
        return {"file": self.file, "status": self.status, "detail": self.detail}


@dataclass
class EnrollReport:
    name: str
    files: list[FileOutcome] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(1 for f in self.files if f.status in ("added", "several faces"))

    @property
    def skipped(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status not in ("added", "several faces")]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "added": self.added,
            "skipped": [{"file": f.file, "reason": f.status + (f": {f.detail}" if f.detail else "")} for f in self.skipped],
            "files": [f.to_dict() for f in self.files],
        }


def open_embedder(model_dir: Path, cfg: ModelConfig, weights_dir: str | Path | None = None, **embedder_kw) -> tuple[Embedder, object]:
    """(embedder, classifier or None) of a model directory; ModelError if the weights found now
    are not the ones the model was built with."""
    classifier = None
    if cfg.checkpoint:
        from recognizer.training.checkpoint import load_finetuned

        embedder, classifier = load_finetuned(model_dir, cfg, weights_dir=weights_dir, **embedder_kw)
    else:
        embedder = make_embedder(cfg.backbone, cfg.weights, weights_dir, **embedder_kw)
    if embedder.model_id != cfg.model_id:
        raise ModelError(
            f"{model_dir}: the {cfg.backbone} weights found now (model id {embedder.model_id}) are not the ones "
            f"this model was built with ({cfg.model_id})"
        )
    return embedder, classifier


def _as_sources(photos) -> list[ImageSource]:
    """A folder's image files, one photo, or the photos of a sequence, as a list."""
    if isinstance(photos, (str, os.PathLike)):
        path = Path(photos)
        return list_images(path) if path.is_dir() else [path]
    if isinstance(photos, (bytes, bytearray, Image.Image)):
        return [photos]
    return list(photos)


class Recognizer:
    """One model directory: its config, embedder, gallery and (after finetuning) classifier."""

    def __init__(self, model_dir: Path, config: ModelConfig, embedder: Embedder, gallery, classifier=None, cache: CropCache | None = None):
        self.dir = Path(model_dir)
        self.config = config
        self.embedder = embedder
        self.gallery = gallery
        self.classifier = classifier
        self.pipeline = FacePipeline(Detector(config.detector_settings()), embedder, cache)

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        model_dir: str | Path,
        *,
        backbone: str | None = None,
        weights: str | None = None,
        weights_dir: str | Path | None = None,
        create: bool = False,
        cache: CropCache | None = None,
        gallery: str | None = None,
        **embedder_kw,
    ) -> "Recognizer":
        """Open a model directory; with `create`, make it first when it does not exist yet.

        `backbone`, when given for an existing model, must match the one it was built with.
        `gallery`, a Milvus URI ("milvus://HOST:PORT/COLLECTION" or "milvus-lite:PATH.db"), keeps
        the enrolled faces there instead of in the model directory; it is created on first use
        and must hold this model's embeddings.
        """
        d = Path(model_dir)
        if create and not (d / "model.json").exists():
            if not backbone:
                raise ModelError(f"{d}: no model here yet; say which backbone to create it with (--backbone sface|facenet)")
            rec = cls._create(d, backbone, weights, weights_dir, cache, **embedder_kw)
            if gallery is None:
                return rec
            rec.gallery.close()  # the model exists now; its faces go to `gallery`, opened below
        if gallery is not None:
            from gallery import create_gallery, is_uri

            if not is_uri(gallery):
                raise ModelError(f"{gallery}: a gallery is milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db")
            if create:
                cfg = load_config(d)
                create_gallery(gallery, model_id=cfg.model_id, dim=cfg.dim, exist_ok=True).close()
        cfg = load_config(d)
        if backbone and backbone != cfg.backbone:
            raise ModelError(f"{d}: this model uses the {cfg.backbone} backbone, not {backbone}")
        if weights and cfg.weights and weights != cfg.weights and not cfg.checkpoint:
            raise ModelError(f"{d}: this model uses weights {cfg.weights!r}, not {weights!r}")
        embedder, classifier = open_embedder(d, cfg, weights_dir, **embedder_kw)
        from gallery import open_gallery

        gal = open_gallery(gallery if gallery is not None else d / cfg.gallery, model_id=cfg.model_id)
        return cls(d, cfg, embedder, gal, classifier, cache)

    @classmethod
    def _create(cls, d: Path, backbone: str, weights, weights_dir, cache, **embedder_kw) -> "Recognizer":
        """Build the model in a private temporary directory beside `d`, then rename it into place.

        A crash part-way leaves `d` as it was (absent or empty), never a half-made model that
        blocks the next attempt; two processes creating the same model at once both end up
        using the one whose rename won.
        """
        from gallery import create_gallery, open_gallery

        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            if (d / MODEL_FILE).exists():  # another process created it since open() looked
                return cls.open(d, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=cache, **embedder_kw)
            raise ModelError(f"{d}: exists and is not empty, but holds no model.json; choose a new directory")
        embedder = make_embedder(backbone, weights, weights_dir, **embedder_kw)
        cfg = ModelConfig(
            backbone=backbone,
            weights=(weights or "vggface2") if backbone == "facenet" else None,
            model_id=embedder.model_id,
            dim=embedder.dim,
            threshold=DEFAULT_THRESHOLDS[backbone],
        )
        tmp: Path | None = None
        try:
            d.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.creating-", dir=d.parent))  # mode 0700
            create_gallery(tmp / GALLERY_DIR, model_id=cfg.model_id, dim=cfg.dim).close()
            save_config(tmp, cfg)
            try:
                os.rename(tmp, d)  # atomic; replaces `d` only if it is an empty directory
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (d / MODEL_FILE).exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                log.info("%s was created by another process meanwhile; opening it", d)
                return cls.open(d, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=cache, **embedder_kw)
            tmp = None
            fsync_dir(d.parent)
        except (OSError, sqlite3.Error) as exc:
            raise ModelError(f"{d}: could not create the model directory ({exc})") from exc
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        ensure_private_dir(d)
        gal = open_gallery(d / GALLERY_DIR, model_id=cfg.model_id)
        log.info("created %s model in %s (%s)", backbone, d, cfg.model_id)
        return cls(d, cfg, embedder, gal, None, cache)

    def save_config(self) -> None:
        save_config(self.dir, self.config)

    def close(self) -> None:
        """Close the gallery (its files and lock); the object is not usable afterwards."""
        self.gallery.close()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- people --------------------------------------------------------------------------
    @property
    def max_pixels(self) -> int:
        """Photos with more pixels are refused (ImageError) before they are decoded; a server lowers it."""
        return self.pipeline.max_pixels

    @max_pixels.setter
    def max_pixels(self, value: int) -> None:
        self.pipeline.max_pixels = int(value)

    def people(self) -> dict[str, int]:
        """Enrolled people and how many faces each has."""
        return self.gallery.people()

    @property
    def memory_budget(self) -> int:
        """Bytes one photo's decode may take (`recognizer.image.decode_cost`); a server lowers it."""
        return self.pipeline.memory_budget

    @memory_budget.setter
    def memory_budget(self, value: int) -> None:
        self.pipeline.memory_budget = int(value)

    def rename(self, old: str, new: str, *, allow_similar: bool = False) -> None:
        """Rename a person: PersonNotFound when `old` is not enrolled, PersonExists when `new` is,
        InvalidNameError when `new` looks like another enrolled person's name (unless `allow_similar`)."""
        self.gallery.rename_person(old, new, allow_similar=allow_similar)

    # ---- enrolling -----------------------------------------------------------------------
    def enroll(
        self, name: str, photos: ImageSource | Sequence[ImageSource], *, labels: Sequence[str] | None = None,
        progress: bool = False, allow_similar: bool = False,
    ) -> EnrollReport:
        """Add one face per photo (the largest) of `name`; photos already enrolled for them are skipped.
        A new name that looks like an enrolled person's is refused unless `allow_similar`.

        `photos`: a folder (its image files, sorted), one photo (a path, bytes or a PIL image) or a
        sequence of them. `labels`, one per photo, is what the report and the gallery call each
        photo instead of its path (`"<bytes>"` / `"<image>"` for photos held in memory).
        """
        from gallery import refuse_lookalikes, validate_name

        name = validate_name(name)
        if not allow_similar:  # before the photos are read; the gallery checks again under its lock
            refuse_lookalikes([name], self.gallery.people())
        sources = _as_sources(photos)
        if labels is not None and len(labels) != len(sources):
            raise ValueError(f"got {len(labels)} labels for {len(sources)} photos")
        return self.enroll_results(name, self.pipeline.analyze_many(sources, progress=progress), labels=labels,
                                   allow_similar=allow_similar)

    def enroll_results(self, name: str, results: Iterable[PhotoResult], *, labels: Sequence[str] | None = None,
                       allow_similar: bool = False) -> EnrollReport:
        """`enroll` for photos already analysed (by `FacePipeline` here or by workers elsewhere)."""
        from gallery import FaceRecord, validate_name

        name = validate_name(name)
        report = EnrollReport(name)
        vectors, records = [], []
        seen: set[str] = set()
        for res, label in zip(results, labels if labels is not None else itertools.repeat(None)):
            source = res.source if label is None else label
            if res.error is not None:
                report.files.append(FileOutcome(source, "unreadable", res.error))
                continue
            if self.gallery.has_content(name, res.content_hash) or res.content_hash in seen:
                report.files.append(FileOutcome(source, "duplicate", f"already enrolled for {name}"))
                continue
            if not res.faces:
                report.files.append(FileOutcome(source, "no face"))
                continue
            seen.add(res.content_hash)
            status, detail = "added", ""
            if len(res.faces) > 1:
                status, detail = "several faces", f"{len(res.faces)} faces; kept the largest"
            report.files.append(FileOutcome(source, status, detail))
            vectors.append(res.embeddings[0])
            records.append(FaceRecord(name, source, res.content_hash, tuple(float(v) for v in res.faces[0].box)))
        if vectors:
            self.gallery.add(np.stack(vectors), records, model_id=self.config.model_id, allow_similar=allow_similar)
            # Enrolled meanwhile by another process: the gallery stored it once, not twice.
            by_source = {f.file: f for f in report.files}
            for r in records:
                if r.id < 0:
                    by_source[r.source].status, by_source[r.source].detail = "duplicate", f"already enrolled for {name}"
        return report

    def remove(self, name: str) -> int:
        """Remove a person's faces from the gallery, and their photos from every cache: the crop
        cache (this recognizer's, or the default one when it runs without a cache, as the server
        and `--no-cache` do: earlier runs may have filled it) and the trunk features finetuning
        made from those crops. The number of faces removed; PersonNotFound when no one of that
        name is enrolled."""
        from gallery import validate_name

        from recognizer.cache import forget_photos

        name = validate_name(name)
        hashes = {r.content_hash for r in self.gallery.records(name)} if name in self.gallery.people() else set()
        n = self.gallery.remove_person(name)
        still_used = {r.content_hash for r in self.gallery.records()}
        # A group photo may still hold someone else's enrolled face: its entries stay.
        counts = forget_photos(hashes - still_used, self.pipeline.cache.root if self.pipeline.cache else None)
        log.info("removed %d faces of %s; deleted %d crop and %d trunk cache entries", n, name, counts["crops"], counts["trunk"])
        return n

    # ---- identifying ---------------------------------------------------------------------
    def identify(self, src: ImageSource, *, threshold: float | None = None) -> PhotoIdentification:
        """Name every face of one photo (raises ImageError for an unreadable one)."""
        return self.decide(self.pipeline.analyze(src), threshold)

    def identify_many(self, sources: Iterable[ImageSource], *, threshold: float | None = None, progress: bool = False) -> Iterator[PhotoIdentification]:
        """Results in input order; unreadable photos come back with `error` set."""
        for res in self.pipeline.analyze_many(sources, progress=progress):
            yield self.decide(res, threshold)

    def decide(self, res: PhotoResult, threshold: float | None = None) -> PhotoIdentification:
        """Name the faces of one analysed photo (embeddings computed here or by workers elsewhere)."""
        out = PhotoIdentification(res.source, size=res.size, error=res.error)
        if res.error is not None or not res.faces:
            return out
        from recognizer.decision import decide

        thr = self.config.threshold if threshold is None else threshold
        # The same deciders evaluate.py and finetune.py score, so reports describe what identify does.
        d = decide(self.gallery, self.classifier, res.embeddings, k=self.config.knn_k, model_id=self.config.model_id)
        final = "combined" if "combined" in d.scores else "knn"
        col = {p: j for j, p in enumerate(d.people)}

        def score(decider: str, i: int, name: str | None) -> float:
            return float(d.scores[decider][i, col[name]]) if name is not None else 0.0

        for i, face in enumerate(res.faces):
            knn_name = d.names["knn"][i]
            top = np.argsort(-d.scores["knn"][i])[:5]
            knn = {
                "name": knn_name,
                "score": round(score("knn", i, knn_name), 4),
                "similarity": round(float(d.similarity["knn"][i]), 4),
                "scores": {d.people[j]: round(float(d.scores["knn"][i, j]), 4) for j in top if d.scores["knn"][i, j] > 0},
            }
            clf = None
            if "classifier" in d.scores:
                clf_name = d.names["classifier"][i]
                clf = {"name": clf_name, "probability": round(score("classifier", i, clf_name), 4)}
            name = d.names[final][i]
            sim = float(d.similarity[final][i])
            conf = score(final, i, name)
            if name is None or sim < thr:
                name = None
            out.faces.append(FaceIdentity([float(v) for v in face.box], float(face.score), name, conf, sim, knn, clf))
        return out
