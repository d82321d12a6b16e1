"""The recognizer: a model directory opened for enrolling and identifying people.

Identification names each face by a vote of its k nearest enrolled faces, weighted by
similarity; the face is called unknown (name None) when its similarity to the winner's closest
enrolled face is under the model's threshold: the one its target FPIR gives for the gallery as it
is now (see `recognizer.threshold`), or its fixed one. Once `finetune.py` has trained a classifier, its
prediction is combined with the vote (see `recognizer.combine`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from facecore.atomic import fsync_dir
from recognizer.cache import CropCache
from recognizer.detection.mtcnn import Detector
from recognizer.embedding.backbones import Embedder, default_weights, make_embedder
from facecore.errors import GalleryError, ModelError
from recognizer.image import ImageSource, list_images
from recognizer.config import (
    DEFAULT_THRESHOLDS,
    GALLERY_DIR,
    MODEL_FILE,
    ModelConfig,
    chip_store,
    config_stamp,
    ensure_private_dir,
    load_config,
    save_config,
    writer_lock,
)
from recognizer.fpir import DEFAULT_TARGET_FPIR
from recognizer.pipeline import FacePipeline, PhotoResult
from recognizer.results import EnrollReport, FaceIdentity, FileOutcome, PhotoIdentification
from recognizer.threshold import Confusion, ThresholdInfo, confusions, load_table, threshold_info

log = logging.getLogger(__name__)


def open_embedder(model_dir: Path, cfg: ModelConfig, weights_dir: str | Path | None = None, **embedder_kw) -> tuple[Embedder, object]:
    """(embedder, classifier or None) of a model directory as model.json `cfg` names it; ModelError
    if the weights found now are not the ones the model was built with."""
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


@dataclass
class _Loaded:
    """One consistent view of the model: what model.json named when it was read. Operations take
    one view and use it throughout, so a reload by another thread never mixes two models."""

    config: ModelConfig
    embedder: Embedder
    gallery: object
    classifier: object
    pipeline: FacePipeline
    stamp: tuple | None
    pinned: bool = False  # a view of a model.json other than the one in use (a migration candidate): never reloaded


class Recognizer:
    """One model directory: its config, embedder, gallery and (after finetuning) classifier.

    It follows the directory: `refresh()` (called by every operation, and cheap when nothing
    changed: one stat of model.json) reloads when a finetune, an import or a migration switched
    model.json, so a long-lived Recognizer (the server's) never serves or writes a replaced model.
    """

    def __init__(self, model_dir: Path, config: ModelConfig, embedder: Embedder, gallery, classifier=None,
                 cache: CropCache | None = None, *, weights_dir=None, embedder_kw: dict | None = None,
                 loaded: _Loaded | None = None, gallery_uri: str | None = None):
        self.dir = Path(model_dir)
        self.gallery_uri = gallery_uri  # the faces are in Milvus, not in the model directory
        self.cache = cache
        self._weights_dir = weights_dir
        self._embedder_kw = dict(embedder_kw or {})
        self._reload_lock = threading.Lock()
        self._max_pixels: int | None = None  # set by a server: kept across reloads
        self._memory_budget: int | None = None
        self._fpir_table: tuple | None = None  # (model id, table file, table or None)
        self._threshold_cache: tuple | None = None
        self._cur = loaded or _Loaded(config, embedder, gallery, classifier,
                                      FacePipeline(Detector(config.detector_settings()), embedder, cache), config_stamp(self.dir))

    # The current view's parts (each call may see a newer view: operations use one `_cur`).
    config = property(lambda self: self._cur.config)
    embedder = property(lambda self: self._cur.embedder)
    gallery = property(lambda self: self._cur.gallery)
    classifier = property(lambda self: self._cur.classifier)
    pipeline = property(lambda self: self._cur.pipeline)

    @property
    def chips(self):
        return chip_store(self.dir, self.gallery_uri)

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
        the enrolled faces there instead of in the model directory (their chips stay in the model
        directory, apart from its own gallery's); with `create` it is created on first use. It
        must hold this model's embeddings.
        """
        d = Path(model_dir)
        if gallery is not None:
            from gallery import is_uri

            if not is_uri(gallery):
                raise ModelError(f"{gallery}: a gallery is milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db")
        if create and not (d / "model.json").exists():
            if not backbone:
                raise ModelError(f"{d}: no model here yet; say which backbone to create it with (--backbone sface|facenet)")
            rec = cls._create(d, backbone, weights, weights_dir, cache, **embedder_kw)
            if gallery is None:
                return rec
            rec.close()  # the model exists now; its faces go to `gallery`, opened below
        if gallery is not None and create:
            from gallery import create_gallery

            cfg = load_config(d)
            create_gallery(gallery, model_id=cfg.model_id, dim=cfg.dim, exist_ok=True).close()
        cfg = load_config(d)
        if backbone and backbone != cfg.backbone:
            raise ModelError(f"{d}: this model uses the {cfg.backbone} backbone, not {backbone}")
        if weights and cfg.weights and weights != cfg.weights and not cfg.checkpoint:
            raise ModelError(f"{d}: this model uses weights {cfg.weights!r}, not {weights!r}")
        loaded = _load(d, weights_dir, embedder_kw, cache, gallery)
        return cls(d, loaded.config, loaded.embedder, loaded.gallery, loaded.classifier, cache,
                   weights_dir=weights_dir, embedder_kw=embedder_kw, loaded=loaded, gallery_uri=gallery)

    @classmethod
    def pinned(cls, model_dir: str | Path, config: ModelConfig, *, weights_dir=None, cache: CropCache | None = None) -> "Recognizer":
        """A read-only view of one model.json's model in `model_dir` (the one in use or a migration
        candidate's), which never follows model.json: for comparing two versions side by side."""
        from gallery import open_gallery
        from recognizer.training.candidate import network_for

        d = Path(model_dir)
        embedder, classifier = network_for(d, config, weights_dir)
        gal = open_gallery(d / config.gallery, model_id=config.model_id)
        loaded = _Loaded(config, embedder, gal, classifier, FacePipeline(Detector(config.detector_settings()), embedder, cache),
                         None, pinned=True)
        return cls(d, config, embedder, gal, classifier, cache, weights_dir=weights_dir, loaded=loaded)

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
            weights=default_weights(backbone, weights),
            model_id=embedder.model_id,
            dim=embedder.dim,
            threshold=DEFAULT_THRESHOLDS[backbone],
            target_fpir=DEFAULT_TARGET_FPIR,
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
        return cls(d, cfg, embedder, gal, None, cache, weights_dir=weights_dir, embedder_kw=embedder_kw)

    def save_config(self) -> None:
        with writer_lock(self.dir):
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
        self._max_pixels = int(value)
        self.pipeline.max_pixels = int(value)

    def people(self) -> dict[str, int]:
        """Enrolled people and how many faces each has."""
        self.refresh()
        return self._cur.gallery.people()

    @property
    def memory_budget(self) -> int:
        """Bytes one photo's decode may take (`recognizer.image.decode_cost`); a server lowers it."""
        return self.pipeline.memory_budget

    @memory_budget.setter
    def memory_budget(self, value: int) -> None:
        self._memory_budget = int(value)
        self.pipeline.memory_budget = int(value)

    def records(self, person: str | None = None) -> list:
        """The enrolled faces (gallery records: name, source, photo sha256, box, chip id)."""
        self.refresh()
        return self._cur.gallery.records(person)

    def chip_ids(self) -> set[str]:
        """The ids of the chips stored in the model directory."""
        return self.chips.ids()

    def export(self, path: str | os.PathLike) -> dict:
        """Write every enrolled face (names, chips, vectors) to one archive (see `recognizer.archive`)."""
        from recognizer.archive import export_model

        self.refresh()
        return export_model(self, path)

    def import_archive(self, path: str | os.PathLike):
        """Add the faces of an exported archive; an ImportReport (people skipped as clashes are listed)."""
        from recognizer.archive import import_archive

        return import_archive(self, path)

    # ---- following the model directory ---------------------------------------------------
    def refresh(self) -> bool:
        """Reload if model.json was switched since this view was loaded; returns whether it was."""
        if self._cur.pinned or config_stamp(self.dir) == self._cur.stamp:
            return False
        with self._reload_lock:
            cur = self._cur
            stamp = config_stamp(self.dir)
            if stamp == cur.stamp:
                return False
            cfg = load_config(self.dir)
            same = (cfg.backbone, cfg.weights, cfg.model_id, cfg.gallery, cfg.checkpoint) == (
                cur.config.backbone, cur.config.weights, cur.config.model_id, cur.config.gallery, cur.config.checkpoint)
            if same:  # threshold, class names...: the networks and the gallery stay
                self._cur = _Loaded(cfg, cur.embedder, cur.gallery, cur.classifier, cur.pipeline, stamp)
            else:
                self._cur = _load(self.dir, self._weights_dir, self._embedder_kw, self.cache, self.gallery_uri)
                if self._max_pixels is not None:
                    self._cur.pipeline.max_pixels = self._max_pixels
                if self._memory_budget is not None:
                    self._cur.pipeline.memory_budget = self._memory_budget
                log.info("%s: model.json switched to %s (gallery %s); reloaded", self.dir, self._cur.config.model_id,
                         self._cur.config.gallery)
            # The replaced view's gallery is not closed here: a request on another thread may still
            # be reading it. It closes when the last reference goes.
            return True

    @contextmanager
    def _writing(self) -> Iterator[_Loaded]:
        """The writer lock, and the current view under it."""
        with writer_lock(self.dir):
            self.refresh()
            yield self._cur

    # ---- the unknown threshold -------------------------------------------------------------
    @property
    def fpir_table(self):
        """The FPIR table of the current view's embeddings (reloaded when a finetune switches the model)."""
        cfg = self.config
        key = (cfg.model_id, cfg.fpir_table)
        if self._fpir_table is None or self._fpir_table[:2] != key:
            try:
                table = load_table(self.dir, cfg)
            except ValueError as exc:  # a damaged or missing table costs the derived threshold, not the model
                log.warning("%s; using the fixed threshold", exc)
                table = None
            self._fpir_table = (*key, table)
        return self._fpir_table[2]

    def threshold_info(self, override: float | None = None) -> ThresholdInfo:
        """The threshold identify uses now (derived for the current gallery unless fixed or overridden)."""
        people = self.gallery.people()
        key = (override, self.config.model_id, self.config.target_fpir, self.config.threshold, len(people), sum(people.values()))
        if self._threshold_cache is None or self._threshold_cache[0] != key:
            self._threshold_cache = (key, threshold_info(self.config, self.fpir_table, people, override))
        return self._threshold_cache[1]

    def set_target_fpir(self, target: float | None) -> None:
        """Store a target FPIR (None: go back to the fixed threshold) in model.json, atomically."""
        if target is not None and not 0.0 < float(target) < 1.0:
            raise ValueError(f"target FPIR must be a share in (0, 1), got {target}")
        self.config.target_fpir = None if target is None else float(target)
        self.save_config()

    def confusions(self, people: list[str] | None = None, threshold: float | None = None) -> list[Confusion]:
        """Enrolled faces of `people` that a photo of someone else would match (see `recognizer.threshold.confusions`)."""
        return confusions(self.gallery, self.threshold_info().threshold if threshold is None else threshold, people)

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
        Each face's chip is stored in the model directory, so the face survives its photo.
        """
        from facecore.names import refuse_lookalikes, validate_name
        from recognizer.chips import chip_of

        name = validate_name(name)
        if not allow_similar:  # before the photos are read; the gallery checks again under its lock
            refuse_lookalikes([name], self.gallery.people())
        sources = _as_sources(photos)
        if labels is not None and len(labels) != len(sources):
            raise ValueError(f"got {len(labels)} labels for {len(sources)} photos")
        self.refresh()
        st = self._cur
        results = st.pipeline.analyze_many(sources, progress=progress)
        # The chip is cut from the photo itself (the crop cache holds one crop kind only), decoded
        # as the pipeline decoded it, so the chip's crops are the very crops that were embedded.
        items = ((res, partial(chip_of, src, res, st.pipeline.max_pixels, st.pipeline.memory_budget))
                 for src, res in zip(sources, results))
        return self._enroll(name, st, items, labels, allow_similar)

    def enroll_results(self, name: str, results: Iterable[tuple[PhotoResult, bytes | str | None]], *,
                       labels: Sequence[str] | None = None, allow_similar: bool = False) -> EnrollReport:
        """`enroll` for photos analysed elsewhere (Ray workers: `recognizer.bulk`): pairs of a
        PhotoResult and the chip of its largest face (`recognizer.chips.chip_of`), or the reason
        the chip could not be cut (a str), or None for a photo without a usable face."""
        from facecore.names import refuse_lookalikes, validate_name
        from facecore.errors import ImageError

        name = validate_name(name)
        if not allow_similar:
            refuse_lookalikes([name], self.gallery.people())

        def given(res: PhotoResult, chip: bytes | str | None) -> bytes:
            if not isinstance(chip, bytes):
                raise ImageError(res.source, chip or "no chip was cut for this face")
            return chip

        self.refresh()
        return self._enroll(name, self._cur, ((res, partial(given, res, chip)) for res, chip in results), labels,
                            allow_similar)

    def _enroll(self, name: str, st: _Loaded, items, labels: Sequence[str] | None, allow_similar: bool) -> EnrollReport:
        """Add face 0 of each (PhotoResult, chip maker) to the gallery; the chip maker returns the
        face's chip bytes or raises ImageError (the photo cannot be read now, or changed)."""
        from gallery import FaceRecord
        from recognizer.chips import chip_vectors
        from facecore.errors import ImageError

        report = EnrollReport(name)
        pending: list[tuple[FileOutcome, FaceRecord, np.ndarray, bytes]] = []
        seen: set[str] = set()
        for (res, make), label in zip(items, labels if labels is not None else itertools.repeat(None)):
            source = res.source if label is None else label
            if res.error is not None:
                report.files.append(FileOutcome(source, "unreadable", res.error))
                continue
            if st.gallery.has_content(name, res.content_hash) or res.content_hash in seen:
                report.files.append(FileOutcome(source, "duplicate", f"already enrolled for {name}"))
                continue
            if res.skip_reason is not None:  # "no face": an unreadable photo was reported above
                report.files.append(FileOutcome(source, res.skip_reason))
                continue
            try:
                chip = make()
            except ImageError as exc:
                report.files.append(FileOutcome(source, "unreadable", exc.reason))
                continue
            seen.add(res.content_hash)
            status, detail = "added", ""
            if len(res.faces) > 1:
                status, detail = "several faces", f"{len(res.faces)} faces; kept the largest"
            outcome = FileOutcome(source, status, detail)
            report.files.append(outcome)
            rec = FaceRecord(name, source, res.content_hash, tuple(float(v) for v in res.faces[0].box))
            pending.append((outcome, rec, res.embeddings[0], chip))
        if not pending:
            return report
        with self._writing() as now:
            # A finetune may have switched the model since the faces were embedded: the chips
            # give the new network's vectors without the photos.
            vectors = np.stack([p[2] for p in pending])
            if now.config.model_id != st.config.model_id:
                vectors = chip_vectors([p[3] for p in pending], now.embedder)
            keep = []
            for i, (outcome, rec, _, chip) in enumerate(pending):
                if now is not st and now.gallery.has_content(name, rec.content_hash):
                    outcome.status, outcome.detail = "duplicate", f"already enrolled for {name}"
                    continue
                keep.append(i)
            if keep:
                store = self.chips
                records = []
                for i in keep:
                    pending[i][1].chip = store.put(pending[i][3])
                    records.append(pending[i][1])
                now.gallery.add(vectors[keep], records, model_id=now.config.model_id, allow_similar=allow_similar)
                for r in records:  # enrolled meanwhile by another process: stored once, not twice
                    if r.id < 0:
                        outcome = next(p[0] for p in pending if p[1] is r)
                        outcome.status, outcome.detail = "duplicate", f"already enrolled for {name}"
        return report

    def make_chips(self) -> list[str]:
        """Chips for faces enrolled before chips were kept, from their photos where they are still
        there; returns one line per face that cannot get one (see `recognizer.chips.backfill_chips`)."""
        from recognizer.chips import backfill_chips

        with self._writing() as st:
            return backfill_chips(self.dir, st.gallery, st.pipeline.detector, store=self.chips)

    def rename(self, old: str, new: str, *, merge: bool = False, allow_similar: bool = False) -> None:
        """Rename a person in the gallery and in the classifier's answers (model.json's class names):
        PersonNotFound when `old` is not enrolled, PersonExists when `new` is (unless `merge`),
        InvalidNameError when `new` looks like another enrolled person's name (unless `allow_similar`)."""
        from facecore.names import validate_name

        from recognizer.clustering import runs

        old, new = validate_name(old), validate_name(new)
        # the runs' lock before the writer lock, as enrolling a cluster takes them
        with runs.runs_lock_if_any(self.dir), self._writing() as st:
            st.gallery.rename_person(old, new, merge=merge, allow_similar=allow_similar)
            runs.rename_person(self.dir, old, new)  # a cluster enrolled as `old` now says `new`
            if st.classifier is not None and old != new:
                names = {c: st.config.class_names.get(c, c) for c in map(str, st.classifier.classes_)}
                renamed = {c: (new if n == old else n) for c, n in names.items()}
                if renamed != names:
                    cfg = dataclasses.replace(st.config, class_names={c: n for c, n in renamed.items() if n != c})
                    save_config(self.dir, cfg)
                    self.refresh()

    def remove(self, name: str) -> int:
        """Remove a person everywhere (PersonNotFound when no one of that name is enrolled): their faces from the gallery, their chips, their photos'
        crops from the crop cache and their crops' features from the trunk cache, a pending
        candidate's gallery, any other gallery left in the model directory, and the clustering
        runs (see `recognizer.clustering.runs.forget_person`). The classifier, which cannot forget
        a class without retraining, stops naming them (a class with no faces in the gallery is
        masked) until the next finetune."""
        from facecore.names import validate_name
        from recognizer.cache import forget_photos
        from recognizer.clustering import runs

        from recognizer.training import candidate

        name = validate_name(name)
        # the runs' lock before the writer lock, as enrolling a cluster takes them
        with runs.runs_lock_if_any(self.dir), self._writing() as st:
            # a pending migration candidate holds a copy of their faces (and maybe training faces): gone too.
            # Candidates are built from the model directory's own gallery (not a Milvus one).
            own = self.gallery_uri is None
            n_cand, cand_chips = candidate.remove_person(self.dir, name) if own else (0, set())
            cand_keep = candidate.pending_chips(self.dir) if own else set()
            records = st.gallery.records(name) if name in st.gallery.people() else []
            other, other_still = _remove_from_other_galleries(self.dir, name, st.config.gallery if own else None)
            # The gallery in use goes last: a failure part way (a run that cannot be rewritten)
            # leaves the person enrolled, so the removal can simply be run again. And the runs
            # are scrubbed before the gallery may say PersonNotFound: a run can outlive the
            # person's removal by an older version, and naming them again is how it is reached.
            runs.forget_person(self.dir, name, {(r.content_hash, r.box) for r in records + other})
            n = st.gallery.remove_person(name) if records or not (n_cand or other) else 0
            rest = st.gallery.records()
            still_hashes = {r.content_hash for r in rest}
            still_chips = {r.chip for r in rest if r.chip} | (cand_keep if cand_keep is not None else set())
            store = self.chips
            gone_chips = ({r.chip for r in records + other if r.chip} | cand_chips) - still_chips
            chip_bytes = []
            for c in gone_chips:
                try:
                    chip_bytes.append(store.get(c))
                except GalleryError:
                    pass
            store.delete(gone_chips)
            if cand_keep is not None:  # None: a damaged candidate.json might name any chip
                store.sweep(still_chips)  # and chips left by enrolments killed before their commit
            if not own and other:
                # The gallery in use is elsewhere (Milvus) and keeps its chips apart, while the model
                # directory's own galleries keep theirs in its own chip store: the faces removed
                # from those take their chips with them, unless another face there still names one.
                local = chip_store(self.dir)
                local_gone = {r.chip for r in other if r.chip} - other_still
                for c in local_gone:
                    with contextlib.suppress(GalleryError):
                        chip_bytes.append(local.get(c))
                local.delete(local_gone)
            n = n or n_cand or len(other)
        # A group photo may still hold someone else's enrolled face: its crops stay cached.
        counts = forget_photos({r.content_hash for r in records + other} - still_hashes, self.cache.root if self.cache else None,
                               chips=chip_bytes)
        log.info("removed %d faces of %s; deleted %d crop and %d trunk cache entries", n, name, counts["crops"], counts["trunk"])
        return n

    # ---- identifying ---------------------------------------------------------------------
    def identify(self, src: ImageSource, *, threshold: float | None = None) -> PhotoIdentification:
        """Name every face of one photo (raises ImageError for an unreadable one)."""
        self.refresh()
        return self._decide(self._cur.pipeline.analyze(src), threshold)

    def identify_many(self, sources: Iterable[ImageSource], *, threshold: float | None = None, progress: bool = False) -> Iterator[PhotoIdentification]:
        """Results in input order; unreadable photos come back with `error` set."""
        self.refresh()
        for res in self._cur.pipeline.analyze_many(sources, progress=progress):
            yield self._decide(res, threshold)

    def analyze_and_identify(
        self, sources: Iterable[ImageSource], *, threshold: float | None = None, progress: bool = False
    ) -> Iterator[tuple[PhotoResult, PhotoIdentification]]:
        """`identify_many` with each photo's faces, crops and embeddings beside its decisions
        (face i of both is the same face): what clustering the unknown faces needs."""
        self.refresh()
        for res in self._cur.pipeline.analyze_many(sources, progress=progress):
            yield res, self._decide(res, threshold)

    def identify_video(self, source, *, fps: float | None = None, threshold: float | None = None, seconds: float | None = None,
                       name: str | None = None, progress: bool = False, **limits):
        """Follow and name the faces of a video file or a camera (`source` an int): a
        VideoIdentification, one name per track (see recognizer.video). `fps`: frames analysed per
        second (default 5); `seconds`: read no more than this much; `limits`: fields of
        recognizer.video.reader.VideoLimits (max_bytes, max_pixels, max_duration, timeout_ms).
        Raises VideoError for a file that is no video, cannot be opened or is over a limit."""
        from recognizer.video.analysis import identify_video
        from recognizer.video.reader import DEFAULT_SAMPLE_FPS, VideoLimits

        bounds = VideoLimits(max_seconds=seconds, **limits)
        return identify_video(self, source, sample_fps=fps or DEFAULT_SAMPLE_FPS, threshold=threshold, limits=bounds,
                              name=name, progress=progress)

    def identify_bulk(self, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, address: str | None = "auto",
                      workers: int | None = None, threshold: float | None = None, progress: bool = False):
        """Identify every photo of `inputs` (folders, or list files of one path per line) on Ray
        workers into the JSON Lines file `out`, resumably; a `recognizer.bulk.BulkSummary`. See
        `recognizer.bulk` (address: "auto", "local" or a Ray cluster address)."""
        from recognizer.bulk import identify_bulk

        return identify_bulk(self, inputs, out, address=address, workers=workers, threshold=threshold, progress=progress)

    def enroll_bulk(self, name: str, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                    address: str | None = "auto", workers: int | None = None, allow_similar: bool = False,
                    progress: bool = False):
        """`enroll` of every photo of `inputs` on Ray workers (chips included), one outcome line
        per photo in the JSON Lines file `out`, resumably; see `recognizer.bulk`."""
        from recognizer.bulk import enroll_bulk

        return enroll_bulk(self, name, inputs, out, address=address, workers=workers, allow_similar=allow_similar,
                           progress=progress)

    def threshold_for(self, threshold: float | None = None) -> float:
        """The similarity under which a face is unknown: `threshold` when given, else the model's
        (derived from its target FPIR for the gallery as it is now, see `threshold_info`)."""
        return self.threshold_info(threshold).threshold

    def decide(self, res: PhotoResult, *, threshold: float | None = None) -> PhotoIdentification:
        """Name the faces of a photo `self.pipeline` has analysed (faces and embeddings), as identify does."""
        return self._decide(res, threshold)

    def _decide(self, res: PhotoResult, threshold: float | None) -> PhotoIdentification:
        out = PhotoIdentification(res.source, size=res.size, error=res.error)
        if res.error is not None or not res.faces:
            return out
        from recognizer.decision import decide

        thr = self.threshold_for(threshold)
        # The same deciders evaluate.py and finetune.py score, so reports describe what identify does.
        st = self._cur
        d = decide(st.gallery, visible_classifier(st), res.embeddings, k=st.config.knn_k, model_id=st.config.model_id)
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


def _load(d: Path, weights_dir, embedder_kw: dict, cache, gallery_uri: str | None = None) -> _Loaded:
    """Load what model.json names now. A finetune may switch model.json (and delete the gallery it
    named) between our reading it and opening the gallery: then read it again."""
    from gallery import open_gallery

    for attempt in range(5):
        stamp = config_stamp(d)
        cfg = load_config(d)
        try:
            embedder, classifier = open_embedder(d, cfg, weights_dir, **embedder_kw)
            gal = open_gallery(gallery_uri if gallery_uri is not None else d / cfg.gallery, model_id=cfg.model_id)
        except (ModelError, GalleryError):
            if config_stamp(d) != stamp and attempt < 4:
                continue
            raise
        return _Loaded(cfg, embedder, gal, classifier, FacePipeline(Detector(cfg.detector_settings()), embedder, cache), stamp)
    raise AssertionError("unreachable")


class _ClassView:
    """The classifier as identify uses it: classes renamed since finetuning carry their new names,
    and classes of people no longer in the gallery (removed) are left out."""

    def __init__(self, clf, names: dict[str, str], people: set[str]) -> None:
        self._clf = clf
        mapped = [names.get(str(c), str(c)) for c in clf.classes_]
        self.classes_ = np.array(sorted({m for m in mapped if m in people}))
        col = {c: j for j, c in enumerate(self.classes_)}
        self._to = np.zeros((len(mapped), len(self.classes_)), np.float64)
        for i, m in enumerate(mapped):
            if m in col:  # two classes merged into one person add up
                self._to[i, col[m]] = 1.0

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._clf.predict_proba(X) @ self._to


def visible_classifier(st: _Loaded):
    if st.classifier is None:
        return None
    view = _ClassView(st.classifier, st.config.class_names, set(st.gallery.people()))
    return view if len(view.classes_) else None


def _remove_from_other_galleries(model_dir: Path, name: str, live: str | None) -> list:
    """Remove `name` from every gallery directory of the model directory but the one in use
    (`live`; None: the model's gallery is elsewhere, e.g. Milvus, so every one here is checked);
    returns the records removed and the chips the faces left in those galleries name. Caller
    holds the writer lock.

    Such a gallery is a pending candidate's (which `candidate.remove_person` has already done), a
    finetune's or switch's old one whose commit was killed after model.json was switched (deleted
    by the next build, switch or rollback), or a re-embed (`finetune.py --reembed`) being built by
    another process: the one build made outside the writer lock, so removal cannot tell such a
    gallery from a leftover. Deleting them would break that build (its candidate.json would name a
    missing gallery); removing the person from each, under the gallery's own lock, is right for
    all three: the build sees the person gone when it commits under the writer lock. A gallery
    that cannot be opened (being created this instant, or damaged) is reported, not skipped silently."""
    from facecore.errors import PersonNotFound
    from gallery import open_gallery
    from recognizer.config import GALLERY_NAME

    gone, still = [], set()
    for p in sorted(Path(model_dir).iterdir()):
        if p.name == live or not p.is_dir() or not (
                GALLERY_NAME.fullmatch(p.name) or p.name in (f"{GALLERY_DIR}.new", f"{GALLERY_DIR}.old")):
            continue
        try:
            with open_gallery(p) as g:
                if name in g.people():
                    records = g.records(name)
                    g.remove_person(name)
                    gone += records
                still |= {r.chip for r in g.records() if r.chip}
        except PersonNotFound:
            pass  # removed meanwhile by the build it belongs to
        except GalleryError as exc:
            log.warning("%s; it may still hold faces of %s", exc, name)
    if gone:
        log.info("removed %d faces of %s from galleries no model.json names", len(gone), name)
    return gone, still
