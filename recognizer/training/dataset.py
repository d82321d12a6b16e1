"""A labelled photo folder for training: `train/<person>/*` and optionally `val/<person>/*`.

Without `val/`, a stratified share of `train/` is held out for validation. The split is saved as
JSON in the model directory and reused by later runs over the same photos, so a rerun validates
on the same faces and its figures stay comparable.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from facecore.atomic import write_json_atomic
from facecore.errors import FaceToolError
from facecore.names import refuse_lookalikes, validate_name
from recognizer.image import list_images
from recognizer.modeldir.layout import SPLIT_FILE

__all__ = ["SPLIT_FILE", "LabelledSet", "Split", "list_people", "load_split"]

log = logging.getLogger(__name__)


@dataclass
class LabelledSet:
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def to_dict(self) -> dict:
        return {"paths": list(self.paths), "labels": list(self.labels)}


@dataclass
class Split:
    train: LabelledSet
    val: LabelledSet
    source: str  # "val-folder" or "held-out"

    def to_dict(self) -> dict:
        return {"train": self.train.to_dict(), "val": self.val.to_dict(), "source": self.source}


def list_people(folder: Path) -> LabelledSet:
    """Every image under folder/<person>/, sorted, labelled by its folder name as the gallery would store it
    (`validate_name`, so the classifier and the gallery agree); folders whose names look alike are refused."""
    out = LabelledSet()
    labels: dict[str, str] = {}
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            label = validate_name(person_dir.name)
        except FaceToolError as exc:
            raise FaceToolError(f"{person_dir}: the folder name is not a valid person name ({exc})") from None
        if label in labels:
            raise FaceToolError(f"{person_dir}: folders {labels[label]!r} and {person_dir.name!r} are the same person {label!r}")
        try:
            refuse_lookalikes([label], labels)
        except FaceToolError as exc:
            raise FaceToolError(f"{person_dir}: {exc}") from None
        labels[label] = person_dir.name
        for f in list_images(person_dir):
            out.paths.append(str(f))
            out.labels.append(label)
    return out


def load_split(data_dir: str | Path, model_dir: str | Path, *, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """The train/val split of `data_dir`; writes `split.json` in `model_dir` when it holds one out."""
    data = Path(data_dir)
    if not (data / "train").is_dir():
        raise FaceToolError(f"{data}: expected a train/<person>/ folder of photos")
    train = list_people(data / "train")
    if len(set(train.labels)) < 2:
        raise FaceToolError(f"{data / 'train'}: need photos of at least two people to train a classifier")
    if (data / "val").is_dir():
        return Split(train, list_people(data / "val"), "val-folder")

    path = Path(model_dir) / SPLIT_FILE
    saved = _read_saved(path, dict(zip(train.paths, train.labels)))
    if saved is not None:
        log.info("reusing the train/val split saved in %s", path)
        return saved
    from sklearn.model_selection import train_test_split  # heavy: only when a split is made

    idx = list(range(len(train)))
    tr, va = train_test_split(idx, test_size=val_fraction, stratify=train.labels, random_state=seed)
    pick = lambda ids: LabelledSet([train.paths[i] for i in sorted(ids)], [train.labels[i] for i in sorted(ids)])  # noqa: E731
    split = Split(pick(tr), pick(va), "held-out")
    write_json_atomic(path, split.to_dict())
    log.info("held out %d of %d photos for validation; split saved in %s", len(split.val), len(train), path)
    return split


def _read_saved(path: Path, current: dict[str, str]) -> Split | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        split = Split(LabelledSet(**raw["train"]), LabelledSet(**raw["val"]), raw["source"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring damaged split file %s: %s", path, exc)
        return None
    # A split of other photos (files added or removed since) would leak or drop faces: redo it.
    saved = dict(zip(split.train.paths + split.val.paths, split.train.labels + split.val.labels))
    if saved != current:  # labels too: a split of an older version may hold unnormalised names
        log.info("photos or their labels changed since %s was written; splitting again", path)
        return None
    return split
