"""Face chips: both backbones' input crops of one enrolled face, kept to re-embed it without its photo.

A chip is one lossless PNG holding the 160x160 facenet crop and the 112x112 aligned SFace crop, each cut from
the full photo exactly as at enrolment: re-embedding it with the enrolling network gives the enrolled vector
bit for bit, and another backbone the very crop it would have cut (one wider chip with landmarks would be
smaller, but re-cutting the aligned crop from it does not reproduce the warp exactly). Stored by
`gallery.chip_store.ChipStore`; layout and decoding in `recognizer.chip_format`.
"""
from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from facecore.errors import GalleryError, ImageError, ModelError
from recognizer.chip_format import HEIGHT, LAYOUT, WIDTH, chip_crops
from recognizer.detection.alignment import crop_aligned, crop_facenet
from recognizer.detection.boxes import iou_matrix
from recognizer.image import load_photo

__all__ = ["backfill_chips", "chip_of", "chip_vectors", "crop_for", "crop_kind", "embed_chips", "make_chip"]

log = logging.getLogger(__name__)


def crop_kind(embedder) -> str:
    return f"{embedder.name}{embedder.crop_size}"


def make_chip(image, face) -> bytes:
    """The chip of `face` in `image` (a PIL RGB image), as PNG bytes."""
    import cv2  # optional and slow to import: only where a chip is made

    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for kind, crop in (("facenet160", crop_facenet(image, face, size=160)), ("sface112", crop_aligned(image, face, size=112))):
        x, y, s = LAYOUT[kind]
        canvas[y : y + s, x : x + s] = crop
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(canvas[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ModelError("could not encode a face chip")
    return buf.tobytes()


def crop_for(data: bytes, embedder) -> np.ndarray:
    kind = crop_kind(embedder)
    return chip_crops(data, [kind])[kind]


def _embed(crops: list, embedder) -> np.ndarray:
    return embedder.embed(np.stack(crops)) if crops else np.zeros((0, embedder.dim), np.float32)


def chip_vectors(chips, embedder) -> np.ndarray:
    """The `embedder`'s vectors (n, dim) of chips given as bytes; ModelError when one is not a chip."""
    return _embed([crop_for(c, embedder) for c in chips], embedder)


def embed_chips(records, embedder, store, *, failure, no_chip: str = "enrolled before chips were kept",
                spare=None, progress: bool = False, desc: str = "re-embedding") -> np.ndarray:
    """The `embedder`'s vector of each of `records` (FaceRecords) from its chip in `store`, one row a record.
    A face whose chip is missing or unreadable takes `spare(record)` where given; otherwise, before anything is
    embedded, ModelError: `failure(n)`, then up to 50 "person (source): why" lines (`no_chip`: why none)."""
    crops, rows, spares, failed = [], [], {}, []
    for i, r in enumerate(tqdm(records, desc=desc, unit="face", disable=not progress, dynamic_ncols=True)):
        try:
            if not r.chip:
                raise ModelError(f"no chip ({no_chip})")
            crops.append(crop_for(store.get(r.chip), embedder))
            rows.append(i)
        except (GalleryError, ModelError, OSError) as exc:
            if spare is not None:
                spares[i] = spare(r)
            else:
                failed.append(f"{r.person} ({r.source}): {exc}")
    if failed:
        raise ModelError(failure(len(failed)) + ":\n  " + "\n  ".join(failed[:50]))
    if not spares:
        return _embed(crops, embedder)
    out = np.zeros((len(records), embedder.dim), np.float32)
    if rows:
        out[rows] = _embed(crops, embedder)
    for i, v in spares.items():
        out[i] = v
    return out


def chip_of(src, res, max_pixels: int, memory_budget: int) -> bytes:
    """The chip of `res`'s largest face, cut from `src` decoded again as the pipeline decoded it (so its crops are
    the ones embedded); ImageError when the photo cannot be read now or is no longer the one analysed."""
    photo = load_photo(src, max_pixels, memory_budget)
    if photo.content_hash != res.content_hash:
        raise ImageError(str(res.source), "the file changed while it was being enrolled")
    return make_chip(photo.image, res.faces[0])


def backfill_chips(model_dir, gallery, detector, store) -> list[str]:
    """Give chips to faces without one (enrolled before chips were kept, or lost) from their photos where still
    there and unchanged, the face found again by its box; one line per face that could not get one. The caller
    holds the writer lock; `model_dir` only names the model in the log."""
    have = store.ids()
    todo = [r for r in gallery.records() if not r.chip or r.chip not in have]  # never made, or lost
    if not todo:
        return []
    made: dict[int, str] = {}
    failed = []
    for r in todo:
        try:
            photo = load_photo(r.source)
        except ImageError as exc:
            failed.append(f"{r.person} ({r.source}): {exc.reason}")
            continue
        if photo.content_hash != r.content_hash:
            failed.append(f"{r.person} ({r.source}): the photo changed since it was enrolled")
            continue
        faces = detector.detect(photo.image)
        ious = iou_matrix(r.box, [f.box for f in faces])[0]
        if not len(ious) or ious.max() < 0.5:
            failed.append(f"{r.person} ({r.source}): the enrolled face was not found again in the photo")
            continue
        made[r.id] = store.put(make_chip(photo.image, faces[int(np.argmax(ious))]))
    gallery.set_chips(made)
    log.info("%s: made chips for %d faces enrolled before chips were kept; %d could not get one",
             model_dir, len(made), len(failed))
    for line in failed:
        log.warning("no chip for %s", line)
    return failed
