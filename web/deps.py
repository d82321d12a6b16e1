"""The FastAPI dependencies every route module shares: the opened model, the settings, the one
model thread, and the token checks.

`web.app.create_app` puts the recognizer, the settings and the model thread on `app.state`; a
route reaches them through `Model` and `Config`, and declares the token check it needs as a
dependency, so the check runs before the handler reads any of the upload. The one read-access rule
(SECURITY.md, "Reads"): `TOKEN_REQUIRED` for changes and for every route that answers face pixels
or face data (`FACE_ACCESS`: chips, crops, thumbnails, exports; the token always, whatever
`--protect-reads` says); `READ_ACCESS` for identify and the routes that answer names and counts
(the token only with `--protect-reads`: identify tells who is in a photo, so names are what a
client that may identify already learns). The route
modules (web.app, web.clusters) import this one and not each other.
"""
from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any, Callable, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from recognizer import Recognizer
from web.errors import ApiError
from web.settings import Settings

__all__ = ["FACE_ACCESS", "READ_ACCESS", "TOKEN_REQUIRED", "Config", "Credentials", "Model", "bearer", "check_token", "get_recognizer", "get_settings",
           "on_model_thread", "require_read_access", "require_token"]

T = TypeVar("T")

# ---- the model and the settings ----------------------------------------------------------
# Coroutines on purpose: FastAPI runs plain-function dependencies on its thread pool, where they
# would queue behind gallery work.


async def get_recognizer(request: Request) -> Recognizer:
    return request.app.state.recognizer


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


Model = Annotated[Recognizer, Depends(get_recognizer)]
Config = Annotated[Settings, Depends(get_settings)]


async def on_model_thread(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on the one model thread (see web.app's docstring)."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.model_worker, fn, *args)


# ---- the token ---------------------------------------------------------------------------
# FastAPI's HTTPBearer reads "Authorization: Bearer <token>" (scheme case-insensitive, token
# stripped) and documents the scheme in OpenAPI. auto_error=False: its own 401 ("Not
# authenticated") would not say how to authenticate, and a server without a token answers 403
# before the header is looked at; the answers below are ours.
bearer = HTTPBearer(auto_error=False, description="The server's token (serve.py --token or FACETOOL_TOKEN).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def check_token(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    """403 when the server has no token, 401 unless `credentials` carry it."""
    if not settings.token:
        raise ApiError(403, "changes are disabled: this server was started without a token (--token or FACETOOL_TOKEN)")
    if credentials is None:
        raise ApiError(401, "a bearer token is required: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    # Constant-time, so response timing says nothing about how much of a guess was right.
    if not hmac.compare_digest(credentials.credentials.encode(), settings.token.encode()):
        raise ApiError(401, "wrong token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def require_token(settings: Config, credentials: Credentials) -> None:
    """401/403 unless the request carries the server's bearer token."""
    check_token(settings, credentials)


async def require_read_access(request: Request, settings: Config) -> None:
    """The token check for reads, when the server protects them (--protect-reads). The header is
    read here rather than declared, so OpenAPI does not mark reads as needing the token."""
    if settings.protect_reads:
        check_token(settings, await bearer(request))


TOKEN_REQUIRED = [Depends(require_token)]
FACE_ACCESS = TOKEN_REQUIRED  # face pixels: never without the token (`tests/test_web_routes.py` checks every route)
READ_ACCESS = [Depends(require_read_access)]
