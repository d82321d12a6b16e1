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


class InvalidNameError(FaceToolError):
    """A person name is not acceptable (empty, too long, control characters, path separators)."""
