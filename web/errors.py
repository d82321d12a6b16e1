"""Every error answer of the API is `{"error": message}` with a status, never a stack trace.

`ApiError` is what a route raises for a mistake of the client's; `EXCEPTION_HANDLERS` maps it
and the project's own errors to their answers.
"""
from __future__ import annotations

import logging
from typing import Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facecore.errors import FaceConflict, FaceNotFound
from recognizer import GalleryError, ImageError, InvalidNameError, PersonExists, PersonNotFound

__all__ = ["EXCEPTION_HANDLERS", "ApiError", "error_response"]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client caused or must know about; becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.headers)


def _answer(status: int, message: Callable[[Exception], str] = str) -> Callable:
    """A handler answering `status` with `message(exc)`."""
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return error_response(status, message(exc))

    return handler


async def gallery_error(request: Request, exc: GalleryError) -> JSONResponse:
    # Damage or a lock held too long by another process: the server's problem, not the
    # client's, and the message names server paths, so it goes to the log only.
    log.error("gallery error in %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "the gallery is unavailable; the details are in the server log")


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
    return error_response(422, "; ".join(parts) or "invalid request")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; the details are in the server log")


# A handler is found by walking the exception's classes in MRO order, so PersonNotFound and
# PersonExists are answered by their own handlers before their base GalleryError's.
EXCEPTION_HANDLERS: list[tuple[type[Exception], Callable]] = [
    (ApiError, api_error),
    (InvalidNameError, _answer(422)),
    (ImageError, _answer(400)),
    (PersonNotFound, _answer(404, lambda exc: f"no person named {exc.name!r} is enrolled")),
    (PersonExists, _answer(409, lambda e: f"cannot rename {e.old!r} to {e.new!r}: {e.new!r} is already enrolled")),
    (FaceNotFound, _answer(404, lambda e: f"no enrolled face has id {', '.join(map(str, e.ids))}")),
    (FaceConflict, _answer(409, lambda e: f"{e.person!r} has the photo of this face enrolled already "
                                          f"({', '.join(e.sources)}); remove the face instead (DELETE /faces/ID)")),
    (GalleryError, gallery_error),
    (StarletteHTTPException, http_error),
    (RequestValidationError, validation_error),
    (Exception, unexpected),
]
