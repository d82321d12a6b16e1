"""One carry-over and one rebuild: how every new gallery of a model directory is made (a finetune's
commit, a switch to a candidate, a rollback). The new gallery is built outside the writer lock from what
was enrolled when the build started; under the lock `carry_over` brings in what changed since and
`build_gallery` writes the result, embedding from their chips the faces it has no vector for.

Faces are matched by a key the caller chooses: the gallery id when the gallery in use is the one the build
started from (a finetune), `gallery.base.face_key` (photo and box) when it is another (a candidate's).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Sequence

import numpy as np

from facecore.errors import ModelError
from gallery import FaceRecord, create_gallery
from recognizer.chips import embed_chips
from recognizer.modeldir.config import load_config, ModelConfig
from recognizer.modeldir.layout import CHECKPOINT_NAME, chip_store, CHIPS_DIR, GALLERY_NAME, MODEL_FILE

__all__ = ["Carried", "build_gallery", "carry_over", "check_none_lost", "fresh_record", "starting_point"]


def fresh_record(r: FaceRecord, person: str | None = None) -> FaceRecord:
    """`r` (under `person` when given) for another gallery: everything but its id."""
    return FaceRecord(r.person if person is None else person, r.source, r.content_hash, tuple(r.box),
                      added_at=r.added_at, chip=r.chip)


@dataclass
class Carried:
    """The gallery a build leaves once what changed since its start is carried over."""

    records: list  # FaceRecords: the build's own faces first, then the faces enrolled now
    vectors: list  # one a record; None for a face enrolled since the start (embedded from its chip)
    fate: dict  # people gone since the start: their one new name (renamed), or None (removed)
    reused: int  # faces enrolled now whose vector the build made
    new: int  # faces enrolled since the start

    def removed(self) -> list[str]:
        return sorted(p for p, q in self.fate.items() if q is None)

    def renamed(self) -> dict[str, str]:
        return {p: q for p, q in self.fate.items() if q is not None}


def carry_over(d: Path, base: Sequence[tuple[Hashable, str]], built: Sequence[tuple[FaceRecord, np.ndarray]],
               current: Sequence[tuple[Hashable, FaceRecord]], reuse: dict) -> Carried:
    """Carry what changed since a build started into the gallery it built. `base`: (key, person) of each face
    enrolled at the start; `built`: (record, vector) of the build's own faces, named as at the start;
    `current`: (key, record) of each face enrolled now; `reuse`: key -> the build's vector of a face.
    A person gone since whose faces live on under one name was renamed, else removed (removal wins over a
    training folder). Every face enrolled now is kept (with the build's vector when it has one) unless one
    of the build's has the same person and photo."""
    now_people: dict = {}
    for k, r in current:
        now_people.setdefault(k, set()).add(r.person)
    fate: dict[str, str | None] = {}
    for p in sorted({q for _, q in base} - {r.person for _, r in current}):
        survivors = set().union(*[now_people.get(k, set()) for k, q in base if q == p])
        fate[p] = survivors.pop() if len(survivors) == 1 else None
    records, vectors = [], []
    for r, v in built:
        name = fate.get(r.person, r.person)
        if name is not None:
            records.append(fresh_record(r, name))
            vectors.append(v)
    covered = {(x.person, x.content_hash) for x in records}
    reused = new = 0
    for k, r in current:
        if (r.person, r.content_hash) in covered:
            continue  # a training photo of the same person
        if k in reuse:
            reused += 1
        else:
            new += 1
        vectors.append(reuse.get(k))
        records.append(fresh_record(r))
    check_none_lost(d, [r for _, r in current], records)
    return Carried(records, vectors, fate, reused, new)


def build_gallery(d: Path, name: str, model_id: str, embedder, records: list, vectors: list | None = None, *,
                  failure: Callable[[int], str], put_chips: Sequence[bytes] = (), progress: bool = False,
                  desc: str = "re-embedding", no_chip: str = "enrolled before chips were kept") -> None:
    """Write the gallery `d/name` of `records` (no ids) with `vectors` (None: embedded from the record's chip;
    ModelError `failure(n)` before anything is written when n cannot be). `put_chips` (not yet in the chip
    store) are stored once every face is embedded. A failure leaves no gallery behind."""
    vectors = [None] * len(records) if vectors is None else list(vectors)
    todo = [i for i, v in enumerate(vectors) if v is None]
    if todo:
        new = embed_chips([records[i] for i in todo], embedder, chip_store(d), progress=progress, desc=desc,
                          no_chip=no_chip, failure=failure)
        for i, v in zip(todo, new):
            vectors[i] = v
    store = chip_store(d)
    for chip in put_chips:
        store.put(chip)
    try:
        gal = create_gallery(d / name, model_id=model_id, dim=embedder.dim)
        if records:
            gal.add(np.stack(vectors).astype(np.float32), records, model_id=model_id, allow_similar=True)
        gal.close()
    except BaseException:
        shutil.rmtree(d / name, ignore_errors=True)
        raise


def check_none_lost(d: Path, current, records) -> None:
    """ModelError unless every face of `current` (the model in use) is, by person and photo, in `records`."""
    have = {(x.person, x.content_hash) for x in records}
    missing = [(r.person, r.content_hash) for r in current if (r.person, r.content_hash) not in have]
    if missing:  # cannot happen by construction; never switch to a gallery that lost a face
        raise ModelError(f"{d}: internal error, {len(missing)} enrolled faces would be lost; nothing was changed")


def starting_point(d: Path) -> ModelConfig | None:
    """The model a build in `d` starts from (None: a new model), or ModelError when `d` holds
    faces that model.json does not account for: replacing them would lose them."""
    if (d / MODEL_FILE).exists():
        cfg = load_config(d)
        if cfg.gallery_uri is not None:  # a build reads and rewrites the directory's own gallery, not this one
            raise ModelError(f"{d}: this model's faces are in {cfg.gallery_uri} ({MODEL_FILE}'s gallery_uri); "
                             "finetuning and re-embedding work on a model directory's own gallery only, and would "
                             "start from its empty one; nothing was changed")
        if not (d / cfg.gallery).is_dir():
            others = sorted(p.name for p in d.iterdir() if GALLERY_NAME.fullmatch(p.name))
            raise ModelError(f"{d / MODEL_FILE} names gallery {cfg.gallery!r}, which is not there"
                             + (f" (the directory holds {', '.join(others)}): model.json is stale, e.g. restored "
                                "from an older backup; restore the model.json that goes with them" if others else "")
                             + "; nothing was changed")
        return cfg
    if d.exists():
        held = sorted(p.name for p in d.iterdir() if GALLERY_NAME.fullmatch(p.name) or p.name == CHIPS_DIR
                      or CHECKPOINT_NAME.fullmatch(p.name))
        if held:
            raise ModelError(f"{d}: {MODEL_FILE} is missing but the directory holds {', '.join(held)}; finetuning "
                             "would start a new model and delete those faces. Restore model.json (or finetune "
                             "into a new directory); nothing was changed")
    return None
