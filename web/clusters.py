"""HTTP routes of the "Unknown faces" panel: cluster uploaded photos' unknown faces, show the
clusters as face thumbnails, name one (enrolling its stored face crops) or dismiss it.

Clustering saves a run into the model directory and enrolling changes the gallery, so both need
the token; listing runs and fetching thumbnails are reads (token only when reads are protected).
Uploaded photos are clustered from memory: the run keeps the faces' crops and the uploads' file
names, never the photos.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool


def add_cluster_routes(
    app: FastAPI,
    recognizer: Any,
    *,
    check_token: Callable[[Request], None],
    check_read: Callable[[Request], None],
    uploaded_images: Callable[[Request], Awaitable[list[tuple[str, bytes, str]]]],
    on_model_thread: Callable[..., Awaitable[Any]],
    api_error: Callable[[int, str], Exception],
) -> None:
    from recognizer.clustering import runs, service

    def run_or_404(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except runs.RunNotFound as exc:
            raise api_error(404, str(exc)) from None
        except runs.RunError as exc:
            raise api_error(409, str(exc)) from None

    def summary(run_id: str) -> dict:
        meta = runs.load_run(recognizer.dir, run_id).meta
        return dict(meta, id=run_id)

    @app.get("/clusters", summary="Saved clustering runs, newest last")
    async def list_runs(request: Request) -> dict:
        check_read(request)

        def work() -> dict:
            out = []
            for rid in runs.list_runs(recognizer.dir):
                meta = runs.load_run(recognizer.dir, rid).meta
                out.append({"run": rid, "created": meta.get("created"), "faces": len(meta["faces"]),
                            "clusters": len(meta["clusters"]),
                            "open": sum(c["status"] == "open" for c in meta["clusters"])})
            return {"runs": out}

        return await run_in_threadpool(lambda: run_or_404(work))

    @app.post(
        "/clusters",
        summary="Group the unknown faces of uploaded photos into candidate people",
        description="Repeat the `file` field for several photos. Faces the model already names are set aside; "
        "the rest are clustered and saved as a run, as `cluster.py` does. Returns the run.",
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}},
    )
    async def make_run(request: Request) -> dict:
        check_token(request)
        uploads = await uploaded_images(request)

        def work() -> dict:
            # from memory, as uploads are enrolled: the photos never reach the disk
            result = service.cluster_photos(recognizer, [u[1] for u in uploads], labels=[u[0] for u in uploads])
            if result.meta["faces"]:
                service.save(recognizer, result)
            return result.to_dict()

        return await on_model_thread(work)

    @app.get("/clusters/{run_id}", summary="One clustering run: photos, faces, clusters and their state")
    async def get_run(request: Request, run_id: str) -> dict:
        check_read(request)
        return await run_in_threadpool(lambda: run_or_404(lambda: summary(run_id)))

    @app.get("/clusters/{run_id}/faces/{face}.png", summary="One face of a run, as the crop it was embedded from",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def face_png(request: Request, run_id: str, face: int) -> Response:
        from recognizer.clustering.sheets import face_png as png

        check_read(request)

        def work() -> bytes:
            run = runs.load_run(recognizer.dir, run_id)
            if not 0 <= face < len(run.meta["faces"]):
                raise runs.RunNotFound(f"run {run_id} has no face {face}")
            return png(run.arrays()[1][face])

        data = await run_in_threadpool(lambda: run_or_404(work))
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.post(
        "/clusters/{run_id}/{cluster_id}/enroll",
        summary="Enroll a cluster's faces as a person (new, or merged into an enrolled one)",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "exclude": {"type": "array", "items": {"type": "integer"}}}}}}}},
    )
    async def enroll(request: Request, run_id: str, cluster_id: int) -> dict:
        from gallery import validate_name

        check_token(request)
        try:
            body = await request.json()
        except ValueError:
            raise api_error(422, 'send a JSON body {"name": "...", "exclude": [face numbers]}') from None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise api_error(422, 'send a JSON body {"name": "...", "exclude": [face numbers]}')
        exclude = body.get("exclude", [])
        if not isinstance(exclude, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in exclude):
            raise api_error(422, "exclude must be a list of face numbers")
        name = validate_name(body["name"])

        def work() -> dict:
            out = run_or_404(lambda: service.enroll_cluster(recognizer, run_id, cluster_id, name, exclude=exclude)).to_dict()
            out["enrolled"] = recognizer.people().get(name, 0)
            return out

        return await on_model_thread(work)

    @app.post("/clusters/{run_id}/{cluster_id}/dismiss", summary="Mark a cluster as not to be enrolled")
    async def dismiss(request: Request, run_id: str, cluster_id: int) -> dict:
        check_token(request)
        await run_in_threadpool(lambda: run_or_404(lambda: service.dismiss_cluster(recognizer, run_id, cluster_id)))
        return {"dismissed": f"{run_id}:{cluster_id}"}
