"""HTTP API and web page over one opened model: identify uploads, list and edit enrolled people.

The model is loaded once by the caller (`serve.py`) and handed to `create_app`. Photos to identify
run on `settings.model_workers` threads (one per core by default), side by side: ONNX Runtime's
sessions run concurrent calls, MTCNN's network calls each run on one thread (so a photo's faces
do not depend on how many photos are in flight), and SFace embeds one face per call with the
command line's own session, so the answers are the command line's, bit for bit. Changes and
multi-photo work (enroll, import, clustering, videos) run on one model thread, in the order they
came, and take the writer lock to commit. Gallery-only operations (listing, removing, renaming)
run on Starlette's thread pool: the gallery has its own in-process mutex and inter-process file
lock, and reloads by itself when another process has changed it, so they need not queue behind a
slow identification.

The routes are module-level functions on `router` (and `web.clusters.router`); they reach what
`create_app` puts on `app.state` through the dependencies of `web.deps`.

Modules, each importing only those below it: app (routes, create_app) -> clusters (the unknown
faces panel's routes), docs (the offline API docs page) -> deps (dependencies), uploads (reading bodies), body_limit -> errors,
settings -> guard.
"""
from __future__ import annotations

import asyncio
import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from recognizer import EnrollReport, ImageError, ModelError, PersonExists, Recognizer, VideoError, archive, validate_name
from recognizer.faces import correction_summary, face_listing, face_thumbnail
from recognizer.results import FileOutcome
from web.body_limit import BodyLimit
from web.clusters import router as cluster_router
from web.docs import router as docs_router
from web.deps import READ_ACCESS, TOKEN_REQUIRED, Config, Model, on_model_thread
from web.errors import EXCEPTION_HANDLERS, ApiError
from web.guard import RequestGuard
from web.settings import Settings
from web.uploads import RenameBody, json_body, json_body_doc, multipart_doc, uploaded_archive, uploaded_images

__all__ = ["PAGE", "PAGE_CSP", "MergeBody", "MoveBody", "create_app", "enroll_uploads", "identify_bytes",
           "identify_uploaded_video", "on_identify_workers", "router"]

T = TypeVar("T")

PAGE = Path(__file__).resolve().parent / "index.html"

# The page is inline HTML/CSS/JS; this policy keeps it from loading anything from elsewhere.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; media-src blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def identify_uploaded_video(recognizer: Recognizer, settings: Settings, name: str, data: bytes, *, threshold: float | None = None,
                            fps: float | None = None, annotate: bool = False) -> tuple[dict, bytes | None]:
    """Tracks of an uploaded video (and its contact sheet as JPEG with `annotate`).

    OpenCV reads videos from files only: the upload goes to a private temporary file under a name
    of our own, deleted once read. A video whose container declares it longer than
    `settings.max_video_seconds` is refused (413), and none is read further than that.
    """
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
    return result.to_dict(), _encoded(result.contact_sheet(), "JPEG", quality=90) if annotate else None


def identify_bytes(recognizer: Recognizer, name: str, data: bytes, threshold: float | None,
                   annotate: bool) -> tuple[dict, bytes | None]:
    try:
        result = recognizer.identify(data, threshold=threshold)
    except ImageError as exc:  # named after the upload, as the client knows it
        raise ImageError(name, exc.reason) from None
    result.photo = name
    return result.to_dict(), _encoded(result.annotated(data), "PNG") if annotate else None


