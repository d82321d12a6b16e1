"""A model directory: everything one trained recognizer needs, in one place.

    DIR/model.json      backbone, weights, model id, detector settings, unknown threshold
    DIR/gallery/        the enrolled faces (see the `gallery` package)
    DIR/checkpoint.pt   the finetuned layers and classifier head, once `finetune.py` has run
    DIR/chips/          one face chip per enrolled face (see `recognizer.chips`), shared by every
                        gallery version, so a face can be re-embedded without its photo
    DIR/gallery-chips/  the chips of galleries kept in Milvus (`--gallery`), one folder each
    DIR/.lock           the writer lock: every change of the model takes it (see `writer_lock`)

Every command takes `--model DIR`. `model.json` is written atomically; the directory is created
readable by its owner only, since a gallery of faces is biometric data.
"""
from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from facecore.atomic import write_json_atomic
from recognizer.detection.mtcnn import DetectorSettings
from facecore.errors import ModelError

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
GALLERY_DIR = "gallery"
CHIPS_DIR = "chips"
OTHER_CHIPS_DIR = "gallery-chips"
LOCK_FILE = ".lock"
# How long a change waits for another one (a finetune's commit re-embeds the faces enrolled
# while it trained, under this lock).
LOCK_TIMEOUT_S = 300.0
# finetune.py writes `gallery-<token>` and `checkpoint-<token>.pt` beside the ones in use, then
# switches model.json to them in one atomic rename: a crash leaves the old model or the new one.
GALLERY_NAME = re.compile(r"gallery(-[0-9a-f]{6,64})?")
CHECKPOINT_NAME = re.compile(r"checkpoint(-[0-9a-f]{6,64})?\.pt")
FPIR_TABLE_NAME = re.compile(r"fpir(-[0-9a-f]{6,64})?\.json")  # a finetuned model's own FPIR table
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
# These are the fallback: a model with a target FPIR derives its threshold from the FPIR table of
# its embeddings for the gallery it has (recognizer.threshold). `evaluate.py --set-threshold`
# fixes one measured on the user's own people instead.
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
    if cfg.target_fpir is not None and not (isinstance(cfg.target_fpir, (int, float)) and 0.0 < cfg.target_fpir < 1.0):
        raise ModelError(f"{path}: target_fpir must be a share in (0, 1) or null, not {cfg.target_fpir!r}")
    # Name entries of the model directory itself: a model.json must not point elsewhere.
    for key, value, pattern in (("gallery", cfg.gallery, GALLERY_NAME), ("checkpoint", cfg.checkpoint, CHECKPOINT_NAME),
                                ("fpir_table", cfg.fpir_table, FPIR_TABLE_NAME)):
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise ModelError(f"{path}: {key} must name a file of the model directory, not {value!r}")
    return cfg


def save_config(model_dir: str | Path, cfg: ModelConfig) -> None:
    write_json_atomic(Path(model_dir) / MODEL_FILE, cfg.to_dict())


def config_stamp(model_dir: str | Path) -> tuple[int, int, int] | None:
    """What identifies the model.json in place now (inode, mtime, size): a cheap check, per
    request, of whether a finetune or a migration switched the model. model.json is only ever
    replaced by a rename, so a new file has a new inode."""
    try:
        st = os.stat(Path(model_dir) / MODEL_FILE)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextmanager
def writer_lock(model_dir: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """The model directory's writer lock. Enrolling, removing, renaming and a finetune's commit
    take it, so a change is never made to a gallery that a finetune is replacing: it either lands
    before the commit (which carries it over) or after it, in the new gallery."""
    import errno

    from filelock import FileLock, Timeout

    path = Path(model_dir) / LOCK_FILE
    try:  # a read-only directory is a clear error now, not a wait for a lock that cannot be taken
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ModelError(f"{model_dir}: cannot change the model: the directory is read-only ({exc.strerror})") from None
        raise
    lock = FileLock(str(path), timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        raise ModelError(f"{model_dir}: timed out after {timeout:.0f} s waiting for {LOCK_FILE} "
                         "(another process is changing the model)") from None
    try:
        yield
    finally:
        lock.release()


def chip_store(model_dir: str | Path, gallery: str | None = None):
    """The chips of the model directory's own gallery, or of the gallery elsewhere (Milvus) that
    `gallery` names. Each gallery's chips are kept apart (the others' under
    DIR/gallery-chips/<key>/), so removing a person from one of them, or a finetune's sweep of
    the chips its gallery no longer names, never deletes a chip another gallery still names."""
    import hashlib

    from gallery.chip_store import ChipStore

    if gallery is None:
        return ChipStore(Path(model_dir) / CHIPS_DIR)
    from gallery.milvus_store import parse

    key = hashlib.sha256("\0".join(parse(gallery)).encode()).hexdigest()[:16]
    return ChipStore(Path(model_dir) / OTHER_CHIPS_DIR / key)


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
