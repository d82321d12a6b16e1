"""Typed errors. Every error that reaches a user names the file, directory or value at fault.

`FaceToolError` (the base), `GalleryError` with its `PersonNotFound` and `PersonExists`, and
`InvalidNameError` are the gallery's own, re-exported here: the gallery stands alone, below the
recognizer.
"""
from __future__ import annotations

from gallery.errors import FaceToolError, GalleryError, InvalidNameError, PersonExists, PersonNotFound


class ImageError(FaceToolError):
    """A photo could not be read: missing, not an image, truncated, too large..."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(FaceToolError):
    """Model weights could not be found, downloaded or verified."""


class ModelError(FaceToolError):
    """A model directory is missing, damaged or does not match what was asked."""


class ArchiveError(ModelError):
    """An export archive is damaged, truncated, altered or not one of ours (a ModelError: it is
    model data; not in the public facade, which catches ModelError)."""


class VideoError(ImageError):
    """A video could not be read: not a video, damaged, too large, or a camera that is not there.

    An ImageError, so every place that reports unreadable input reports it too. `too_large`: it
    is over a limit (file size, frame pixels, declared length) rather than unreadable."""

    def __init__(self, path: object, reason: str, *, too_large: bool = False):
        super().__init__(path, reason)
        self.too_large = too_large


__all__ = ["FaceToolError", "GalleryError", "ImageError", "InvalidNameError", "ModelError", "PersonExists", "PersonNotFound",
           "VideoError", "WeightsError"]
