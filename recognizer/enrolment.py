"""Enrolling photos' faces, in two steps: `screen` the analysed photos (unreadable, duplicates,
no face) outside the writer lock, then `commit` what is left under it (`Recognizer.enroll`)."""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from facecore.errors import ImageError
from gallery import FaceRecord
from recognizer.chips import chip_vectors
from recognizer.image import ImageSource, list_images
from recognizer.quality import LOW_QUALITY
from recognizer.results import EnrollReport, FileOutcome

__all__ = ["Pending", "as_sources", "commit", "screen"]

Pending = list[tuple[FileOutcome, FaceRecord, np.ndarray, bytes]]


def as_sources(photos) -> list[ImageSource]:
    """A folder's image files, one photo, or the photos of a sequence, as a list."""
    if isinstance(photos, (str, os.PathLike)):
        path = Path(photos)
        return list_images(path) if path.is_dir() else [path]
    if isinstance(photos, (bytes, bytearray, Image.Image)):
        return [photos]
    return list(photos)


def screen(name: str, st, items, labels: Sequence[str] | None, allow_low_quality: bool = False) -> tuple[EnrollReport, Pending]:
    """The report so far and the faces to add: face 0 of each (PhotoResult, chip maker) of view
    `st`; the chip maker returns the face's chip bytes or raises ImageError (the photo cannot be
    read now, or changed). A face under the quality floor is refused ("low quality", with its
    reasons) unless `allow_low_quality`."""
    report = EnrollReport(name)
    pending: Pending = []
    seen: set[str] = set()
    for (res, make), label in zip(items, labels if labels is not None else itertools.repeat(None)):
        source = res.source if label is None else label
        if res.error is not None:
            report.files.append(FileOutcome(source, "unreadable", res.error))
            continue
        if st.gallery.has_content(name, res.content_hash) or res.content_hash in seen:
            report.files.append(FileOutcome(source, "duplicate", f"already enrolled for {name}"))
            continue
        if res.skip_reason is not None:  # "no face": an unreadable photo was reported above
            report.files.append(FileOutcome(source, res.skip_reason))
            continue
        low = res.low_quality(0)
        if low is not None and not allow_low_quality:
            report.files.append(FileOutcome(source, LOW_QUALITY, ", ".join(low.reasons)))
            continue
        try:
            chip = make()
        except ImageError as exc:
            report.files.append(FileOutcome(source, "unreadable", exc.reason))
            continue
        seen.add(res.content_hash)
        status, detail = "added", ""
        if len(res.faces) > 1:
            status, detail = "several faces", f"{len(res.faces)} faces; kept the largest"
        if low is not None:
            detail = "; ".join(d for d in (detail, f"low quality ({', '.join(low.reasons)}), allowed") if d)
        outcome = FileOutcome(source, status, detail)
        report.files.append(outcome)
        rec = FaceRecord(name, source, res.content_hash, tuple(float(v) for v in res.faces[0].box))
        pending.append((outcome, rec, res.embeddings[0], chip))
    return report, pending


def commit(name: str, st, now, pending: Pending, store, allow_similar: bool) -> None:
    """Add the screened faces to the gallery of view `now` (the writer lock held), their chips to
    `store`; their outcomes say which were enrolled meanwhile. `st`: the view they were embedded with."""
    # A finetune may have switched the model since the faces were embedded: the chips give the new network's vectors.
    vectors = np.stack([p[2] for p in pending])
    if now.config.model_id != st.config.model_id:
        vectors = chip_vectors([p[3] for p in pending], now.embedder)
    keep = []
    for i, (outcome, rec, _, chip) in enumerate(pending):
        if now is not st and now.gallery.has_content(name, rec.content_hash):
            outcome.status, outcome.detail = "duplicate", f"already enrolled for {name}"
        else:
            keep.append(i)
    if keep:
        # a refused add (a look-alike name, a bad vector) takes its new chips back with it
        with store.adding([pending[i][3] for i in keep]) as shas:
            for i, sha in zip(keep, shas):
                pending[i][1].chip = sha
            records = [pending[i][1] for i in keep]
            now.gallery.add(vectors[keep], records, model_id=now.config.model_id, allow_similar=allow_similar)
        for outcome, r, _, _ in (pending[i] for i in keep):  # enrolled meanwhile by another process: stored once
            if r.id < 0:
                outcome.status, outcome.detail = "duplicate", f"already enrolled for {name}"
