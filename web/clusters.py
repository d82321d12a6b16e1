"""HTTP routes of the "Unknown faces" panel: cluster uploaded photos' unknown faces, show the
clusters as face thumbnails, name one (enrolling its stored face crops) or dismiss it.

Clustering saves a run into the model directory and enrolling changes the gallery, so both need
the token; listing runs is a read (token only when reads are protected); a face thumbnail is face
pixels, which need the token always (`FACE_ACCESS`, the read rule of web.deps).
Uploaded photos are clustered from memory: the run keeps the faces' crops and the uploads' file
names, never the photos. The routes reach the model and the token check through `web.deps`, as
web.app's routes do, and clustering through the same functions as cluster.py.
"""
from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from recognizer import validate_name
from recognizer.clustering import runs, service
from recognizer.clustering.sheets import face_png as png
from web.deps import FACE_ACCESS, READ_ACCESS, TOKEN_REQUIRED, Config, Model, on_model_thread
from web.errors import ApiError
from web.uploads import ClusterEnrollBody, json_body, json_body_doc, multipart_doc, uploaded_images

__all__ = ["router", "run_or_404"]

router = APIRouter()


def run_or_404(fn: Callable[[], Any]) -> Any:
    """`fn()`, with a missing run or cluster answered 404 and a run in the wrong state 409."""
    try:
        return fn()
    except runs.RunNotFound as exc:
        raise ApiError(404, str(exc)) from None
    except runs.RunError as exc:
        raise ApiError(409, str(exc)) from None


@router.get("/clusters", summary="Saved clustering runs, newest last", dependencies=READ_ACCESS)
async def list_runs(recognizer: Model) -> dict:
    def work() -> dict:
        return {"runs": [runs.summary(recognizer.dir, rid) for rid in runs.list_runs(recognizer.dir)]}

    return await run_in_threadpool(lambda: run_or_404(work))


@router.post(
    "/clusters", summary="Group the unknown faces of uploaded photos into candidate people",
    description="Repeat the `file` field for several photos. Faces the model already names are set aside; "
    "the rest are clustered and saved as a run, as `cluster.py` does. Returns the run.",
    openapi_extra=multipart_doc(many=True), dependencies=TOKEN_REQUIRED)
async def make_run(request: Request, recognizer: Model, settings: Config) -> dict:
    uploads = await uploaded_images(request, settings)

    def work() -> dict:
        # from memory, as uploads are enrolled: the photos never reach the disk
        result = service.cluster_photos(recognizer, [u[1] for u in uploads], labels=[u[0] for u in uploads])
        if result.meta["faces"]:
            service.save(recognizer, result)
        return result.to_dict()

    return await on_model_thread(request, work)


@router.get("/clusters/{run_id}", summary="One clustering run: photos, faces, clusters and their state",
            dependencies=READ_ACCESS)
async def get_run(run_id: str, recognizer: Model) -> dict:
    def summary() -> dict:
        return dict(runs.load_run(recognizer.dir, run_id).meta, id=run_id)

    return await run_in_threadpool(lambda: run_or_404(summary))


@router.get("/clusters/{run_id}/faces/{face}.png", summary="One face of a run, as the crop it was embedded from",
            response_class=Response, responses={200: {"content": {"image/png": {}}}}, dependencies=FACE_ACCESS)
async def face_png(run_id: str, face: int, recognizer: Model) -> Response:
    def work() -> bytes:
        run = runs.load_run(recognizer.dir, run_id)
        if not 0 <= face < len(run.meta["faces"]):
            raise runs.RunNotFound(f"run {run_id} has no face {face}")
        if run.meta["faces"][face].get("removed"):
            raise runs.RunNotFound(f"face {face} of run {run_id} was removed with the person it was enrolled as")
        return png(run.arrays()[1][face])

    data = await run_in_threadpool(lambda: run_or_404(work))
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/clusters/{run_id}/{cluster_id}/enroll",
             summary="Enroll a cluster's faces as a person (new, or merged into an enrolled one)",
             openapi_extra=json_body_doc(ClusterEnrollBody), dependencies=TOKEN_REQUIRED)
async def enroll(request: Request, run_id: str, cluster_id: int, recognizer: Model) -> dict:
    body = await json_body(request, ClusterEnrollBody, 'send a JSON body {"name": "...", "exclude": [face numbers]}',
                           {"exclude": "exclude must be a list of face numbers"})
    name, exclude = validate_name(body.name), body.exclude

    def work() -> dict:
        out = run_or_404(lambda: service.enroll_cluster(recognizer, run_id, cluster_id, name, exclude=exclude)).to_dict()
        out["enrolled"] = recognizer.people().get(name, 0)
        return out

    return await on_model_thread(request, work)


@router.post("/clusters/{run_id}/{cluster_id}/dismiss", summary="Mark a cluster as not to be enrolled",
             dependencies=TOKEN_REQUIRED)
async def dismiss(run_id: str, cluster_id: int, recognizer: Model) -> dict:
    await run_in_threadpool(lambda: run_or_404(lambda: service.dismiss_cluster(recognizer, run_id, cluster_id)))
    return {"dismissed": f"{run_id}:{cluster_id}"}
