"""HTTP API and web page over one opened model: identify uploads, list and edit enrolled people.

The model is loaded once by the caller (`serve.py`) and handed to `create_app`. Model work runs
on one dedicated worker thread: the detector and the embedder are not known to be thread-safe,
and on a small CPU box two inferences at once would only slow each other down. Gallery-only
operations (listing, removing, renaming) run on Starlette's thread pool: the gallery has its own
in-process mutex and inter-process file lock, and reloads by itself when another process has
changed it, so they need not queue behind a slow identification.

The routes are module-level functions on `router` (and `web.clusters.router`). `create_app` puts
the recognizer, the settings and the model thread on `app.state`; a route reaches them through
the dependencies `Model` and `Config`, and declares the token check it needs as a dependency
(`TOKEN_REQUIRED` for changes, `READ_ACCESS` for reads, which need the token only with
`--protect-reads`), so the check runs before the handler reads any of the upload.
"""
from __future__ import annotations

import asyncio
import hmac
import io
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, AsyncIterator, Callable, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recognizer import archive
from recognizer import GalleryError, ImageError, InvalidNameError, ModelError, PersonExists, PersonNotFound, validate_name
from web.guard import GuardSettings, RequestGuard

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "index.html"
DEFAULT_MAX_UPLOAD_MB = 10.0
# A short clip: a minute of phone video at 720p is about 50 MB.
DEFAULT_MAX_VIDEO_MB = 50.0
DEFAULT_MAX_VIDEO_SECONDS = 60.0
# Bigger than a 48-Mpx phone photo; a larger image is a scan or a decompression bomb.
DEFAULT_MAX_PIXELS = 60_000_000
MAX_FILES_PER_REQUEST = 50
# Decoding memory per photo (recognizer.image.decode_cost). Photos are decoded one at a time on
# the model thread, so this is most of what a hostile upload can add to the server's memory.
DEFAULT_MAX_PHOTO_BYTES = 96 * 1024 * 1024

T = TypeVar("T")

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

# The page is inline HTML/CSS/JS; this policy keeps it from loading anything from elsewhere.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


