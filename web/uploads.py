"""Reading what clients upload: multipart files checked by content and size before any model
work, and JSON bodies validated against their Pydantic models.

The handlers read their bodies themselves, after the route's token dependency has run: a body
parameter would have FastAPI read and parse the upload before any dependency, so an anonymous
client's malformed body would be answered 422 instead of 401.
"""
from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import TypeVar

from fastapi import Request
from PIL import Image
from pydantic import BaseModel, StrictInt, StrictStr, ValidationError
from starlette.datastructures import UploadFile

from recognizer import ImageError, is_video_input
from recognizer.image import check_decode
from web.errors import ApiError
from web.settings import Settings

__all__ = ["MAX_FILES_PER_REQUEST", "ClusterEnrollBody", "RenameBody", "check_pixels", "checked_upload", "json_body",
           "json_body_doc", "multipart_doc", "safe_filename", "sniff_image", "uploaded_archive", "uploaded_images"]

MAX_FILES_PER_REQUEST = 50

B = TypeVar("B", bound=BaseModel)

# Magic bytes of the formats the decoder is meant to accept. The file name and the client's
# Content-Type are not trusted: both are whatever the uploader says.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"GIF87a", ".gif"),
    (0, b"GIF89a", ".gif"),
    (0, b"BM", ".bmp"),
    (0, b"II*\x00", ".tif"),
    (0, b"MM\x00*", ".tif"),
]


def sniff_image(data: bytes) -> str | None:
    """The file suffix for the image format `data` starts with, or None when it is no image we accept."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for offset, magic, suffix in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return suffix
    return None


def safe_filename(name: str | None) -> str:
    """The last path component of a client-supplied file name, without control characters.

    It is only ever echoed back in reports and stored as a label; files on disk get names of our own.
    """
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = "".join(c for c in base if c.isprintable())[:200]
    return base or "upload"


async def uploaded_images(request: Request, settings: Settings, allow_video: bool = False,
                          rejects: list[tuple[str, ApiError]] | None = None) -> list[tuple[str, bytes, str]]:
    """(client file name, bytes, suffix) of every `file` field, each checked to be an image
    of acceptable size before any model work; with `allow_video`, a video (suffix `video`)
    within the video limit is accepted too. With `rejects`, a file refused (not an image, too
    large...) is added to it with its error instead of failing the request."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(422, "send the photo as multipart/form-data in a field named 'file'")
    form = await request.form(max_files=MAX_FILES_PER_REQUEST, max_fields=MAX_FILES_PER_REQUEST)
    try:
        fields = form.getlist("file")
        if not fields:
            raise ApiError(422, "no field named 'file' in the upload")
        out = []
        for field in fields:
            if not isinstance(field, UploadFile):
                raise ApiError(422, "the 'file' field must be a file upload, not text")
            name = safe_filename(field.filename)
            try:
                out.append(checked_upload(name, await field.read(), settings, allow_video))
            except ApiError as exc:
                if rejects is None:
                    raise
                rejects.append((name, exc))
        return out
    finally:
        await form.close()


async def uploaded_archive(request: Request) -> tuple[str, bytes]:
    """(client file name, bytes) of the one `file` field of an archive upload."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(422, "send the archive as multipart/form-data in a field named 'file'")
    form = await request.form(max_files=1, max_fields=1)
    try:
        field = form.get("file")
        if not isinstance(field, UploadFile):
            raise ApiError(422, "no file upload in a field named 'file'")
        return safe_filename(field.filename), await field.read()
    finally:
        await form.close()


def checked_upload(name: str, data: bytes, settings: Settings, allow_video: bool) -> tuple[str, bytes, str]:
    """(name, data, suffix) of one uploaded file, or the ApiError that refuses it."""
    if not data:
        raise ApiError(400, f"{name}: is empty (0 bytes)")
    suffix = sniff_image(data)
    if suffix is None and allow_video and is_video_input(data[:512]):
        if len(data) > settings.max_video_bytes:
            raise ApiError(413, f"{name}: {len(data)} bytes is over the video limit of {settings.max_video_bytes} bytes")
        return name, data, "video"
    if suffix is None:
        kinds = "JPEG, PNG, WebP, GIF, BMP or TIFF" + (", or a video (MP4, MOV, MKV, WebM, AVI...)" if allow_video else "")
        raise ApiError(415, f"{name}: not an image ({kinds} expected, judged by content)")
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, f"{name}: {len(data)} bytes is over the upload limit of {settings.max_upload_bytes} bytes")
    check_pixels(name, data, settings.max_pixels)
    return name, data, suffix


def check_pixels(name: str, data: bytes, max_pixels: int) -> None:
    """413 for an image whose header declares too many pixels; read before anything is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"{name}: too many pixels ({exc})") from None
    except Exception:
        return  # a damaged header: the decoder reports it, as a 400 or an 'unreadable' outcome
    try:
        check_decode(name, w, h, 0, max_pixels)  # the decoder's own rule, early: before the model thread
    except ImageError as exc:
        raise ApiError(413, str(exc)) from None


def multipart_doc(many: bool) -> dict:
    """OpenAPI description of the multipart body, which the handlers parse themselves so
    that the token is checked before an upload is read."""
    one = {"type": "string", "format": "binary"}
    schema = {"type": "object", "required": ["file"], "properties": {"file": {"type": "array", "items": one} if many else one}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


# ---- JSON bodies ---------------------------------------------------------------------------
# Strict types: a number is no name, and true is no face number (JSON has no other ints).


class RenameBody(BaseModel):
    """PATCH /people/{name}: the person's new name."""

    name: StrictStr


class ClusterEnrollBody(BaseModel):
    """POST /clusters/{run}/{cluster}/enroll: who the cluster is, and faces of it that are not them."""

    name: StrictStr
    exclude: list[StrictInt] = []


def json_body_doc(model: type[BaseModel]) -> dict:
    """OpenAPI description of a JSON body that the handler reads itself (see the module docstring)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def json_body(request: Request, model: type[B], usage: str, field_messages: dict[str, str] | None = None) -> B:
    """The request's JSON body as `model`. A body that is no JSON, or does not fit the model, is a
    422 saying `usage`; or, when every error is in one field of `field_messages`, that field's message."""
    try:
        raw = await request.json()
    except ValueError:
        raise ApiError(422, usage) from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = {e["loc"][0] if e["loc"] else None for e in exc.errors()}
        only = fields.pop() if len(fields) == 1 else None
        raise ApiError(422, (field_messages or {}).get(only, usage)) from None
