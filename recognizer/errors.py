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


__all__ = ["FaceToolError", "GalleryError", "ImageError", "InvalidNameError", "ModelError", "PersonExists", "PersonNotFound",
           "WeightsError"]
