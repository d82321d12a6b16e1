"""One person's enrolled faces, face by face: the listing (stable gallery ids, the photo each came from),
each face's chip as a thumbnail, and a contact sheet of them, for correcting a wrongly enrolled face
(`Recognizer.remove_face`, `Recognizer.move_face`) or spotting two people who are one (`Recognizer.merge`).

The CLI (`facetool people faces`) and the server (`GET /people/NAME`, `GET /faces/ID/chip.png`) call these.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from facecore.errors import FaceNotFound, FaceToolError, GalleryError, ModelError, PersonNotFound
from facecore.names import validate_name
from recognizer.chip_format import chip_crops
from recognizer.clustering.sheets import contact_sheet
from recognizer.training.dataset import list_people

__all__ = ["THUMB_KIND", "correction_summary", "face_listing", "face_thumbnail", "faces_sheet", "people_folders"]

THUMB_KIND = "sface112"  # the chip's crop shown: the one every chip holds, aligned as it was embedded


def face_listing(rec, person: str) -> dict:
    """`person`'s faces (id, photo, box, when, whether its chip is stored) and the threshold for the gallery
    as it is now; PersonNotFound when they are not enrolled."""
    person = validate_name(person)
    records = rec.records(person)
    if not records:
        raise PersonNotFound(f"no person named {person!r} is enrolled", name=person)
    stored = rec.chip_ids()
    faces = [{"id": r.id, "photo": r.source, "box": [round(float(v), 1) for v in r.box],
              "added_at": round(float(r.added_at), 3), "chip": bool(r.chip) and r.chip in stored} for r in records]
    return {"person": person, "faces": faces, "threshold": rec.threshold_info().to_dict()}


def _record(rec, face_id: int):
    for r in rec.records():
        if r.id == int(face_id):
            return r
    raise FaceNotFound(f"no enrolled face has id {face_id}", ids=[int(face_id)])


def _crop(rec, record) -> np.ndarray:
    if not record.chip or record.chip not in rec.chips:
        raise FaceNotFound(f"face {record.id} ({record.source}) has no stored chip (enrolled before chips were "
                           "kept: make them with `facetool people make-chips`)", ids=[record.id])
    try:
        return chip_crops(rec.chips.get(record.chip), [THUMB_KIND])[THUMB_KIND]
    except (GalleryError, ModelError) as exc:
        raise FaceNotFound(f"face {record.id}: its chip cannot be read ({exc})", ids=[record.id]) from None


def face_thumbnail(rec, face_id: int) -> bytes:
    """PNG bytes of one enrolled face's aligned crop (from its chip); FaceNotFound when it has none."""
    buf = io.BytesIO()
    Image.fromarray(_crop(rec, _record(rec, face_id))).save(buf, format="PNG")
    return buf.getvalue()


def faces_sheet(rec, person: str) -> bytes:
    """PNG bytes: `person`'s faces in a grid, each labelled with its id (faces without a chip left out)."""
    listing = face_listing(rec, person)
    records = [r for r in rec.records(listing["person"]) if r.chip and r.chip in rec.chips]
    if not records:
        raise FaceNotFound(f"none of {listing['person']}'s faces has a stored chip (run `facetool people make-chips`)",
                           ids=[f["id"] for f in listing["faces"]])
    crops = np.stack([_crop(rec, r) for r in records])
    return contact_sheet(crops, list(range(len(records))), 0, labels=[str(r.id) for r in records], frame=False)


def correction_summary(rec, what: dict) -> dict:
    """`what` (a correction's result) with the people and the threshold as they are after it: the expected
    FPIR changes with the gallery's size."""
    return {**what, "people": rec.people(), "threshold": rec.threshold_info().to_dict()}


def people_folders(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """A folder of person folders (`folder/<person>/*`, the layout finetune reads: names checked, look-alike
    folders refused) as person -> their photos; a person folder with no image file is listed empty, so the
    enrolment reports it. FaceToolError naming the folder when it holds no person folder."""
    root = Path(folder)
    if not root.is_dir():
        raise FaceToolError(f"{root}: not a folder of person folders (no such directory)")
    labelled = list_people(root)
    out: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out[validate_name(d.name)] = []
    for path, label in zip(labelled.paths, labelled.labels):
        out[label].append(Path(path))
    if not out:
        raise FaceToolError(f"{root}: no person folders in it (expected {root}/<person>/<photos>)")
    return out