class ApiError(Exception):
    """An error the client caused or must know about; becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class Settings:
    token: str | None = None  # None: writes are refused
    protect_reads: bool = False
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    # POST /identify also takes one video: its own size limit (counted while the body is read)
    # and a cap on its length, which bounds the decoding and detection work one request causes.
    max_video_bytes: int = int(DEFAULT_MAX_VIDEO_MB * 1024 * 1024)
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS
    max_photo_bytes: int = DEFAULT_MAX_PHOTO_BYTES  # memory one photo's decode may take
    guard: GuardSettings = GuardSettings()  # Host names, timeouts, uploads in flight (web/guard.py)


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


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# Bytes of a request body looked at to tell a video upload from a photo upload.
_SNIFF_BYTES = 8192


def _first_part_is_video(head: bytes, complete: bool) -> bool | None:
    """Whether the first file of a multipart body starting with `head` is a video (by its first
    bytes); None while `head` is too short to tell and more is coming."""
    from recognizer import is_video_input

    end = head.find(b"\r\n\r\n")  # the end of the first part's headers
    if end < 0:
        return None if not complete else False
    content = head[end + 4 :]
    if len(content) < 512 and not complete:
        return None
    return is_video_input(content[:512])


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, counting while they are read.

    A declared Content-Length over the limit is refused before any of the body is read; a
    chunked or lying body is cut off as soon as the running count passes the limit, so no more
    than `limit` bytes of one request are ever buffered. It wraps the whole FastAPI app so that
    whatever the app makes of the interrupted read (FastAPI calls it a 400 parse error) is
    replaced by the 413. It also has the last word on exceptions, which the app's catch-all
    handler has already logged and answered.

    Paths in `video_paths` take a video upload under a limit of its own: the first bytes of the
    upload's first file say which limit applies, and the count is checked against it from then on.
    """

    def __init__(self, app: ASGIApp, limit: int, video_paths: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.video_paths = video_paths or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        video_limit = self.video_paths.get(scope.get("path", ""))
        # Until the upload's first bytes are in, the larger of the two limits holds.
        limit = self.limit if video_limit is None else max(self.limit, video_limit)
        kind = "upload"

        def too_large() -> ApiError:
            return ApiError(413, f"request body is over the {kind} limit of {limit} bytes ({limit / 2**20:g} MB)")

        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await _error(413, too_large().message)(scope, receive, send)
                    return
        received = 0
        exceeded = False
        started = False
        head = b"" if video_limit is not None else None

        async def limited_receive() -> Message:
            nonlocal received, exceeded, head, limit, kind
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if head is not None:
                    head += body[: _SNIFF_BYTES - len(head)]
                    video = _first_part_is_video(head, len(head) >= _SNIFF_BYTES or not message.get("more_body", False))
                    if video is not None:
                        limit, kind = (video_limit, "video upload") if video else (self.limit, "upload")
                        head = None
                if received > limit:
                    exceeded = True
                    raise too_large()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded and not started:
                log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
                await _error(500, "internal server error; the details are in the server log")(scope, receive, send)
                return
        if exceeded:
            await _error(413, too_large().message)(scope, receive, send)


def identify_uploaded_video(recognizer: Any, settings: Settings, name: str, data: bytes, *, threshold: float | None = None,
                            fps: float | None = None, annotate: bool = False) -> tuple[dict, bytes | None]:
    """Tracks of an uploaded video (and its contact sheet as JPEG with `annotate`).

    OpenCV reads videos from files only: the upload goes to a private temporary file under a name
    of our own, deleted once read. A video whose container declares it longer than
    `settings.max_video_seconds` is refused (413), and none is read further than that.
    """
    from recognizer import VideoError

    with tempfile.TemporaryDirectory(prefix="facetool-upload-") as tmp:
        path = Path(tmp) / "upload.video"
        path.write_bytes(data)
        try:
            result = recognizer.identify_video(path, fps=fps, threshold=threshold, name=name, max_bytes=settings.max_video_bytes,
                                               # a decoded frame (3 bytes a pixel) within one photo's decode budget
                                               max_pixels=min(settings.max_pixels, settings.max_photo_bytes // 3),
                                               seconds=settings.max_video_seconds,
                                               max_duration=settings.max_video_seconds)
        except VideoError as exc:  # its path is our temporary file: the client knows the upload by its own name
            raise ApiError(413 if exc.too_large else 400, f"{name}: {exc.reason}") from None
    jpeg = None
    if annotate:
        buf = io.BytesIO()
        result.contact_sheet().save(buf, format="JPEG", quality=90)
        jpeg = buf.getvalue()
    return result.to_dict(), jpeg


# ---- dependencies -------------------------------------------------------------------------
# Coroutines on purpose: FastAPI runs plain-function dependencies on its thread pool, where they
# would queue behind gallery work.


async def get_recognizer(request: Request) -> Any:
    return request.app.state.recognizer


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


Model = Annotated[Any, Depends(get_recognizer)]
Config = Annotated[Settings, Depends(get_settings)]


async def require_token(request: Request, settings: Config) -> None:
    """401/403 unless the request carries the server's bearer token."""
    if not settings.token:
        raise ApiError(403, "changes are disabled: this server was started without a token (--token or FACETOOL_TOKEN)")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "a bearer token is required: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    # Constant-time, so response timing says nothing about how much of a guess was right.
    if not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
        raise ApiError(401, "wrong token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def require_read_access(request: Request, settings: Config) -> None:
    """The token check for reads, when the server protects them (--protect-reads)."""
    if settings.protect_reads:
        await require_token(request, settings)


TOKEN_REQUIRED = [Depends(require_token)]
READ_ACCESS = [Depends(require_read_access)]


async def on_model_thread(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on the one model thread (see the module docstring)."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.model_worker, fn, *args)


# ---- errors: always {"error": ...}, never a stack trace ---------------------------------


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, exc.message, exc.headers)


async def bad_name(request: Request, exc: InvalidNameError) -> JSONResponse:
    return _error(422, str(exc))


async def bad_image(request: Request, exc: ImageError) -> JSONResponse:
    return _error(400, str(exc))


async def no_such_person(request: Request, exc: PersonNotFound) -> JSONResponse:
    return _error(404, f"no person named {exc.name!r} is enrolled")


async def person_exists(request: Request, exc: PersonExists) -> JSONResponse:
    return _error(409, f"cannot rename {exc.old!r} to {exc.new!r}: {exc.new!r} is already enrolled")


async def gallery_error(request: Request, exc: GalleryError) -> JSONResponse:
    # Damage or a lock held too long by another process: the server's problem, not the
    # client's, and the message names server paths, so it goes to the log only.
    log.error("gallery error in %s %s: %s", request.method, request.url.path, exc)
    return _error(503, "the gallery is unavailable; the details are in the server log")


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
    return _error(422, "; ".join(parts) or "invalid request")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal server error; the details are in the server log")


# A handler is found by walking the exception's classes in MRO order, so PersonNotFound and
# PersonExists are answered by their own handlers before their base GalleryError's.
EXCEPTION_HANDLERS: list[tuple[type[Exception], Callable]] = [
    (ApiError, api_error),
    (InvalidNameError, bad_name),
    (ImageError, bad_image),
    (PersonNotFound, no_such_person),
    (PersonExists, person_exists),
    (GalleryError, gallery_error),
    (StarletteHTTPException, http_error),
    (RequestValidationError, validation_error),
    (Exception, unexpected),
]


# ---- uploads ------------------------------------------------------------------------------


async def uploaded_images(request: Request, settings: Settings, allow_video: bool = False) -> list[tuple[str, bytes, str]]:
    """(client file name, bytes, suffix) of every `file` field, each checked to be an image
    of acceptable size before any model work; with `allow_video`, a video (suffix `video`)
    within the video limit is accepted too."""
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
            data = await field.read()
            if not data:
                raise ApiError(400, f"{name}: is empty (0 bytes)")
            suffix = sniff_image(data)
            if suffix is None and allow_video:
                from recognizer import is_video_input

                if is_video_input(data[:512]):
                    if len(data) > settings.max_video_bytes:
                        raise ApiError(413, f"{name}: {len(data)} bytes is over the video limit of {settings.max_video_bytes} bytes")
                    out.append((name, data, "video"))
                    continue
            if suffix is None:
                kinds = "JPEG, PNG, WebP, GIF, BMP or TIFF" + (", or a video (MP4, MOV, MKV, WebM, AVI...)" if allow_video else "")
                raise ApiError(415, f"{name}: not an image ({kinds} expected, judged by content)")
            if len(data) > settings.max_upload_bytes:
                raise ApiError(413, f"{name}: {len(data)} bytes is over the upload limit of {settings.max_upload_bytes} bytes")
            check_pixels(name, data, settings.max_pixels)
            out.append((name, data, suffix))
        return out
    finally:
        await form.close()


def check_pixels(name: str, data: bytes, max_pixels: int) -> None:
    """413 for an image whose header declares too many pixels; read before anything is decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"{name}: too many pixels ({exc})") from None
    except Exception:
        return  # a damaged header: the decoder reports it, as a 400 or an 'unreadable' outcome
    if w * h > max_pixels:
        raise ApiError(413, f"{name}: {w}x{h} pixels is over the limit of {max_pixels} pixels")


def identify_bytes(recognizer: Any, name: str, data: bytes, threshold: float | None,
                   annotate: bool) -> tuple[dict, bytes | None]:
    try:
        result = recognizer.identify(data, threshold=threshold)
    except ImageError as exc:  # named after the upload, as the client knows it
        raise ImageError(name, exc.reason) from None
    result.photo = name
    png = None
    if annotate:
        buf = io.BytesIO()
        result.annotated(data).save(buf, format="PNG")
        png = buf.getvalue()
    return result.to_dict(), png


def enroll_uploads(recognizer: Any, name: str, uploads: list[tuple[str, bytes, str]]) -> dict:
    # The photos are enrolled from memory and never written to disk: the gallery keeps
    # embeddings, not photos, and records the client's file name as each face's source.
    report = recognizer.enroll(name, [u[1] for u in uploads], labels=[u[0] for u in uploads])
    out = report.to_dict()
    out["enrolled"] = recognizer.people().get(report.name, 0)
    out["threshold"] = recognizer.threshold_info().to_dict()
    out["warnings"] = [w.to_dict() for w in recognizer.confusions([report.name])] if report.added else []
    return out


def multipart_doc(many: bool) -> dict:
    """OpenAPI description of the multipart body, which the handlers parse themselves so
    that the token is checked before an upload is read."""
    one = {"type": "string", "format": "binary"}
    schema = {"type": "object", "required": ["file"], "properties": {"file": {"type": "array", "items": one} if many else one}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


# ---- routes -------------------------------------------------------------------------------

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> Response:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})


@router.get("/health", summary="Liveness: the model is loaded and the server answers")
async def health(recognizer: Model) -> dict:
    return {"status": "ok", "backbone": recognizer.config.backbone}


@router.post(
    "/identify",
    summary="Name every face in one uploaded photo, or every face track in one short video",
    description="The same JSON as `identify.py --json` gives per photo or video; with `annotate=1`, the photo as a PNG "
    "with boxes and names drawn, or the video's tracks as a JPEG contact sheet. `fps`: video frames analysed per second.",
    openapi_extra=multipart_doc(many=False),
    responses={200: {"content": {"application/json": {}, "image/png": {}, "image/jpeg": {}}}},
    dependencies=READ_ACCESS,
)
async def identify(request: Request, recognizer: Model, settings: Config, annotate: bool = False,
                   threshold: float | None = None, fps: float | None = None) -> Response:
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise ApiError(422, f"threshold {threshold} is not a cosine similarity in [-1, 1]")
    if fps is not None and not 0 < fps <= 30:
        raise ApiError(422, f"fps {fps} is not a number of video frames per second in (0, 30]")
    uploads = await uploaded_images(request, settings, allow_video=True)
    if len(uploads) != 1:
        raise ApiError(422, f"send exactly one photo or video in the 'file' field (got {len(uploads)})")
    name, data, kind = uploads[0]
    if kind == "video":
        def video() -> tuple[dict, bytes | None]:
            return identify_uploaded_video(recognizer, settings, name, data, threshold=threshold, fps=fps, annotate=annotate)

        result, jpeg = await on_model_thread(request, video)
        return Response(jpeg, media_type="image/jpeg") if jpeg is not None else JSONResponse(result)
    result, png = await on_model_thread(request, identify_bytes, recognizer, name, data, threshold, annotate)
    if png is not None:
        return Response(png, media_type="image/png")
    return JSONResponse(result)


@router.get("/people", summary="Enrolled people and how many faces each has, and the unknown threshold for them",
            description="`threshold` is the one identify uses for this gallery, with the share of strangers it is expected "
                        "to name (`expected_fpir`) and of known people's photos it is expected to call unknown "
                        "(`expected_dir_cost`).",
            dependencies=READ_ACCESS)
async def people(recognizer: Model) -> dict:
    def listing() -> dict:
        return {"people": recognizer.people(), "threshold": recognizer.threshold_info().to_dict()}

    return await run_in_threadpool(listing)


@router.post(
    "/people/{name:path}/photos",
    summary="Enroll photos of a person (one face per photo, the largest)",
    description="Repeat the `file` field for several photos. Reports an outcome per uploaded file, as `enroll.py --json` does.",
    openapi_extra=multipart_doc(many=True),
    dependencies=TOKEN_REQUIRED,
)
async def enroll(request: Request, name: str, recognizer: Model, settings: Config) -> dict:
    name = validate_name(name)
    uploads = await uploaded_images(request, settings)
    return await on_model_thread(request, enroll_uploads, recognizer, name, uploads)


@router.delete("/people/{name:path}", summary="Remove a person and all their faces", dependencies=TOKEN_REQUIRED)
async def remove(name: str, recognizer: Model) -> dict:
    person = validate_name(name)
    return {"removed": person, "faces": await run_in_threadpool(recognizer.remove, person)}


# Chips are face images: never without the token, whatever --protect-reads says.
@router.get("/export", summary="Download every enrolled face (names, chips, vectors) as one archive (token required)",
            responses={200: {"content": {"application/x-tar": {}}}}, dependencies=TOKEN_REQUIRED)
async def export(recognizer: Model) -> Response:
    def work() -> bytes:
        with tempfile.TemporaryDirectory(prefix="facetool-export-") as tmp:
            path = Path(tmp) / "faces.tar"
            recognizer.refresh()
            archive.export_model(recognizer, path)
            return path.read_bytes()

    data = await run_in_threadpool(work)
    return Response(data, media_type="application/x-tar",
                    headers={"Content-Disposition": 'attachment; filename="facetool-export.tar"'})


@router.post("/import", summary="Add the faces of an exported archive (token required)",
             description="The `file` field holds an archive from `GET /export` or `enroll.py --export`. People already "
                         "enrolled here are skipped and listed under `clashes`; a damaged archive is refused (400) "
                         "and nothing changes.",
             openapi_extra=multipart_doc(many=False), dependencies=TOKEN_REQUIRED)
async def import_(request: Request, recognizer: Model) -> dict:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(422, "send the archive as multipart/form-data in a field named 'file'")
    form = await request.form(max_files=1, max_fields=1)
    try:
        field = form.get("file")
        if not isinstance(field, UploadFile):
            raise ApiError(422, "no file upload in a field named 'file'")
        name, data = safe_filename(field.filename), await field.read()
    finally:
        await form.close()

    def work() -> dict:
        with tempfile.TemporaryDirectory(prefix="facetool-import-") as tmp:
            path = Path(tmp) / "archive.tar"
            path.write_bytes(data)
            try:
                report = archive.import_archive(recognizer, path)
            except ModelError as exc:  # the archive's fault; named by the upload's name, not the server's temp path
                raise ApiError(400, str(exc).replace(str(path), name)) from None
        out = report.to_dict()
        out["archive"] = name
        return out

    return await on_model_thread(request, work)


@router.patch(
    "/people/{name:path}",
    summary="Rename a person",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}}},
    dependencies=TOKEN_REQUIRED,
)
async def rename(request: Request, name: str, recognizer: Model) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(422, 'send a JSON body {"name": "new name"}') from None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise ApiError(422, 'send a JSON body {"name": "new name"}')
    new = validate_name(body["name"])
    old = validate_name(name)
    await run_in_threadpool(recognizer.rename, old, new)
    return {"renamed": old, "to": new}


# ---- the app ------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.model_worker.shutdown(wait=True)
    app.state.recognizer.close()


def create_app(recognizer: Any, settings: Settings) -> ASGIApp:
    """The ASGI app serving `recognizer` (an opened `recognizer.Recognizer`).

    Photos over `settings.max_pixels` are refused: the server lowers the recognizer's own limit
    to it, and checks each upload's header against it before any decoding. So are photos whose
    decode would take more than `settings.max_photo_bytes` (the recognizer's memory budget).
    """
    from web.clusters import router as cluster_router

    recognizer.max_pixels = min(recognizer.max_pixels, settings.max_pixels)
    recognizer.memory_budget = min(recognizer.memory_budget, settings.max_photo_bytes)
    app = FastAPI(
        title="facetool",
        summary="Name the faces in photos, using the people enrolled in one model.",
        version="1",
        lifespan=lifespan,
    )
    app.state.recognizer = recognizer
    app.state.settings = settings
    app.state.model_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    for exc_class, handler in EXCEPTION_HANDLERS:
        app.add_exception_handler(exc_class, handler)
    app.include_router(router)
    app.include_router(cluster_router)
    return RequestGuard(BodyLimit(app, settings.max_upload_bytes, {"/identify": settings.max_video_bytes}), settings.guard)
