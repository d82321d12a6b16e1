"""One consistent view of a model directory: what its model.json named when it was read. `Recognizer` swaps
its view when model.json is switched; an operation uses one view throughout, so a reload never mixes two models.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecore.errors import GalleryError, ModelError
from gallery import open_gallery
from recognizer.cache import CropCache
from recognizer.detection.mtcnn import Detector
from recognizer.embedding.backbones import Embedder, default_weights, make_embedder
from recognizer.fpir import DEFAULT_TARGET_FPIR
from recognizer.modeldir.config import DEFAULT_THRESHOLDS, ModelConfig, config_stamp, load_config
from recognizer.modeldir.create import create_model_dir
from recognizer.modeldir.layout import GALLERY_DIR
from recognizer.decision import decide
from recognizer.pipeline import FacePipeline, PhotoResult
from recognizer.results import FaceIdentity, PhotoIdentification
from recognizer.network.checkpoint import load_finetuned

__all__ = ["View", "create_view", "decide_photo", "load_view", "make_view", "open_embedder", "open_network", "visible_classifier"]

log = logging.getLogger(__name__)


@dataclass
class View:
    """What model.json named when it was read."""

    config: ModelConfig
    embedder: Embedder
    gallery: object
    classifier: object
    pipeline: FacePipeline
    stamp: tuple | None
    pinned: bool = False  # a view of a model.json other than the one in use (a migration candidate): never reloaded


def make_view(config: ModelConfig, embedder: Embedder, gallery, classifier, cache: CropCache | None, stamp: tuple | None,
              pinned: bool = False) -> View:
    return View(config, embedder, gallery, classifier, FacePipeline(Detector(config.detector_settings()), embedder, cache),
                stamp, pinned)


def open_embedder(model_dir: Path, cfg: ModelConfig, weights_dir: str | Path | None = None, **embedder_kw) -> tuple[Embedder, object]:
    """(embedder, classifier or None) of a model directory as model.json `cfg` names it; ModelError
    if the weights found now are not the ones the model was built with."""
    embedder, classifier = _network(Path(model_dir), cfg, weights_dir, **embedder_kw)
    if embedder.model_id != cfg.model_id:
        raise ModelError(f"{model_dir}: the {cfg.backbone} weights found now (model id {embedder.model_id}) are not "
                         f"the ones this model was built with ({cfg.model_id})")
    return embedder, classifier


def _network(model_dir: Path, cfg: ModelConfig, weights_dir, **embedder_kw) -> tuple[Embedder, object]:
    if cfg.checkpoint:
        return load_finetuned(model_dir, cfg, weights_dir=weights_dir, **embedder_kw)
    return make_embedder(cfg.backbone, cfg.weights, weights_dir, **embedder_kw), None


def open_network(model_dir: str | Path, cfg: ModelConfig, weights_dir=None) -> tuple[Embedder, object]:
    """(embedder, classifier or None) of a model.json other than the one in use, checked against its model id."""
    if cfg.checkpoint and not (Path(model_dir) / cfg.checkpoint).is_file():
        raise ModelError(f"{model_dir}: {cfg.checkpoint} is not there")
    embedder, classifier = _network(Path(model_dir), cfg, weights_dir)
    if embedder.model_id != cfg.model_id:
        raise ModelError(f"{model_dir}: the {cfg.backbone} network found now has model id {embedder.model_id}, not "
                         f"{cfg.model_id} (other weights?); nothing was changed")
    return embedder, classifier


def load_view(d: Path, weights_dir, embedder_kw: dict, cache, gallery_uri: str | None = None) -> View:
    """Load what model.json names now. A finetune may switch model.json (and delete the gallery it
    named) between our reading it and opening the gallery: then read it again."""
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
        return make_view(cfg, embedder, gal, classifier, cache, stamp)
    raise AssertionError("unreachable")


def create_view(d: Path, backbone: str, weights, weights_dir, cache, embedder_kw: dict) -> View | None:
    """Create a `backbone` model directory at `d` and its view; None when another process created one meanwhile."""
    embedder = make_embedder(backbone, weights, weights_dir, **embedder_kw)
    cfg = ModelConfig(backbone=backbone, weights=default_weights(backbone, weights), model_id=embedder.model_id,
                      dim=embedder.dim, threshold=DEFAULT_THRESHOLDS[backbone], target_fpir=DEFAULT_TARGET_FPIR)
    if not create_model_dir(d, cfg):
        return None
    gal = open_gallery(d / GALLERY_DIR, model_id=cfg.model_id)
    log.info("created %s model in %s (%s)", backbone, d, cfg.model_id)
    return make_view(cfg, embedder, gal, None, cache, config_stamp(d))


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


def visible_classifier(st: View):
    if st.classifier is None:
        return None
    view = _ClassView(st.classifier, st.config.class_names, set(st.gallery.people()))
    return view if len(view.classes_) else None


def decide_photo(st: View, res: PhotoResult, thr: float) -> PhotoIdentification:
    """Name the faces of an analysed photo with view `st`: identify's answer, under threshold `thr`."""
    out = PhotoIdentification(res.source, size=res.size, error=res.error)
    if res.error is not None or not res.faces:
        return out
    # The same deciders evaluate.py and finetune.py score, so reports describe what identify does.
    d = decide(st.gallery, visible_classifier(st), res.embeddings, k=st.config.knn_k, model_id=st.config.model_id)
    final = d.deployed
    col = {p: j for j, p in enumerate(d.people)}

    def score(decider: str, i: int, name: str | None) -> float:
        return float(d.scores[decider][i, col[name]]) if name is not None else 0.0

    for i, face in enumerate(res.faces):
        knn_name = d.names["knn"][i]
        top = np.argsort(-d.scores["knn"][i])[:5]
        knn = {"name": knn_name, "score": round(score("knn", i, knn_name), 4),
               "similarity": round(float(d.similarity["knn"][i]), 4),
               "scores": {d.people[j]: round(float(d.scores["knn"][i, j]), 4) for j in top
                          if d.scores["knn"][i, j] > 0}}
        clf = None
        if "classifier" in d.scores:
            clf_name = d.names["classifier"][i]
            clf = {"name": clf_name, "probability": round(score("classifier", i, clf_name), 4)}
        name = d.names[final][i]
        sim = float(d.similarity[final][i])
        conf = score(final, i, name)
        if name is None:  # no candidate: the similarity is the nearest person's
            sim = float(d.neighbour_similarity[i].max(initial=0.0))
        if name is None or sim < thr or res.low_quality(i) is not None:  # a face under the quality floor is never named
            name, conf = None, None
        quality = res.quality[i] if i < len(res.quality) else None
        out.faces.append(FaceIdentity([float(v) for v in face.box], float(face.score), name, conf, sim, knn, clf, quality))
    return out
