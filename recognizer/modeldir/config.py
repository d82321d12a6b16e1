"""model.json: what one model directory's recognizer is (backbone, weights, model id, detector
settings, unknown threshold, the gallery and checkpoint in use). It is written atomically and
only ever replaced by a rename (`config_stamp` relies on that).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facecore.atomic import write_json_atomic
from facecore.errors import GalleryError, ModelError
from facecore.outputs import special_file
from gallery.milvus_store import canonical
from recognizer.detection.settings import DetectorSettings
from recognizer.modeldir.lock import writer_lock
from recognizer.modeldir.layout import CHECKPOINT_NAME, FPIR_TABLE_NAME, GALLERY_DIR, GALLERY_NAME, MODEL_FILE

__all__ = ["DEFAULT_THRESHOLDS", "FORMAT_VERSION", "ModelConfig", "config_stamp", "load_config", "remember_gallery",
           "save_config"]

FORMAT_VERSION = 1

# Cosine similarity below which the nearest enrolled face is "not this person", per backbone
# (benchmarks/calibrate_threshold.py prints the figures):
# - sface 0.43: in the gap of deepface-test-dataset's 300 labelled pairs (different people <= 0.343,
#   same >= 0.551), below its middle (0.447) to leave room for hard photos of known people; above
#   OpenCV's 1:1 threshold (0.363) because identification keeps a stranger's best match over every
#   enrolled face: at 0.363, 6 of 62 strangers got a name from a 5-celebrity gallery, at 0.43 none
#   did, while the weakest correct match on 5-celebrity-faces val is 0.49.
# - facenet (VGGFace2) 0.40: facenet-pytorch's LFW split at Euclidean 1.1, i.e. cosine 1 - 1.1**2 / 2.
# The fallback: with a target FPIR the threshold comes from the FPIR table (recognizer.threshold);
# `evaluate.py --set-threshold` fixes one measured on the user's own people.
DEFAULT_THRESHOLDS = {"sface": 0.43, "facenet": 0.40}


@dataclass
class ModelConfig:
    backbone: str
    weights: str | None
    model_id: str  # of the embedding network (includes the checkpoint once finetuned)
    dim: int
    threshold: float  # the fixed threshold: used when target_fpir is None or no FPIR table fits the embeddings
    knn_k: int = 5
    detector: dict[str, Any] = field(default_factory=lambda: asdict(DetectorSettings()))
    checkpoint: str | None = None
    gallery: str = GALLERY_DIR  # finetune.py writes a new one beside the old and switches here
    version: int = FORMAT_VERSION
    # classifier class -> the name it has in the gallery now (people renamed since finetuning).
    # Classes whose person is not in the gallery (removed since) are masked until the next finetune.
    class_names: dict[str, str] = field(default_factory=dict)
    keep_versions: int = 2  # replaced versions kept for `finetune.py --rollback` (see recognizer.training.versions)
    # Share of strangers allowed to be named; the threshold is derived from it for the current
    # gallery. None (models made before it existed, or after --set-threshold): `threshold` is used.
    target_fpir: float | None = None
    fpir_table: str | None = None  # the model's own FPIR table file (finetuned embeddings), else the shipped one
    # Where the faces are when they are not in the model directory: a Milvus gallery URI (`--gallery`, recorded
    # the first time it is given, so later commands find the faces without it). Never credentials: those come
    # from the environment (gallery.milvus_store.TOKEN_ENV) and a URI holding them is refused.
    gallery_uri: str | None = None

    def detector_settings(self) -> DetectorSettings:
        d = dict(self.detector)
        d["thresholds"] = tuple(d.get("thresholds", DetectorSettings.thresholds))
        return DetectorSettings(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config(model_dir: str | Path) -> ModelConfig:
    d = Path(model_dir)
    path = d / MODEL_FILE
    if not d.is_dir():
        raise ModelError(f"{d}: no such model directory (create one with enroll.py --backbone ... or finetune.py)")
    if (special := special_file(path)) is not None:  # before any open: a FIFO's open blocks
        raise ModelError(f"{path}: {special}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        cfg = ModelConfig(**raw)
    except FileNotFoundError:
        raise ModelError(f"{d}: not a model directory ({MODEL_FILE} is missing)") from None
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: damaged model file ({exc})") from None
    if cfg.version > FORMAT_VERSION:
        raise ModelError(f"{path}: written by a newer version (format {cfg.version} > {FORMAT_VERSION})")
    try:
        cfg.detector_settings()
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad detector settings ({exc})") from None
    if cfg.target_fpir is not None and not (isinstance(cfg.target_fpir, (int, float)) and 0.0 < cfg.target_fpir < 1.0):
        raise ModelError(f"{path}: target_fpir must be a share in (0, 1) or null, not {cfg.target_fpir!r}")
    # Name entries of the model directory itself: a model.json must not point elsewhere.
    for key, value, pattern in (("gallery", cfg.gallery, GALLERY_NAME), ("checkpoint", cfg.checkpoint, CHECKPOINT_NAME),
                                ("fpir_table", cfg.fpir_table, FPIR_TABLE_NAME)):
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise ModelError(f"{path}: {key} must name a file of the model directory, not {value!r}")
    if cfg.gallery_uri is not None:
        try:
            if not isinstance(cfg.gallery_uri, str) or canonical(cfg.gallery_uri) != cfg.gallery_uri:
                raise GalleryError(f"{cfg.gallery_uri!r} is not a Milvus gallery URI in its one spelling")
        except GalleryError as exc:
            raise ModelError(f"{path}: gallery_uri: {exc}") from None
    return cfg


def save_config(model_dir: str | Path, cfg: ModelConfig) -> None:
    write_json_atomic(Path(model_dir) / MODEL_FILE, cfg.to_dict())


def remember_gallery(model_dir: str | Path, uri: str | None) -> str | None:
    """The Milvus gallery the model's faces are in: `uri` (canonical; recorded in model.json, under the writer
    lock, the first time it is given), else the one model.json records, else None (the model directory's own).
    ModelError when `uri` names another gallery than the recorded one: the faces are there, not in `uri`."""
    recorded = load_config(model_dir).gallery_uri
    if uri is None or uri == recorded:
        return recorded
    with writer_lock(model_dir):
        cfg = load_config(model_dir)
        if cfg.gallery_uri is None:
            cfg.gallery_uri = uri
            save_config(model_dir, cfg)
    if cfg.gallery_uri != uri:
        raise ModelError(f"{model_dir}: this model's faces are in {cfg.gallery_uri} (its {MODEL_FILE} says so), "
                         f"not in {uri}; leave out --gallery, or use another model directory")
    return uri


def config_stamp(model_dir: str | Path) -> tuple[int, int, int] | None:
    """What identifies the model.json in place now (inode, mtime, size): a cheap check, per
    request, of whether a finetune or a migration switched the model. model.json is only ever
    replaced by a rename, so a new file has a new inode."""
    try:
        st = os.stat(Path(model_dir) / MODEL_FILE)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
