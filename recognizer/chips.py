"""Face chips: both backbones' input crops of one enrolled face, kept to re-embed it without its photo.

Chips serve finetuning, importing into another backbone and migrating.

A chip is one lossless PNG holding, side by side, the 160x160 facenet crop (box plus margin) and
the 112x112 SFace crop (5-point aligned), each cut from the full photo exactly as the embedder
cuts it at enrolment. Re-embedding a chip with the network that enrolled the face therefore gives
the enrolled vector again, bit for bit; another backbone gets the very crop it would have cut
from the photo. (A single wider chip with landmarks would be smaller, but re-cutting the aligned
crop from it does not reproduce the warp from the full photo exactly.)

Chips are stored by `gallery.chip_store.ChipStore`; this module makes them and embeds them. Their
layout and decoding are in `recognizer.chip_format`, below the crop cache that also reads them.
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
    """The `embedder`'s vectors (n, dim) of chips given as bytes (e.g. from an archive or a
    clustering run); ModelError when one is not a chip."""
    return _embed([crop_for(c, embedder) for c in chips], embedder)


def embed_chips(records, embedder, store, *, failure, no_chip: str = "enrolled before chips were kept",
                spare=None, progress: bool = False, desc: str = "re-embedding") -> np.ndarray:
    """The `embedder`'s vector of each face of `records` (gallery FaceRecords) from its chip in the
    ChipStore `store`, one row a record, in their order.

    A face with no chip, or whose chip is missing, damaged or unreadable, takes `spare(record)`
    where `spare` is given (e.g. its old vector while the network is unchanged). Otherwise, before
    anything is embedded, ModelError: `failure(n)` for the n faces that cannot be embedded, then
    up to 50 of them, one "person (source): why" line each. `no_chip` says why a face has none."""
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
    """The chip of `res`'s largest face (face 0), cut from its photo `src` decoded again as the
    pipeline decoded it (same pixel limit and memory budget), so the chip's crops are the very
    crops that were embedded. ImageError when the photo cannot be read now or is no longer the
    one analysed."""
    photo = load_photo(src, max_pixels, memory_budget)
    if photo.content_hash != res.content_hash:
        raise ImageError(str(res.source), "the file changed while it was being enrolled")
    return make_chip(photo.image, res.faces[0])


def backfill_chips(model_dir, gallery, detector, store) -> list[str]:
    """Give chips to faces enrolled before chips were kept (or whose chip file is lost), from their photos where those are
    still there and unchanged (same sha256, the enrolled face found again by its box). Returns
    one line per face that could not get one. Caller holds the model's writer lock. `store`: the
    gallery's ChipStore; `model_dir` only names the model in the log."""
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
