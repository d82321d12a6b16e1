"""The API documentation page (`/docs`, Swagger UI) served with no network: its script, style and
icon come from the `fastapi-offline` package installed with the server (its `static/` folder:
Swagger UI 5, which reads FastAPI's OpenAPI 3.1), never from a CDN.

FastAPI's own `/docs` and `/redoc` load their scripts from cdn.jsdelivr.net and are blank offline;
`create_app` turns both off and includes this router instead. `/redoc` is not offered: ReDoc's
script loads its logo from cdn.redoc.ly, and `/docs` shows the same routes. Only the asset files the
page needs are answered, by fixed name. (The package's `FastAPIOffline` app class is not used: the
page here also sends a content security policy, and the app is built by `create_app`.)
"""
from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, Response

from web.errors import ApiError

__all__ = ["ASSETS", "DOCS_CSP", "docs", "docs_asset", "router"]

ASSET_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSET_PREFIX = "/docs/assets"
# name -> media type: the files the page loads, and nothing else of the package's folder
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}

# Swagger UI starts from one inline script; everything else is this server's own.
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> Response:
    page = get_swagger_ui_html(openapi_url="/openapi.json", title="facetool API",
                               swagger_js_url=f"{ASSET_PREFIX}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSET_PREFIX}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSET_PREFIX}/favicon.png")
    return _secured(page)


def _secured(page: Response) -> Response:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


@router.get(ASSET_PREFIX + "/{name}")
async def docs_asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, f"no documentation asset {name!r}; there are {', '.join(sorted(ASSETS))}")
    return FileResponse(ASSET_DIR / name, media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