def _encoded(image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def enroll_uploads(recognizer: Recognizer, name: str, uploads: list[tuple[str, bytes, str]],
                   rejects: list[tuple[str, ApiError]] = ()) -> dict:
    """The enrolment's report, with each refused upload (`rejects`: not an image, too large) as a skipped
    file; ApiError 422 (naming each file and why) when no face was enrolled, or the refusals' own status
    when no upload was a photo."""
    if rejects and not uploads:  # not one photo to look at: the refusal itself (415, 413...) when all agree
        statuses = {exc.status for _, exc in rejects}
        raise ApiError(statuses.pop() if len(statuses) == 1 else 422, "; ".join(exc.message for _, exc in rejects))
    # The photos are enrolled from memory and never written to disk: the gallery keeps
    # embeddings, not photos, and records the client's file name as each face's source.
    report = recognizer.enroll(name, [u[1] for u in uploads], labels=[u[0] for u in uploads]) if uploads else EnrollReport(name)
    report.files += [FileOutcome(file, "refused", exc.message.removeprefix(f"{file}: ")) for file, exc in rejects]
    if report.failed:
        raise ApiError(422, report.why_not())
    out = report.to_dict()
    out["enrolled"] = recognizer.people().get(report.name, 0)
    out["threshold"] = recognizer.threshold_info().to_dict()
    out["warnings"] = [w.to_dict() for w in recognizer.confusions([report.name])] if report.added else []
    return out


async def on_identify_workers(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on one of the identify workers (see the module docstring)."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.identify_workers, fn, *args)


# ---- routes -------------------------------------------------------------------------------

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> Response:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})


@router.get("/health", summary="Liveness: the model is loaded and the server answers")
async def health(recognizer: Model) -> dict:
    return {"status": "ok", "backbone": recognizer.config.backbone}


@router.post(
    "/identify", summary="Name every face in one uploaded photo, or every face track in one short video",
    description="The same JSON as `identify.py --json` gives per photo or video; with `annotate=1`, the photo as a PNG "
    "with boxes and names drawn, or the video's tracks as a JPEG contact sheet. `fps`: video frames analysed per second.",
    openapi_extra=multipart_doc(many=False),
    responses={200: {"content": {"application/json": {}, "image/png": {}, "image/jpeg": {}}}}, dependencies=READ_ACCESS)
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
    result, png = await on_identify_workers(request, identify_bytes, recognizer, name, data, threshold, annotate)
    return Response(png, media_type="image/png") if png is not None else JSONResponse(result)


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
    "/people/{name:path}/photos", summary="Enroll photos of a person (one face per photo, the largest)",
    description="Repeat the `file` field for several photos. Reports an outcome per uploaded file, as `enroll.py --json` does: "
                "a file that is not an image, or too large, is reported and the others are enrolled. 422, naming each file "
                "and why, when no face was enrolled (no face, unreadable, not an image).",
    openapi_extra=multipart_doc(many=True), dependencies=TOKEN_REQUIRED)
async def enroll(request: Request, name: str, recognizer: Model, settings: Config) -> dict:
    name = validate_name(name)
    rejects: list[tuple[str, ApiError]] = []
    uploads = await uploaded_images(request, settings, rejects=rejects)
    return await on_model_thread(request, enroll_uploads, recognizer, name, uploads, rejects)


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
    name, data = await uploaded_archive(request)

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


@router.patch("/people/{name:path}", summary="Rename a person", openapi_extra=json_body_doc(RenameBody),
              dependencies=TOKEN_REQUIRED)
async def rename(request: Request, name: str, recognizer: Model) -> dict:
    body = await json_body(request, RenameBody, 'send a JSON body {"name": "new name"}')
    new = validate_name(body.name)
    old = validate_name(name)
    try:
        await run_in_threadpool(recognizer.rename, old, new)
    except PersonExists:
        raise ApiError(409, f"cannot rename {old!r} to {new!r}: {new!r} is already enrolled; to make them one person: "
                            f"POST /people/{old}/merge with {{\"into\": \"{new}\"}}") from None
    return {"renamed": old, "to": new}


# ---- one face at a time: list, look, remove, move; merge two people --------------------------


class MoveBody(BaseModel):
    """POST /faces/{id}/move: the person the face is of."""

    name: StrictStr


class MergeBody(BaseModel):
    """POST /people/{name}/merge: the enrolled person whose faces theirs join."""

    into: StrictStr


@router.get("/people/{name:path}", summary="One person's faces: ids, photos and boxes, and the unknown threshold",
            description="The ids are the gallery's own and stay the same; `DELETE /faces/{id}` and `POST /faces/{id}/move` "
                        "take them. `chip`: whether the face's image is kept (`GET /faces/{id}/chip.png`).",
            dependencies=READ_ACCESS)
