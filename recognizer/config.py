"""A model directory: everything one trained recognizer needs, in one place.

    DIR/model.json      backbone, weights, model id, detector settings, unknown threshold
    DIR/gallery/        the enrolled faces (see the `gallery` package)
    DIR/checkpoint.pt   the finetuned layers and classifier head, once `finetune.py` has run

Every command takes `--model DIR`. `model.json` is written atomically; the directory is created
readable by its owner only, since a gallery of faces is biometric data.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gallery.atomic import write_json_atomic
from recognizer.detection.mtcnn import DetectorSettings
from recognizer.errors import ModelError

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
GALLERY_DIR = "gallery"
# finetune.py writes `gallery-<token>` and `checkpoint-<token>.pt` beside the ones in use, then
# switches model.json to them in one atomic rename: a crash leaves the old model or the new one.
GALLERY_NAME = re.compile(r"gallery(-[0-9a-f]{6,64})?")
CHECKPOINT_NAME = re.compile(r"checkpoint(-[0-9a-f]{6,64})?\.pt")
FORMAT_VERSION = 1

# Cosine similarity below which the nearest enrolled face is "not this person". Chosen per backbone
# on labelled pairs (benchmarks/calibrate_threshold.py prints the figures):
# - sface: inside the gap between the two classes of the 300 labelled pairs of
#   deepface-test-dataset (different-person pairs reach at most 0.343, same-person pairs are at
#   least 0.551), a little below its middle (0.447) to leave room for hard photos of known
#   people: 0.43. It sits above OpenCV's published 1:1 verification threshold (0.363)
#   because identification compares a stranger with every enrolled face and keeps the best, which
#   pushes strangers' similarities up: at 0.363, 6 of 62 strangers (deepface people) got a name
#   from a 5-celebrity gallery; at 0.43 none did, while the weakest correct match on
#   5-celebrity-faces val is 0.49 (evaluate.py's open-set report).
# - facenet (VGGFace2): facenet-pytorch's LFW evaluation separates pairs at a Euclidean distance
#   of about 1.1 between unit vectors, i.e. cosine 1 - 1.1**2 / 2 = 0.40.
# `evaluate.py --set-threshold` replaces the default with one measured on the user's own people.
DEFAULT_THRESHOLDS = {"sface": 0.43, "facenet": 0.40}


@dataclass
class ModelConfig:
    backbone: str
    weights: str | None
    model_id: str  # of the embedding network (includes the checkpoint once finetuned)
    dim: int
    threshold: float
    knn_k: int = 5
    detector: dict[str, Any] = field(default_factory=lambda: asdict(DetectorSettings()))
    checkpoint: str | None = None
    gallery: str = GALLERY_DIR  # finetune.py writes a new one beside the old and switches here
    version: int = FORMAT_VERSION

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
    # Both name entries of the model directory itself: a model.json must not point elsewhere.
    for key, value, pattern in (("gallery", cfg.gallery, GALLERY_NAME), ("checkpoint", cfg.checkpoint, CHECKPOINT_NAME)):
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise ModelError(f"{path}: {key} must name a file of the model directory, not {value!r}")
    return cfg


def save_config(model_dir: str | Path, cfg: ModelConfig) -> None:
    write_json_atomic(Path(model_dir) / MODEL_FILE, cfg.to_dict())


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
