"""The recognizer: a model directory opened for enrolling and identifying people.

A face is named by a similarity-weighted vote of its k nearest enrolled faces, and unknown (None) when its
similarity to the winner's closest face is under the threshold (from the target FPIR for the gallery as it is
now, `recognizer.threshold`, or fixed); a finetuned classifier's prediction joins the vote (`recognizer.combine`).
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from facecore.errors import ImageError, ModelError, PersonNotFound
from facecore.names import refuse_lookalikes, validate_name
from gallery import create_gallery, is_uri, open_gallery
from gallery.milvus_store import canonical
from recognizer.cache import CropCache
from recognizer import enrolment
from recognizer.chips import backfill_chips, chip_of
from recognizer.image import ImageSource
from recognizer.modeldir import stores
from recognizer.modeldir.config import ModelConfig, config_stamp, load_config, remember_gallery, save_config
from recognizer.modeldir.create import has_model
from recognizer.modeldir.directory import ModelDir
from recognizer.modeldir.layout import chip_store
from recognizer.modeldir.lock import writer_lock
from recognizer.modeldir.shared import attach
from recognizer.pipeline import PhotoResult
from recognizer.results import EnrollReport, PhotoIdentification
from recognizer.threshold import Confusion, ThresholdCache, ThresholdInfo, confusions
from recognizer.video.analysis import identify_video
from recognizer.video.reader import DEFAULT_SAMPLE_FPS, VideoLimits
from recognizer.view import View, create_view, decide_photo, load_view, make_view, open_network

__all__ = ["Recognizer"]

log = logging.getLogger(__name__)


class Recognizer:
    """One model directory: its config, embedder, gallery and (after finetuning) classifier. `refresh()` (run by
    every operation; one stat of model.json) reloads when model.json was switched (finetune, import, migration),
    so a long-lived Recognizer (the server's) never serves or writes a replaced model."""

    def __init__(self, model_dir: Path, view: View, cache: CropCache | None = None, *, weights_dir=None,
                 embedder_kw: dict | None = None, gallery_uri: str | None = None):
        self.dir = Path(model_dir)
        self.model = ModelDir(self.dir)
        self.gallery_uri = gallery_uri  # the faces are in Milvus, not in the model directory
        self.cache = cache
        self._weights_dir = weights_dir
        self._embedder_kw = dict(embedder_kw or {})
        self._reload_lock = threading.Lock()
        self._max_pixels: int | None = None  # set by a server: kept across reloads
        self._memory_budget: int | None = None
        self._thresholds = ThresholdCache()
        self._cur = view

    # The current view's parts (each call may see a newer view: operations use one `_cur`).
    config = property(lambda self: self._cur.config)
    embedder = property(lambda self: self._cur.embedder)
    gallery = property(lambda self: self._cur.gallery)
    classifier = property(lambda self: self._cur.classifier)
    pipeline = property(lambda self: self._cur.pipeline)

    @property
    def chips(self):
        return chip_store(self.dir, self.gallery_uri)

    @classmethod
    def open(cls, model_dir: str | Path, *, backbone: str | None = None, weights: str | None = None,
             weights_dir: str | Path | None = None, create: bool = False, cache: CropCache | None = None,
             gallery: str | None = None, **embedder_kw) -> "Recognizer":
        """Open a model directory (with `create`, made first if need be); `backbone` must match an existing model's.
        `gallery`, a Milvus URI ("milvus://HOST:PORT/COLLECTION" or "milvus-lite:PATH.db") holding this model's
        embeddings, keeps the faces there (their chips stay in the model directory); `create` creates it."""
        d = Path(model_dir)
        if gallery is not None and not is_uri(gallery):
            raise ModelError(f"{gallery}: a gallery is milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db")
        gallery = None if gallery is None else canonical(gallery)
        if create and not has_model(d):
            if not backbone:
                raise ModelError(f"{d}: no model here yet; say which backbone to create it with (--backbone sface|facenet)")
            view = create_view(d, backbone, weights, weights_dir, cache, embedder_kw)
            if view is not None and gallery is None:
                return cls(d, view, cache, weights_dir=weights_dir, embedder_kw=embedder_kw)
            if view is not None:
                view.gallery.close()  # the model exists now; its faces go to `gallery`, opened below
        if gallery is not None and create:
            cfg = load_config(d)
            create_gallery(gallery, model_id=cfg.model_id, dim=cfg.dim, exist_ok=True).close()
        gallery = remember_gallery(d, gallery)
        cfg = load_config(d)
        if backbone and backbone != cfg.backbone:
            raise ModelError(f"{d}: this model uses the {cfg.backbone} backbone, not {backbone}")
        if weights and cfg.weights and weights != cfg.weights and not cfg.checkpoint:
            raise ModelError(f"{d}: this model uses weights {cfg.weights!r}, not {weights!r}")
        view = load_view(d, weights_dir, embedder_kw, cache, gallery)
        return cls(d, view, cache, weights_dir=weights_dir, embedder_kw=embedder_kw, gallery_uri=gallery)

    @classmethod
    def pinned(cls, model_dir: str | Path, config: ModelConfig, *, weights_dir=None, cache: CropCache | None = None) -> "Recognizer":
        """A read-only Recognizer of one model.json's model (in use or a candidate's) that never follows model.json."""
        d = Path(model_dir)
        embedder, classifier = open_network(d, config, weights_dir)
        gal = open_gallery(config.gallery_uri or d / config.gallery, model_id=config.model_id)
        return cls(d, make_view(config, embedder, gal, classifier, cache, None, pinned=True), cache, weights_dir=weights_dir,
                   gallery_uri=config.gallery_uri)

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

    def _limit(field: str, doc: str):  # noqa: N805 - a property factory, run in the class body
        def set_limit(self, value: int) -> None:  # kept in `_<field>` too, for the views loaded later
            setattr(self, f"_{field}", int(value))
            setattr(self.pipeline, field, int(value))
        return property(lambda self: getattr(self.pipeline, field), set_limit, doc=doc)

    # Limits a server lowers, kept across reloads.
    max_pixels = _limit("max_pixels", "Photos with more pixels are refused (ImageError) before they are decoded.")
    memory_budget = _limit("memory_budget", "Bytes one photo's decode may take (`recognizer.image.decode_cost`).")
    del _limit

    def people(self) -> dict[str, int]:
        """Enrolled people and how many faces each has."""
        self.refresh()
        return self._cur.gallery.people()

    def records(self, person: str | None = None) -> list:
        """The enrolled faces (gallery records: name, source, photo sha256, box, chip id)."""
        self.refresh()
        return self._cur.gallery.records(person)

    def chip_ids(self) -> set[str]:
        """The ids of the chips stored in the model directory."""
        return self.chips.ids()

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
                self._cur = View(cfg, cur.embedder, cur.gallery, cur.classifier, cur.pipeline, stamp)
            else:
                self._cur = load_view(self.dir, self._weights_dir, self._embedder_kw, self.cache, self.gallery_uri)
                if self._max_pixels is not None:
                    self._cur.pipeline.max_pixels = self._max_pixels
                if self._memory_budget is not None:
                    self._cur.pipeline.memory_budget = self._memory_budget
                log.info("%s: model.json switched to %s (gallery %s); reloaded", self.dir, self._cur.config.model_id,
                         self._cur.config.gallery)
            # The replaced view's gallery is left open: another thread may still read it.
            return True

    @contextmanager
    def _writing(self) -> Iterator[View]:
        """The writer lock, and the current view under it."""
        with writer_lock(self.dir):
            if self.gallery_uri is not None:  # a shared gallery: removal through another directory reaches ours
                attach(self.gallery_uri, self.dir)
            self.refresh()
            yield self._cur

    @property
    def fpir_table(self):
        """The FPIR table of the current view's embeddings (reloaded when a finetune switches the model)."""
        return self._thresholds.table(self.dir, self.config)

    def threshold_info(self, override: float | None = None) -> ThresholdInfo:
        """The threshold identify uses now (derived for the current gallery unless fixed or overridden)."""
        return self._thresholds.info(self.dir, self.config, self.gallery.people(), override)

    def threshold_for(self, threshold: float | None = None) -> float:
        """The similarity under which a face is unknown: `threshold`, else the model's (see `threshold_info`)."""
        return self.threshold_info(threshold).threshold

    def set_target_fpir(self, target: float | None) -> None:
        """Store a target FPIR (None: go back to the fixed threshold) in model.json, atomically."""
        if target is not None and not 0.0 < float(target) < 1.0:
            raise ValueError(f"target FPIR must be a share in (0, 1), got {target}")
        self.config.target_fpir = None if target is None else float(target)
        self.save_config()

    def confusions(self, people: list[str] | None = None, threshold: float | None = None) -> list[Confusion]:
        """Enrolled faces of `people` that a photo of someone else would match (see `recognizer.threshold.confusions`)."""
        return confusions(self.gallery, self.threshold_info().threshold if threshold is None else threshold, people)

    def enroll(self, name: str, photos: ImageSource | Sequence[ImageSource], *, labels: Sequence[str] | None = None,
               progress: bool = False, allow_similar: bool = False, allow_low_quality: bool = False) -> EnrollReport:
        """Add the largest face of each photo (a folder, one photo or a sequence) as `name`, skipping photos already
        enrolled for them, and keep its chip; a name like an enrolled person's is refused unless `allow_similar`.
        `labels`, one per photo, name the photos in the report and the gallery instead of their paths. A face under
        the quality floor (`recognizer.quality`) is refused with its reasons unless `allow_low_quality`."""
        name = validate_name(name)
        if not allow_similar:  # before the photos are read; the gallery checks again under its lock
            refuse_lookalikes([name], self.gallery.people())
        sources = enrolment.as_sources(photos)
        if labels is not None and len(labels) != len(sources):
            raise ValueError(f"got {len(labels)} labels for {len(sources)} photos")
        self.refresh()
        st = self._cur
        results = st.pipeline.analyze_many(sources, progress=progress)
        # The chip is cut from the photo decoded as the pipeline decoded it (the crop cache holds one crop kind
        # only), so the chip's crops are the very crops that were embedded.
        items = ((res, partial(chip_of, src, res, st.pipeline.max_pixels, st.pipeline.memory_budget))
                 for src, res in zip(sources, results))
        return self._enroll(name, st, items, labels, allow_similar, allow_low_quality)

    def enroll_results(self, name: str, results: Iterable[tuple[PhotoResult, bytes | str | None]], *,
                       labels: Sequence[str] | None = None, allow_similar: bool = False,
                       allow_low_quality: bool = False) -> EnrollReport:
        """`enroll` for photos analysed elsewhere (`recognizer.bulk`): pairs of a PhotoResult and its largest face's
        chip (`chips.chip_of`), or why none could be cut (a str), or None for a photo without a usable face."""
        name = validate_name(name)
        if not allow_similar:
            refuse_lookalikes([name], self.gallery.people())

        def given(res: PhotoResult, chip: bytes | str | None) -> bytes:
            if not isinstance(chip, bytes):
                raise ImageError(res.source, chip or "no chip was cut for this face")
            return chip

        self.refresh()
        return self._enroll(name, self._cur, ((res, partial(given, res, chip)) for res, chip in results), labels,
                            allow_similar, allow_low_quality)

    def _enroll(self, name: str, st: View, items, labels: Sequence[str] | None, allow_similar: bool,
                allow_low_quality: bool = False) -> EnrollReport:
        report, pending = enrolment.screen(name, st, items, labels, allow_low_quality)
        if pending:
            with self._writing() as now:
                enrolment.commit(name, st, now, pending, self.chips, allow_similar)
        return report

    def make_chips(self) -> list[str]:
        """Chips for faces enrolled before chips were kept, from their photos; one line per face that cannot get one."""
        with self._writing() as st:
            return backfill_chips(self.dir, st.gallery, st.pipeline.detector, store=self.chips)

    def rename(self, old: str, new: str, *, merge: bool = False, allow_similar: bool = False) -> None:
        """Rename a person in every store of face data (`modeldir.stores`). PersonNotFound, PersonExists (unless
        `merge`), InvalidNameError when `new` looks like another enrolled person's (unless `allow_similar`)."""
        old, new = validate_name(old), validate_name(new)
        stores.rename_person(self.model, old, new, self._writing, merge=merge, allow_similar=allow_similar,
                             save_config=partial(save_config, self.dir))
        self.refresh()

    def remove(self, name: str) -> int:
        """Remove a person from every store of face data (`modeldir.stores`; PersonNotFound) and return how many
        faces went. The classifier cannot forget a class without retraining: it stops naming them (a class with no
        faces in the gallery is masked) until the next finetune."""
        name = validate_name(name)
        done = stores.remove_person(self.model, name, self._writing, gallery_uri=self.gallery_uri,
                                    cache_root=self.cache.root if self.cache else None)
        log.info("removed %d faces of %s; deleted %d crop and %d trunk cache entries", done.faces_removed, name,
                 done.counts["crops"], done.counts["trunk"])
        return done.faces_removed

    def remove_face(self, face_id: int):
        """Remove one enrolled face (a wrongly enrolled photo) from every store of face data, as `remove` does for a
        person (`modeldir.stores.remove_faces`); returns its record. FaceNotFound for an id not enrolled."""
        done = stores.remove_faces(self.model, {int(face_id)}, self._writing, gallery_uri=self.gallery_uri,
                                   cache_root=self.cache.root if self.cache else None)
        log.info("removed face %d of %s", face_id, done.person)
        return done.records[0]

    def move_face(self, face_id: int, person: str, *, allow_similar: bool = False):
        """Make one enrolled face `person`'s (enrolled or new; its id, chip and vector stay); returns its record as
        it was. FaceNotFound, FaceConflict (`person` has that photo), InvalidNameError (a look-alike name)."""
        person = validate_name(person)
        with self._writing() as st:
            moved = st.gallery.move_faces([int(face_id)], person, allow_similar=allow_similar)
        self.refresh()
        return moved[0] if moved else next(r for r in self.records(person) if r.id == int(face_id))

    def merge(self, old: str, new: str) -> None:
        """Merge two enrolled people: `old`'s faces become `new`'s (`rename` with merge); PersonNotFound unless both are."""
        if validate_name(new) not in self.people():
            raise PersonNotFound(f"no person named {new!r} to merge {old!r} into", name=new)
        self.rename(old, new, merge=True)

    def identify(self, src: ImageSource, *, threshold: float | None = None) -> PhotoIdentification:
        """Name every face of one photo (raises ImageError for an unreadable one)."""
        self.refresh()
        return self.decide(self._cur.pipeline.analyze(src), threshold=threshold)

    def identify_many(self, sources: Iterable[ImageSource], *, threshold: float | None = None, progress: bool = False) -> Iterator[PhotoIdentification]:
        """Results in input order; unreadable photos come back with `error` set."""
        self.refresh()
        for res in self._cur.pipeline.analyze_many(sources, progress=progress):
            yield self.decide(res, threshold=threshold)

    def analyze_and_identify(self, sources: Iterable[ImageSource], *, threshold: float | None = None,
                             progress: bool = False) -> Iterator[tuple[PhotoResult, PhotoIdentification]]:
        """`identify_many` with each photo's PhotoResult beside its decisions (for clustering the unknown faces)."""
        self.refresh()
        for res in self._cur.pipeline.analyze_many(sources, progress=progress):
            yield res, self.decide(res, threshold=threshold)

    def identify_video(self, source, *, fps: float | None = None, threshold: float | None = None, seconds: float | None = None,
                       name: str | None = None, progress: bool = False, **limits):
        """A VideoIdentification (one name per track) of a video file or a camera (`source` an int), analysing `fps`
        frames a second (default 5) for at most `seconds`; `limits`: VideoLimits fields. Raises VideoError."""
        limits.setdefault("memory_budget", self.memory_budget)  # a frame is decoded under a photo's budget
        bounds = VideoLimits(max_seconds=seconds, **limits)
        return identify_video(self, source, sample_fps=fps or DEFAULT_SAMPLE_FPS, threshold=threshold, limits=bounds,
                              name=name, progress=progress)

    def decide(self, res: PhotoResult, *, threshold: float | None = None) -> PhotoIdentification:
        """Name the faces of a photo `self.pipeline` has analysed (faces and embeddings), as identify does."""
        thr = self.threshold_for(threshold) if res.error is None and res.faces else 0.0  # no faces: none to compare
        return decide_photo(self._cur, res, thr)
