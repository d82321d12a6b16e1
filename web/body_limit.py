"""The request body's size limit: uploads over it are refused with 413 while they are read.

Starlette's RequestBodyLimitMiddleware (which FastAPI's `max_body_size` uses) is not the same job:
it answers a plain-text "Content Too Large" instead of our JSON error naming the limit, lets the
app run on a body whose declared Content-Length is already over the limit (refusing it at the
first read, or when the answer starts), and has one limit per app, where /identify takes a video
under a limit of its own that the upload's first bytes choose.
"""
from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recognizer import is_video_input
from web.errors import ApiError, error_response

__all__ = ["BodyLimit"]

log = logging.getLogger(__name__)

# Bytes of a request body looked at to tell a video upload from a photo upload.
_SNIFF_BYTES = 8192


def _first_part_is_video(head: bytes, complete: bool) -> bool | None:
    """Whether the first file of a multipart body starting with `head` is a video (by its first
    bytes); None while `head` is too short to tell and more is coming."""
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
                    await error_response(413, too_large().message)(scope, receive, send)
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
                await error_response(500, "internal server error; the details are in the server log")(scope, receive, send)
                return
        if exceeded:
            await error_response(413, too_large().message)(scope, receive, send)
