"""What a model directory holds, each file name spelled once:

    DIR/model.json        backbone, weights, model id, detector settings, unknown threshold (`config`)
    DIR/gallery/          the enrolled faces (see the `gallery` package); a finetune's gallery-<token>/
    DIR/checkpoint.pt     the finetuned layers and classifier head, once `finetune.py` has run
    DIR/chips/            one face chip per enrolled face (see `recognizer.chips`), shared by every
                          gallery version, so a face can be re-embedded without its photo
    DIR/gallery-chips/    the chips of galleries kept in Milvus (`--gallery`), one folder each
    DIR/report.json       the last finetune's report (candidate-report.json while it is a candidate)
    DIR/split.json        the train/val split a finetune held out
    DIR/candidate.json    a candidate built beside the model in use (see recognizer.training.candidate)
    DIR/versions/         the model.json of replaced versions, for rollback
    DIR/clusters/         saved clustering runs
    DIR/.lock             the writer lock: every change of the model takes it (see `lock`)

The directory is created readable by its owner only, since a gallery of faces is biometric data.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from gallery.chip_store import ChipStore
from gallery.milvus_store import parse

__all__ = ["CANDIDATE_FILE", "CANDIDATE_REPORT", "CHECKPOINT_NAME", "CHIPS_DIR", "FPIR_TABLE_NAME", "GALLERY_DIR",
           "GALLERY_NAME", "LOCK_FILE", "MODEL_FILE", "OTHER_CHIPS_DIR", "REPORT_FILE", "RUNS_DIR", "SPLIT_FILE",
           "VERSIONS_DIR", "chip_store", "ensure_private_dir"]

MODEL_FILE = "model.json"
GALLERY_DIR = "gallery"
CHIPS_DIR = "chips"
OTHER_CHIPS_DIR = "gallery-chips"
LOCK_FILE = ".lock"
REPORT_FILE = "report.json"
CANDIDATE_FILE = "candidate.json"
CANDIDATE_REPORT = "candidate-report.json"  # a finetune's report.json while its result is a candidate
SPLIT_FILE = "split.json"
VERSIONS_DIR = "versions"
RUNS_DIR = "clusters"
# finetune.py writes `gallery-<token>` and `checkpoint-<token>.pt` beside the ones in use, then
# switches model.json to them in one atomic rename: a crash leaves the old model or the new one.
GALLERY_NAME = re.compile(r"gallery(-[0-9a-f]{6,64})?")
CHECKPOINT_NAME = re.compile(r"checkpoint(-[0-9a-f]{6,64})?\.pt")
FPIR_TABLE_NAME = re.compile(r"fpir(-[0-9a-f]{6,64})?\.json")  # a finetuned model's own FPIR table


def chip_store(model_dir: str | Path, gallery: str | None = None) -> ChipStore:
    """The chips of the model directory's own galleries, or of the Milvus gallery `gallery`, kept apart (under
    DIR/gallery-chips/<key>/) so a removal or sweep in one never deletes a chip another still names."""
    if gallery is None:
        return ChipStore(Path(model_dir) / CHIPS_DIR)
    key = hashlib.sha256("\0".join(parse(gallery)).encode()).hexdigest()[:16]
    return ChipStore(Path(model_dir) / OTHER_CHIPS_DIR / key)


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
