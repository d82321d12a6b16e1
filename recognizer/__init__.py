"""Name the people you enrolled in photos, offline: the public API.

    import recognizer

    with recognizer.create("my-model", backbone="sface") as model:    # recognizer.open(...) once it exists
        model.enroll("Ada", "photos/ada/")                            # a folder, paths, bytes or PIL images
        for face in model.identify("party.jpg").faces:                 # identify_many(...) for several photos
            print(face.name or "unknown", face.similarity)
        model.people(); model.rename("Ada", "Ada Lovelace"); model.remove("Ada Lovelace")
        video = model.identify_video("clip.mp4")                      # one name per face track
        [(t.name, t.first.time, t.last.time) for t in video.tracks]; video.write_annotated("out.mp4")
    recognizer.finetune("photos/", "my-model", backbone="sface")      # DATA/train/<person>/*
    recognizer.evaluate("my-model", "photos/").markdown()

Errors are `FaceToolError`s: `ImageError` (with `VideoError`), `ModelError`, `WeightsError`, `InvalidNameError`
and `GalleryError` (with `PersonNotFound`, `PersonExists`). Nothing heavy is imported here: names load on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from facecore.errors import FaceToolError, GalleryError, ImageError, InvalidNameError, ModelError, PersonExists, PersonNotFound, VideoError, WeightsError

_LAZY = {name: module for module, names in {
    "recognizer._open": ("open", "create"),
    "recognizer._api": ("finetune", "evaluate", "set_threshold"),
    "recognizer.recognizer": ("Recognizer",),
    "recognizer.results": ("PhotoIdentification", "FaceIdentity", "EnrollReport"),
    "recognizer.image": ("list_images", "expand_inputs"),
    "facecore.names": ("validate_name",),
    "recognizer.annotate": ("annotation_paths", "save_annotated"),
    "recognizer.video.analysis": ("VideoIdentification",),
    "recognizer.video.reader": ("is_video_input",),
}.items() for name in names}

if TYPE_CHECKING:
    from recognizer._api import evaluate, finetune, set_threshold  # noqa: F401
    from recognizer._open import create, open  # noqa: F401
    from recognizer.annotate import annotation_paths, save_annotated  # noqa: F401
    from facecore.names import validate_name  # noqa: F401
    from recognizer.image import expand_inputs, list_images  # noqa: F401
    from recognizer.recognizer import Recognizer  # noqa: F401
    from recognizer.results import EnrollReport, FaceIdentity, PhotoIdentification  # noqa: F401
    from recognizer.video.analysis import VideoIdentification  # noqa: F401
    from recognizer.video.reader import is_video_input  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'recognizer' has no attribute {name!r}")


__all__ = ["EnrollReport", "FaceIdentity", "annotation_paths", "save_annotated", "FaceToolError", "GalleryError",
           "ImageError", "InvalidNameError", "ModelError", "PersonExists", "PersonNotFound", "PhotoIdentification",
           "Recognizer", "WeightsError", "create", "evaluate", "expand_inputs", "finetune", "list_images", "open",
           "set_threshold", "validate_name", "VideoError", "VideoIdentification", "is_video_input"]
__version__ = "0.1.0"
