"""Typed errors. Every error that reaches a user names the file, directory or value at fault."""
from __future__ import annotations


class FaceToolError(Exception):
    """Base class for every error this tool raises on purpose."""


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


class GalleryError(FaceToolError):
    """A gallery directory is missing, damaged or was built with another model."""


class InvalidNameError(FaceToolError):
    """A person name is not acceptable (empty, too long, control characters, path separators)."""


class VideoError(ImageError):
    """A video could not be read: not a video, damaged, too large, or a camera that is not there.

    An ImageError, so every place that reports unreadable input reports it too."""
