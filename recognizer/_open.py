"""`recognizer.open` and `recognizer.create`: a model directory opened, as every command and the server do.

Apart from recognizer._api (finetune, evaluate), which imports training and evaluation: opening a model to
identify one photo loads neither (issue 31, a fresh process's start-up).
"""
from __future__ import annotations

import os
from pathlib import Path

from recognizer.cache import CropCache
from recognizer.recognizer import Recognizer

__all__ = ["PathLike", "create", "crop_cache", "open"]

PathLike = str | os.PathLike


def crop_cache(cache: bool | PathLike | CropCache | None) -> CropCache | None:
    """True: the default crop cache; a path: a cache there; False or None: none."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return CropCache()
    if isinstance(cache, CropCache):
        return cache
    return CropCache(Path(cache))


def open(model_dir: PathLike, *, backbone: str | None = None, weights: str | None = None, weights_dir: PathLike | None = None,
         cache: bool | PathLike | CropCache | None = False, gallery: str | None = None) -> Recognizer:
    """Open an existing model directory (ModelError when none, or not built with the `backbone` or `weights` given).
    `cache`: keep detections and crops on disk so a second run skips detection (True: under ~/.cache/facetool or
    $FACETOOL_CACHE; a path: there). `gallery`: the faces in Milvus ("milvus://HOST:PORT/COLLECTION",
    "milvus-lite:PATH.db") instead of the model directory."""
    return Recognizer.open(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=crop_cache(cache),
                           gallery=gallery)


def create(model_dir: PathLike, *, backbone: str | None = None, weights: str | None = None, weights_dir: PathLike | None = None,
           cache: bool | PathLike | CropCache | None = False, gallery: str | None = None) -> Recognizer:
    """Open a model directory, created with `backbone` ("sface" or "facenet") if need be."""
    return Recognizer.open(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, create=True,
                           cache=crop_cache(cache), gallery=gallery)
