"""Typed errors of the gallery, and `FaceToolError`, the base of every error the project raises on purpose.

The base lives here, in the bottom layer, so that `gallery` imports nothing from `recognizer`
while one `except FaceToolError` still catches every error of both (`recognizer.errors`
re-exports these). Every error that reaches a user names the file, directory or value at fault.
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


class InvalidNameError(FaceToolError):
    """A person name is not acceptable (empty, too long, control characters, path separators)."""
