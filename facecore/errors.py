"""Every error the tool raises on purpose, under one base: `FaceToolError`, so one `except
FaceToolError` catches every error of `gallery` and `recognizer`. Every error that reaches a user
names the file, directory or value at fault.
"""
from __future__ import annotations


class FaceToolError(Exception):
    """Base class for every error this tool raises on purpose."""


class GalleryError(FaceToolError):
    """A gallery directory is missing, damaged or was built with another model."""


class PersonNotFound(GalleryError):
    """No person of that name is enrolled (the request's fault, not damage: a server answers 404)."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class PersonExists(GalleryError):
    """A rename onto a name that is already enrolled (a server answers 409)."""

    def __init__(self, message: str, old: str, new: str) -> None:
        super().__init__(message)
        self.old, self.new = old, new


class FaceNotFound(GalleryError):
    """No enrolled face has one of these ids (the request's fault: a server answers 404)."""

    def __init__(self, message: str, ids: list[int]) -> None:
        super().__init__(message)
        self.ids = list(ids)


class FaceConflict(GalleryError):
    """A face cannot be moved to a person who has that photo enrolled already (a server answers 409)."""

    def __init__(self, message: str, person: str, sources: list[str]) -> None:
        super().__init__(message)
        self.person, self.sources = person, list(sources)


class InvalidNameError(FaceToolError):
    """A person name is not acceptable (empty, too long, control characters, path separators)."""


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
    """An export archive is damaged, truncated, altered or not one of ours (a ModelError: it is model data)."""


class VideoError(ImageError):
    """A video could not be read: not a video, damaged, too large, or a camera that is not there (an
    ImageError, so every place that reports unreadable input reports it too). `too_large`: it is over
    a limit (file size, frame pixels, declared length) rather than unreadable."""

    def __init__(self, path: object, reason: str, *, too_large: bool = False):
        super().__init__(path, reason)
        self.too_large = too_large


__all__ = ["ArchiveError", "FaceConflict", "FaceNotFound", "FaceToolError", "GalleryError", "ImageError", "InvalidNameError", "ModelError",
           "PersonExists", "PersonNotFound", "VideoError", "WeightsError"]
