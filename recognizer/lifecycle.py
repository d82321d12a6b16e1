"""A model's versions: switch to a candidate built beside it, migrate to another network, roll back, read an
export archive's manifest. Functions over a model directory, not `Recognizer` methods: they replace what a
Recognizer has open, and an open one follows them (`Recognizer.refresh`)."""
from __future__ import annotations

import os
from pathlib import Path

from recognizer import archive
from recognizer.cache import CropCache
from recognizer.modeldir.lock import writer_lock
from recognizer.evaluation.run import labelled_photos
from recognizer.training import candidate as _candidate
from recognizer.training import versions

__all__ = ["candidate", "discard_candidate", "migrate", "read_archive", "rollback", "switch"]


def read_archive(path: str | os.PathLike) -> dict:
    """The manifest of an export archive, every member checked (ArchiveError otherwise)."""
    return archive.read_archive(path)[0]


def rollback(model_dir: str | os.PathLike, *, weights_dir=None, progress: bool = False) -> dict:
    """Return a model to the version before its last finetune or switch, re-embedding today's faces from chips."""
    return versions.rollback(model_dir, weights_dir=weights_dir, progress=progress)


def migrate(model_dir: str | os.PathLike, backbone: str, weights: str | None = None, *, data_dir=None, unknown_dir=None,
            switch: bool = False, weights_dir=None, cache_dir=None, progress: bool = False) -> dict:
    """Re-embed every enrolled face from its chip with another network, as a candidate beside the model in use,
    scored side by side with it on the labelled photos of `data_dir`; switch only when `switch`."""
    photos = labelled_photos(data_dir, model_dir) if data_dir is not None else None
    cache = CropCache(Path(cache_dir) / "crops") if cache_dir else CropCache()
    return _candidate.migrate(model_dir, backbone, weights, photos=photos, unknown_dir=unknown_dir, switch_now=switch,
                              weights_dir=weights_dir, cache=cache, progress=progress)


def switch(model_dir: str | os.PathLike, *, weights_dir=None, progress: bool = False) -> dict:
    """Make the pending candidate the model in use, carrying over what changed since; the old one is kept."""
    return _candidate.switch(model_dir, weights_dir=weights_dir, progress=progress)


def candidate(model_dir: str | os.PathLike) -> dict | None:
    """The candidate pending beside the model and its side-by-side figures (None: none)."""
    return _candidate.pending(model_dir)


def discard_candidate(model_dir: str | os.PathLike) -> bool:
    """Delete the pending candidate and its files; whether there was one."""
    with writer_lock(model_dir):
        return versions.discard_candidate(model_dir, "asked for")