async def person_faces(name: str, recognizer: Model) -> dict:
    return await run_in_threadpool(face_listing, recognizer, validate_name(name))


# Chips are face images: never without the token, whatever --protect-reads says.
@router.get("/faces/{face_id}/chip.png", summary="One enrolled face's aligned crop, as a PNG (token required)",
            response_class=Response, responses={200: {"content": {"image/png": {}}}}, dependencies=TOKEN_REQUIRED)
async def face_chip(face_id: int, recognizer: Model) -> Response:
    data = await run_in_threadpool(face_thumbnail, recognizer, face_id)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-store"})


@router.delete("/faces/{face_id}", summary="Remove one enrolled face (a wrong photo); the person keeps the others",
               description="Reaches every copy, as removing a person does: the gallery, its chip, cached crops, a pending "
                           "candidate, saved clustering runs. Answers with the people and the threshold after it.",
               dependencies=TOKEN_REQUIRED)
async def remove_face(face_id: int, recognizer: Model) -> dict:
    def work() -> dict:
        r = recognizer.remove_face(face_id)
        return correction_summary(recognizer, {"removed_face": face_id, "person": r.person, "photo": r.source})

    return await run_in_threadpool(work)


@router.post("/faces/{face_id}/move", summary="Make one enrolled face another person's (enrolled or new)",
             openapi_extra=json_body_doc(MoveBody), dependencies=TOKEN_REQUIRED)
async def move_face(request: Request, face_id: int, recognizer: Model) -> dict:
    body = await json_body(request, MoveBody, 'send a JSON body {"name": "the person the face is of"}')
    to = validate_name(body.name)

    def work() -> dict:
        r = recognizer.move_face(face_id, to)
        return correction_summary(recognizer, {"moved_face": face_id, "from": r.person, "to": to, "photo": r.source})

    return await run_in_threadpool(work)


@router.post("/people/{name:path}/merge", summary="Merge two enrolled people: NAME's faces join `into`'s",
             openapi_extra=json_body_doc(MergeBody), dependencies=TOKEN_REQUIRED)
async def merge(request: Request, name: str, recognizer: Model) -> dict:
    body = await json_body(request, MergeBody, 'send a JSON body {"into": "the enrolled person they are"}')
    old, into = validate_name(name), validate_name(body.into)

    def work() -> dict:
        recognizer.merge(old, into)
        return correction_summary(recognizer, {"merged": old, "into": into})

    return await run_in_threadpool(work)


# ---- the app ------------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.identify_workers.shutdown(wait=True)
    app.state.model_worker.shutdown(wait=True)
    app.state.recognizer.close()


def create_app(recognizer: Recognizer, settings: Settings) -> ASGIApp:
    """The ASGI app serving `recognizer` (an opened `recognizer.Recognizer`).

    Photos over `settings.max_pixels` are refused: the server lowers the recognizer's own limit
    to it, and checks each upload's header against it before any decoding. So are photos whose
    decode would take more than `settings.max_photo_bytes` (the recognizer's memory budget).
    """
    recognizer.max_pixels = min(recognizer.max_pixels, settings.max_pixels)
    recognizer.memory_budget = min(recognizer.memory_budget, settings.max_photo_bytes)
    app = FastAPI(title="facetool", summary="Name the faces in photos, using the people enrolled in one model.",
                  version="1", lifespan=lifespan, docs_url=None, redoc_url=None)  # /docs: web.docs, offline
    app.state.recognizer = recognizer
    app.state.settings = settings
    app.state.model_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    app.state.identify_workers = ThreadPoolExecutor(max_workers=settings.identify_workers(), thread_name_prefix="identify")
    for exc_class, handler in EXCEPTION_HANDLERS:
        app.add_exception_handler(exc_class, handler)
    app.include_router(router)
    app.include_router(cluster_router)
    app.include_router(docs_router)
    return RequestGuard(BodyLimit(app, settings.max_upload_bytes, {"/identify": settings.max_video_bytes}), settings.guard)
